//! Undo disks, as Virtual PC has them: while a VM has `undo_disks` set, its hard disks are not
//! written; every change goes to an undo layer (a copy-on-write overlay per disk in the VM
//! folder's `undo/`). When the VM is turned off the user keeps the changes for the next session,
//! commits them into the hard disks, or discards them.

use crate::{LibraryError, VmConfig};
use std::path::{Path, PathBuf};

/// Folder in a VM folder that holds the undo layers.
pub const UNDO_DIR: &str = "undo";

/// What to do with the undo layers when the VM is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UndoAction {
    /// Leave them: the next start continues with the changes.
    Keep,
    /// Write the changes into the hard disks and remove the layers.
    Commit,
    /// Throw the changes away.
    Discard,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LibraryError + '_ {
    move |source| LibraryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The undo layer of disk `index` whose image is `disk`: same container family (qcow2 over
/// qcow2 and raw, a differencing VHD over VHD).
fn layer_path(vm_dir: &Path, index: usize, disk: &Path) -> Result<PathBuf, LibraryError> {
    let format = disk::info(disk)?.format;
    let ext = if format.is_vhd() { "vhd" } else { "qcow2" };
    Ok(vm_dir.join(UNDO_DIR).join(format!("disk{index}.{ext}")))
}

fn overlay_format(disk: &Path) -> Result<disk::Format, LibraryError> {
    Ok(if disk::info(disk)?.format.is_vhd() {
        disk::Format::VhdDifferencing
    } else {
        disk::Format::Qcow2
    })
}

/// The undo layers that exist for `config`'s disks, by disk index.
pub fn existing_layers(vm_dir: &Path, config: &VmConfig) -> Vec<(usize, PathBuf)> {
    config
        .disks
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let disk = config.resolve(vm_dir, d);
            let layer = layer_path(vm_dir, i, &disk).ok()?;
            layer.is_file().then_some((i, layer))
        })
        .collect()
}

/// True when the VM has undo layers with changes of an earlier session.
pub fn has_pending_changes(vm_dir: &Path, config: &VmConfig) -> bool {
    !existing_layers(vm_dir, config).is_empty()
}

/// The images the VM's hard disks should be opened from: with undo disks on, each disk's undo
/// layer (created on top of the disk when missing); otherwise the disks themselves.
pub fn disks_to_open(vm_dir: &Path, config: &VmConfig) -> Result<Vec<PathBuf>, LibraryError> {
    let disks: Vec<PathBuf> = config
        .disks
        .iter()
        .map(|d| config.resolve(vm_dir, d))
        .collect();
    if !config.undo_disks {
        return Ok(disks);
    }
    let folder = vm_dir.join(UNDO_DIR);
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let mut out = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        let layer = layer_path(vm_dir, i, disk)?;
        if !layer.is_file() {
            disk::create_overlay(disk, &layer, overlay_format(disk)?)?;
        }
        out.push(layer);
    }
    Ok(out)
}

/// Applies `action` to the VM's undo layers (the VM must be off). Commit merges each layer into
/// its disk first and removes the layer only once that succeeded, so a failure loses nothing.
/// `progress` gets (bytes done, total bytes) per disk during a commit.
pub fn finish(
    vm_dir: &Path,
    config: &VmConfig,
    action: UndoAction,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), LibraryError> {
    for (_, layer) in existing_layers(vm_dir, config) {
        match action {
            UndoAction::Keep => {}
            UndoAction::Commit => {
                disk::commit(&layer, progress)?;
                std::fs::remove_file(&layer).map_err(io(&layer))?;
            }
            UndoAction::Discard => std::fs::remove_file(&layer).map_err(io(&layer))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_detect::OsFamily;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("terrarium-undo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write_through(path: &Path, offset: u64, byte: u8) {
        let mut img = disk::open(path, &disk::OpenOptions::read_write()).unwrap();
        img.write_at(offset, &[byte; 4096]).unwrap();
        img.flush().unwrap();
    }

    fn read(path: &Path, offset: u64) -> u8 {
        let mut img = disk::open(path, &disk::OpenOptions::read_only()).unwrap();
        let mut b = [0u8; 1];
        img.read_at(offset, &mut b).unwrap();
        b[0]
    }

    #[test]
    fn layers_take_the_writes_and_keep_commit_discard_do_what_they_say() {
        for format in [
            disk::Format::VhdDynamic,
            disk::Format::Qcow2,
            disk::Format::Raw,
        ] {
            let dir = scratch(format.name());
            let base = dir.join("disk.img");
            disk::create(&base, &disk::CreateOptions::new(format, 4 << 20)).unwrap();
            write_through(&base, 0, 1);
            let mut config = VmConfig::new("u", OsFamily::Other);
            config.disks = vec![PathBuf::from("disk.img")];
            config.undo_disks = true;

            let open = disks_to_open(&dir, &config).unwrap();
            assert_ne!(open[0], base);
            write_through(&open[0], 0, 2);
            assert_eq!(read(&base, 0), 1, "{format}: the disk itself is untouched");
            assert_eq!(read(&open[0], 0), 2);

            finish(&dir, &config, UndoAction::Keep, &mut |_, _| {}).unwrap();
            assert!(has_pending_changes(&dir, &config));
            assert_eq!(
                disks_to_open(&dir, &config).unwrap(),
                open,
                "kept layers are reused"
            );
            assert_eq!(read(&open[0], 0), 2);

            finish(&dir, &config, UndoAction::Discard, &mut |_, _| {}).unwrap();
            assert!(!has_pending_changes(&dir, &config));
            assert_eq!(
                read(&base, 0),
                1,
                "{format}: discard leaves the disk as it was"
            );

            let open = disks_to_open(&dir, &config).unwrap();
            write_through(&open[0], 8192, 3);
            let mut calls = 0;
            finish(&dir, &config, UndoAction::Commit, &mut |_, _| calls += 1).unwrap();
            assert!(calls > 0);
            assert!(!has_pending_changes(&dir, &config));
            assert_eq!(read(&base, 8192), 3, "{format}: commit wrote the change");
            assert_eq!(read(&base, 0), 1);

            config.undo_disks = false;
            assert_eq!(disks_to_open(&dir, &config).unwrap(), vec![base]);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
