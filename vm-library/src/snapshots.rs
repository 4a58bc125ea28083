//! The snapshot tree of a VM: take, revert, delete and rename, on differencing layers.
//!
//! Each hard disk is a chain of layers. Taking a snapshot freezes every disk's current layer
//! (it becomes the snapshot's) and puts a new, empty copy-on-write layer on top that the VM
//! writes from then on: a qcow2 overlay over qcow2 and raw layers, a differencing VHD over VHD.
//! Reverting puts a fresh layer on top of the snapshot's frozen ones (the changes since are
//! dropped). A live snapshot also holds the machine's state (`state.bin`, `ram.bin`) in its
//! folder: the VM pauses only while that state is captured, and the snapshot becomes live once
//! the state is on disk (see [`begin_take`]); reverting to it resumes the VM there.
//!
//! Everything lives in the VM folder's `snapshots/`: `snapshots.toml` (the tree, written
//! atomically, with a CRC-32 line at the end), one folder per snapshot, and the layers. A take
//! writes the snapshot folder and layers first, then `vm.toml`, then the tree; a take cut short
//! leaves a folder the tree does not list, which is ignored, and the earlier snapshots intact.

use crate::{write_atomic, LibraryError, VmConfig, CONFIG_FILE};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Folder in a VM folder that holds its snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// The tree's file in [`SNAPSHOTS_DIR`].
pub const TREE_FILE: &str = "snapshots.toml";
const TREE_VERSION: u32 = 1;
const CHECKSUM_PREFIX: &str = "# crc32 ";

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Unique within the VM, never reused.
    pub id: u32,
    /// The name the user gave it.
    pub name: String,
    /// The snapshot the VM was in when this one was taken.
    pub parent: Option<u32>,
    /// When it was taken (seconds since the Unix epoch).
    pub created: u64,
    /// It holds the machine's state (taken while running), not only the disks.
    pub live: bool,
    /// Each hard disk's frozen layer, relative to the VM folder where possible.
    pub disks: Vec<PathBuf>,
    /// A delete began merging its layers and did not finish: it can no longer be reverted to;
    /// deleting it again finishes the merge.
    #[serde(default)]
    pub deleting: bool,
    /// While a delete merges this snapshot into its child: the unique ids (hex) of the child's
    /// VHD layers, which the merged layers take over (empty for qcow2).
    #[serde(default)]
    pub merge_ids: Vec<String>,
}

/// A VM's snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTree {
    format_version: u32,
    /// The snapshot the VM's current state grew from.
    pub current: Option<u32>,
    next_id: u32,
    next_layer: u32,
    /// All snapshots, oldest first.
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
}

impl Default for SnapshotTree {
    fn default() -> Self {
        Self {
            format_version: TREE_VERSION,
            current: None,
            next_id: 1,
            next_layer: 1,
            snapshots: Vec::new(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LibraryError + '_ {
    move |source| LibraryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_error(path: &Path, message: impl Into<String>) -> LibraryError {
    LibraryError::Parse {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `p` relative to `vm_dir` when it lies inside it, else as it is.
fn relative(vm_dir: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(vm_dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}

fn save_config(vm_dir: &Path, config: &VmConfig) -> Result<(), LibraryError> {
    config.validate()?;
    let path = vm_dir.join(CONFIG_FILE);
    write_atomic(&path, config.to_toml()?.as_bytes()).map_err(io(&path))
}

impl SnapshotTree {
    /// The tree of the VM in `vm_dir` (empty when it has no snapshots).
    pub fn load(vm_dir: &Path) -> Result<Self, LibraryError> {
        let path = vm_dir.join(SNAPSHOTS_DIR).join(TREE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(&path)(e)),
        };
        let Some(at) = text.rfind(CHECKSUM_PREFIX) else {
            return Err(parse_error(&path, "it has no checksum line"));
        };
        let (body, sum) = text.split_at(at);
        let sum = sum[CHECKSUM_PREFIX.len()..].trim();
        if u32::from_str_radix(sum, 16).ok() != Some(crc32fast::hash(body.as_bytes())) {
            return Err(parse_error(
                &path,
                "checksum mismatch (the file is damaged)",
            ));
        }
        let tree: Self =
            toml::from_str(body).map_err(|e| parse_error(&path, e.message().to_string()))?;
        if tree.format_version > TREE_VERSION {
            return Err(LibraryError::NewerFormat {
                path,
                found: tree.format_version,
            });
        }
        let known = |id: u32| tree.snapshots.iter().any(|s| s.id == id);
        for s in &tree.snapshots {
            if s.parent.is_some_and(|p| !known(p)) || s.id >= tree.next_id {
                return Err(parse_error(
                    &path,
                    format!("snapshot {} is inconsistent", s.id),
                ));
            }
        }
        if tree.current.is_some_and(|c| !known(c)) {
            return Err(parse_error(
                &path,
                "the current snapshot is not in the tree",
            ));
        }
        Ok(tree)
    }

    fn save(&self, vm_dir: &Path) -> Result<(), LibraryError> {
        let path = vm_dir.join(SNAPSHOTS_DIR).join(TREE_FILE);
        let body = toml::to_string_pretty(self)
            .map_err(|e| parse_error(&path, format!("cannot write: {e}")))?;
        let text = format!(
            "{body}{CHECKSUM_PREFIX}{:08x}\n",
            crc32fast::hash(body.as_bytes())
        );
        write_atomic(&path, text.as_bytes()).map_err(io(&path))
    }

    /// The snapshot `id`.
    pub fn get(&self, id: u32) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.id == id)
    }

    /// The snapshots taken from `id`'s state (`None`: the roots).
    pub fn children(&self, id: Option<u32>) -> Vec<&Snapshot> {
        self.snapshots.iter().filter(|s| s.parent == id).collect()
    }

    fn get_or_err(&self, vm_dir: &Path, id: u32) -> Result<&Snapshot, LibraryError> {
        self.get(id).ok_or_else(|| LibraryError::Invalid {
            field: "snapshot",
            message: format!("{} has no snapshot {id}", vm_dir.display()),
        })
    }

    /// True when some snapshot freezes `layer` (a path as stored in the config).
    fn is_frozen(&self, layer: &Path) -> bool {
        self.snapshots
            .iter()
            .any(|s| s.disks.iter().any(|d| d == layer))
    }
}

/// The folder of snapshot `id` (its machine state, if live).
pub fn snapshot_dir(vm_dir: &Path, id: u32) -> PathBuf {
    vm_dir.join(SNAPSHOTS_DIR).join(id.to_string())
}

/// Creates a new empty layer over each of `layers` (resolved paths); returns their paths.
fn new_layers(
    vm_dir: &Path,
    tree: &mut SnapshotTree,
    layers: &[PathBuf],
) -> Result<Vec<PathBuf>, LibraryError> {
    let folder = vm_dir.join(SNAPSHOTS_DIR);
    let mut made: Vec<PathBuf> = Vec::new();
    let n = tree.next_layer;
    tree.next_layer += 1;
    for (i, base) in layers.iter().enumerate() {
        let vhd = disk::info(base).map(|i| i.format.is_vhd());
        let result = vhd.map_err(LibraryError::from).and_then(|vhd| {
            let (format, ext) = if vhd {
                (disk::Format::VhdDifferencing, "vhd")
            } else {
                (disk::Format::Qcow2, "qcow2")
            };
            let path = folder.join(format!("layer-{n}-disk{i}.{ext}"));
            disk::create_overlay(base, &path, format)?;
            Ok(path)
        });
        match result {
            Ok(p) => made.push(p),
            Err(e) => {
                for p in &made {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// Disk space a take needs: the machine state for a live one (`ram_bytes` of RAM plus a few
/// MiB of device state), and the new layers' headers.
pub fn space_for_take(config: &VmConfig, ram_bytes: Option<u64>) -> u64 {
    let layers = config.disks.len() as u64 * (1 << 20);
    ram_bytes.map_or(0, |r| r + (32 << 20)) + layers
}

/// Completes a live snapshot's machine state once the VM runs again (waits for its RAM to be
/// written); an `Err` is shown to the user.
pub type StateCompletion = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Captures a live snapshot's machine state: called, with the VM running, with the snapshot's
/// folder and the new disk layers. It pauses the VM, starts saving the machine state into the
/// folder, switches the running disks to the layers, resumes the VM, and returns what completes
/// the save. An `Err` is shown to the user.
pub type LiveSave<'a> = &'a mut dyn FnMut(&Path, &[PathBuf]) -> Result<StateCompletion, String>;

/// A snapshot taken whose machine state may still be being written: the tree lists it (as a
/// disk-only snapshot) and the VM writes to its new layers; [`PendingTake::complete`] makes
/// it live once the state is on disk.
#[must_use = "a live snapshot stays disk-only until it is completed"]
pub struct PendingTake {
    vm_dir: PathBuf,
    snapshot: Snapshot,
    completion: Option<StateCompletion>,
}

impl std::fmt::Debug for PendingTake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingTake")
            .field("snapshot", &self.snapshot)
            .field("live", &self.completion.is_some())
            .finish()
    }
}

impl PendingTake {
    /// The snapshot as the tree lists it now.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Waits for the machine state (if any) and marks the snapshot live. When the state cannot
    /// be written (a full disk), the snapshot stays in the tree with its disks only, its
    /// folder holds no partial state, and the error says so; the VM is unaffected.
    pub fn complete(self) -> Result<Snapshot, LibraryError> {
        let Some(completion) = self.completion else {
            return Ok(self.snapshot);
        };
        let dir = snapshot_dir(&self.vm_dir, self.snapshot.id);
        if let Err(message) = completion() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            return Err(LibraryError::Invalid {
                field: "snapshot",
                message: format!(
                    "\"{}\" keeps the disks only: its machine state could not be written \
                     ({message})",
                    self.snapshot.name
                ),
            });
        }
        let mut tree = SnapshotTree::load(&self.vm_dir)?;
        let snapshot = match tree.snapshots.iter_mut().find(|s| s.id == self.snapshot.id) {
            Some(s) => {
                s.live = true;
                s.clone()
            }
            None => {
                return Err(LibraryError::Invalid {
                    field: "snapshot",
                    message: format!(
                        "\"{}\" was removed while its state was being written",
                        self.snapshot.name
                    ),
                })
            }
        };
        tree.save(&self.vm_dir)?;
        Ok(snapshot)
    }
}

/// Takes snapshot `name` of the VM in `vm_dir` and waits until it is complete: see
/// [`begin_take`] and [`PendingTake::complete`].
pub fn take(
    vm_dir: &Path,
    name: &str,
    live: Option<LiveSave<'_>>,
) -> Result<Snapshot, LibraryError> {
    begin_take(vm_dir, name, live)?.complete()
}

/// Takes snapshot `name` of the VM in `vm_dir`. For a live snapshot `live` is called (see
/// [`LiveSave`]); when it fails, nothing of the snapshot is kept and the VM goes on as before.
/// Once this returns the VM writes to the new layers and the tree lists the snapshot; a live
/// snapshot becomes revertible to its machine state when [`PendingTake::complete`] returns.
///
/// Order on disk: the snapshot folder and the new layers, the switch of the running disks,
/// `vm.toml`, the tree. A process that dies before the tree is written leaves the snapshot
/// unlisted (its files are ignored); one that dies while the state is written leaves a
/// disk-only snapshot whose disks are as they were at the instant it was taken.
pub fn begin_take(
    vm_dir: &Path,
    name: &str,
    live: Option<LiveSave<'_>>,
) -> Result<PendingTake, LibraryError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(LibraryError::Invalid {
            field: "snapshot name",
            message: "give the snapshot a name".into(),
        });
    }
    let mut config = crate::Library::load(vm_dir)?;
    let mut tree = SnapshotTree::load(vm_dir)?;
    let id = tree.next_id;
    let dir = snapshot_dir(vm_dir, id);
    // A folder left by a take that was cut short is not in the tree: clear it.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let active: Vec<PathBuf> = config
        .disks
        .iter()
        .map(|d| config.resolve(vm_dir, d))
        .collect();
    let fresh = match new_layers(vm_dir, &mut tree, &active) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let completion = match live {
        Some(save) => match save(&dir, &fresh) {
            Ok(c) => Some(c),
            Err(message) => {
                for p in &fresh {
                    let _ = std::fs::remove_file(p);
                }
                let _ = std::fs::remove_dir_all(&dir);
                return Err(LibraryError::Invalid {
                    field: "snapshot",
                    message,
                });
            }
        },
        None => None,
    };
    let frozen = std::mem::replace(
        &mut config.disks,
        fresh.iter().map(|p| relative(vm_dir, p)).collect(),
    );
    save_config(vm_dir, &config)?;
    let snapshot = Snapshot {
        id,
        name: name.to_string(),
        parent: tree.current,
        created: now(),
        // Live once its state is written (PendingTake::complete).
        live: false,
        disks: frozen,
        deleting: false,
        merge_ids: Vec::new(),
    };
    tree.snapshots.push(snapshot.clone());
    tree.current = Some(id);
    tree.next_id += 1;
    tree.save(vm_dir)?;
    Ok(PendingTake {
        vm_dir: vm_dir.to_path_buf(),
        snapshot,
        completion,
    })
}

/// Makes the VM's disks what they were when snapshot `id` was taken (the VM must be off; the
/// changes since are dropped). Returns the snapshot's folder when it is live: the caller starts
/// the VM restored from the machine state in it.
pub fn revert(vm_dir: &Path, id: u32) -> Result<Option<PathBuf>, LibraryError> {
    let mut config = crate::Library::load(vm_dir)?;
    let mut tree = SnapshotTree::load(vm_dir)?;
    let snapshot = tree.get_or_err(vm_dir, id)?.clone();
    if snapshot.deleting {
        return Err(LibraryError::Invalid {
            field: "snapshot",
            message: format!(
                "\"{}\" was being deleted when that was interrupted; delete it again to finish",
                snapshot.name
            ),
        });
    }
    let frozen: Vec<PathBuf> = snapshot
        .disks
        .iter()
        .map(|d| config.resolve(vm_dir, d))
        .collect();
    let fresh = new_layers(vm_dir, &mut tree, &frozen)?;
    let old = std::mem::replace(
        &mut config.disks,
        fresh.iter().map(|p| relative(vm_dir, p)).collect(),
    );
    save_config(vm_dir, &config)?;
    tree.current = Some(id);
    tree.save(vm_dir)?;
    remove_unused_layers(vm_dir, &tree, &old);
    Ok(snapshot.live.then(|| snapshot_dir(vm_dir, id)))
}

/// Deletes layers in `snapshots/` that no snapshot freezes (never the user's own images).
fn remove_unused_layers(vm_dir: &Path, tree: &SnapshotTree, layers: &[PathBuf]) {
    for layer in layers {
        let inside = layer.starts_with(SNAPSHOTS_DIR) && layer.components().count() == 2;
        if inside && !tree.is_frozen(layer) {
            let _ = std::fs::remove_file(vm_dir.join(layer));
        }
    }
}

/// Disk space a delete needs at most: merging the current layers into the snapshot's (only
/// when it is the current snapshot) can grow those by what the current layers hold.
pub fn space_for_delete(vm_dir: &Path, id: u32) -> Result<u64, LibraryError> {
    let config = crate::Library::load(vm_dir)?;
    let tree = SnapshotTree::load(vm_dir)?;
    tree.get_or_err(vm_dir, id)?;
    if tree.current != Some(id) {
        return Ok(0);
    }
    Ok(config
        .disks
        .iter()
        .filter_map(|d| std::fs::metadata(config.resolve(vm_dir, d)).ok())
        .map(|m| m.len())
        .sum())
}

/// Deletes snapshot `id` without losing data (the VM must be off, or at least not running from
/// it). When the VM's current state grew from it, the current layers are merged into its frozen
/// ones; when one snapshot was taken from it, that snapshot's layers are merged into its
/// (`progress` gets bytes done and total). A snapshot that two states grow from (two child
/// snapshots, or a child and the current state) cannot be merged into both and is refused.
pub fn delete(
    vm_dir: &Path,
    id: u32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), LibraryError> {
    let mut config = crate::Library::load(vm_dir)?;
    let mut tree = SnapshotTree::load(vm_dir)?;
    let snapshot = tree.get_or_err(vm_dir, id)?.clone();
    let children: Vec<Snapshot> = tree.children(Some(id)).into_iter().cloned().collect();
    let dependents = children.len() + usize::from(tree.current == Some(id));
    if dependents > 1 {
        return Err(LibraryError::Invalid {
            field: "snapshot",
            message: format!(
                "\"{}\" has {} states growing from it (snapshots taken from it, or the VM's \
                 current state); delete or revert away from all but one first",
                snapshot.name, dependents
            ),
        });
    }
    // Merging changes the snapshot's own layers: from here on it cannot be reverted to. The
    // child's VHD ids are recorded first, so an interrupted merge can be finished.
    let mut snapshot = snapshot;
    if !snapshot.deleting {
        snapshot.deleting = true;
        if let [child] = children.as_slice() {
            snapshot.merge_ids = child
                .disks
                .iter()
                .map(|d| {
                    let info = disk::info(&config.resolve(vm_dir, d))?;
                    Ok(info.unique_id.map(hex).unwrap_or_default())
                })
                .collect::<Result<_, LibraryError>>()?;
        }
        for s in &mut tree.snapshots {
            if s.id == id {
                *s = snapshot.clone();
            }
        }
        tree.save(vm_dir)?;
    }
    if let [child] = children.as_slice() {
        merge_into_child(vm_dir, &config, &snapshot, child, progress)?;
        for s in &mut tree.snapshots {
            if s.parent == Some(id) {
                s.parent = snapshot.parent;
            }
        }
        tree.snapshots.retain(|s| s.id != id);
        tree.save(vm_dir)?;
    } else if tree.current == Some(id) {
        // The current layers sit on the snapshot's: merge them down, then write to those.
        let current: Vec<PathBuf> = config.disks.clone();
        for d in &current {
            disk::commit(&config.resolve(vm_dir, d), progress)?;
        }
        config.disks = snapshot.disks.clone();
        save_config(vm_dir, &config)?;
        tree.snapshots.retain(|s| s.id != id);
        tree.current = snapshot.parent;
        tree.save(vm_dir)?;
        remove_unused_layers(vm_dir, &tree, &current);
    } else {
        // Nothing grows from its layers any more.
        tree.snapshots.retain(|s| s.id != id);
        tree.save(vm_dir)?;
        remove_unused_layers(vm_dir, &tree, &snapshot.disks);
    }
    let _ = std::fs::remove_dir_all(snapshot_dir(vm_dir, id));
    Ok(())
}

fn hex(id: [u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if s.len() != 32 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Merges `snapshot`'s frozen layers into those of `child`, its only dependent: the child's
/// layer is committed into the snapshot's, which then takes the child's place (renamed over
/// it, so every layer built on the child's still finds it); a snapshot layer that is one of the
/// user's own images stays where it is and the child's layer is replaced by an empty layer over
/// it. Differencing VHDs built on the child's layer check their parent's unique id, so the
/// replacement gets the child's. Every step can be repeated, so an interrupted merge finishes
/// when the delete is run again.
fn merge_into_child(
    vm_dir: &Path,
    config: &VmConfig,
    snapshot: &Snapshot,
    child: &Snapshot,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), LibraryError> {
    for (i, (own, theirs)) in snapshot.disks.iter().zip(&child.disks).enumerate() {
        let (own_path, their_path) = (config.resolve(vm_dir, own), config.resolve(vm_dir, theirs));
        let child_id = snapshot.merge_ids.get(i).and_then(|h| unhex(h));
        let inside = own.starts_with(SNAPSHOTS_DIR) && own.components().count() == 2;
        if inside {
            // Gone: an earlier run already renamed it over the child's layer.
            if own_path.exists() {
                disk::commit(&their_path, progress)?;
                std::fs::rename(&own_path, &their_path).map_err(io(&their_path))?;
            }
        } else {
            disk::commit(&their_path, progress)?;
            let vhd = disk::info(&own_path)?.format.is_vhd();
            let (format, ext) = if vhd {
                (disk::Format::VhdDifferencing, "vhd")
            } else {
                (disk::Format::Qcow2, "qcow2")
            };
            let fresh = their_path.with_extension(format!("merged.{ext}"));
            let _ = std::fs::remove_file(&fresh);
            disk::create_overlay(&own_path, &fresh, format)?;
            if let Some(id) = child_id {
                disk::vhd::set_unique_id(&fresh, id)?;
            }
            std::fs::rename(&fresh, &their_path).map_err(io(&their_path))?;
        }
        if let (true, Some(id)) = (inside, child_id) {
            disk::vhd::set_unique_id(&their_path, id)?;
        }
    }
    Ok(())
}

/// Renames snapshot `id`.
pub fn rename(vm_dir: &Path, id: u32, name: &str) -> Result<(), LibraryError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(LibraryError::Invalid {
            field: "snapshot name",
            message: "give the snapshot a name".into(),
        });
    }
    let mut tree = SnapshotTree::load(vm_dir)?;
    tree.get_or_err(vm_dir, id)?;
    for s in &mut tree.snapshots {
        if s.id == id {
            s.name = name.to_string();
        }
    }
    tree.save(vm_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_detect::OsFamily;

    fn vm(name: &str, format: disk::Format) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("terrarium-snap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = if format.is_vhd() {
            "disk.vhd"
        } else {
            "disk.qcow2"
        };
        disk::create(&dir.join(file), &disk::CreateOptions::new(format, 4 << 20)).unwrap();
        let mut c = VmConfig::new(name, OsFamily::Other);
        c.disks = vec![PathBuf::from(file)];
        save_config(&dir, &c).unwrap();
        dir
    }

    fn write(vm_dir: &Path, byte: u8) {
        let c = crate::Library::load(vm_dir).unwrap();
        let p = c.resolve(vm_dir, &c.disks[0]);
        let mut img = disk::open(&p, &disk::OpenOptions::read_write()).unwrap();
        img.write_at(0, &[byte; 512]).unwrap();
        img.flush().unwrap();
    }

    fn read(vm_dir: &Path) -> u8 {
        let c = crate::Library::load(vm_dir).unwrap();
        let p = c.resolve(vm_dir, &c.disks[0]);
        let mut img = disk::open(&p, &disk::OpenOptions::read_only()).unwrap();
        let mut b = [0u8; 1];
        img.read_at(0, &mut b).unwrap();
        b[0]
    }

    #[test]
    fn take_revert_delete_keep_every_state() {
        for format in [disk::Format::VhdDynamic, disk::Format::Qcow2] {
            let dir = vm(format.name(), format);
            write(&dir, 1);
            let a = take(&dir, "one", None).unwrap();
            write(&dir, 2);
            let b = take(&dir, "two", None).unwrap();
            assert_eq!(b.parent, Some(a.id));
            write(&dir, 3);

            revert(&dir, a.id).unwrap();
            assert_eq!(read(&dir), 1, "{format}");
            write(&dir, 4);
            revert(&dir, b.id).unwrap();
            assert_eq!(read(&dir), 2, "{format}");

            // Deleting the current leaf merges the current state down; nothing is lost.
            write(&dir, 5);
            let mut calls = 0;
            delete(&dir, b.id, &mut |_, _| calls += 1).unwrap();
            assert!(calls > 0);
            assert_eq!(read(&dir), 5, "{format}");
            let tree = SnapshotTree::load(&dir).unwrap();
            assert_eq!(tree.current, Some(a.id));
            assert_eq!(tree.snapshots.len(), 1);
            revert(&dir, a.id).unwrap();
            assert_eq!(read(&dir), 1, "{format}");

            // A snapshot two states grow from is refused; rename works.
            let c = take(&dir, "three", None).unwrap();
            revert(&dir, a.id).unwrap();
            assert!(delete(&dir, a.id, &mut |_, _| {}).is_err());
            revert(&dir, c.id).unwrap();
            rename(&dir, c.id, "renamed").unwrap();
            assert_eq!(
                SnapshotTree::load(&dir).unwrap().get(c.id).unwrap().name,
                "renamed"
            );
            delete(&dir, c.id, &mut |_, _| {}).unwrap();
            delete(&dir, a.id, &mut |_, _| {}).unwrap();
            assert!(SnapshotTree::load(&dir).unwrap().snapshots.is_empty());
            assert_eq!(read(&dir), 1, "{format}");
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn deleting_a_snapshot_with_one_child_merges_it_into_the_child() {
        for format in [disk::Format::VhdDynamic, disk::Format::Qcow2] {
            let dir = vm(&format!("chain-{}", format.name()), format);
            write(&dir, 1);
            let root = take(&dir, "root", None).unwrap();
            write(&dir, 2);
            let middle = take(&dir, "middle", None).unwrap();
            write(&dir, 3);
            let leaf = take(&dir, "leaf", None).unwrap();
            write(&dir, 4);

            // The middle snapshot (its layer in snapshots/) and then the root (the user's disk).
            delete(&dir, middle.id, &mut |_, _| {}).unwrap();
            let tree = SnapshotTree::load(&dir).unwrap();
            assert_eq!(tree.get(leaf.id).unwrap().parent, Some(root.id));
            assert_eq!(read(&dir), 4, "{format}: the current state is kept");
            revert(&dir, leaf.id).unwrap();
            assert_eq!(read(&dir), 3, "{format}");
            revert(&dir, root.id).unwrap();
            assert_eq!(read(&dir), 1, "{format}");
            revert(&dir, leaf.id).unwrap();
            delete(&dir, root.id, &mut |_, _| {}).unwrap();
            assert_eq!(read(&dir), 3, "{format}");
            revert(&dir, leaf.id).unwrap();
            assert_eq!(read(&dir), 3, "{format}: the leaf still holds its state");
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn an_interrupted_merge_finishes_when_the_delete_runs_again() {
        let dir = vm("interrupted", disk::Format::VhdDynamic);
        write(&dir, 1);
        take(&dir, "root", None).unwrap();
        write(&dir, 2);
        let middle = take(&dir, "middle", None).unwrap();
        write(&dir, 3);
        let leaf = take(&dir, "leaf", None).unwrap();
        write(&dir, 4);

        // The first run got as far as renaming the merged layer, not as far as its id.
        let config = crate::Library::load(&dir).unwrap();
        let mut tree = SnapshotTree::load(&dir).unwrap();
        let own = config.resolve(&dir, &middle.disks[0]);
        let theirs = config.resolve(&dir, &leaf.disks[0]);
        let child_id = disk::info(&theirs).unwrap().unique_id.unwrap();
        for s in &mut tree.snapshots {
            if s.id == middle.id {
                s.deleting = true;
                s.merge_ids = vec![hex(child_id)];
            }
        }
        tree.save(&dir).unwrap();
        disk::commit(&theirs, &mut |_, _| {}).unwrap();
        std::fs::rename(&own, &theirs).unwrap();
        assert!(
            revert(&dir, middle.id).is_err(),
            "a half-deleted snapshot is not reverted to"
        );

        delete(&dir, middle.id, &mut |_, _| {}).unwrap();
        assert_eq!(read(&dir), 4);
        revert(&dir, leaf.id).unwrap();
        assert_eq!(read(&dir), 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_live_take_leaves_nothing_and_a_damaged_tree_is_refused() {
        let dir = vm("failing", disk::Format::Qcow2);
        let before = crate::Library::load(&dir).unwrap();
        let mut fail = |_: &Path, _: &[PathBuf]| -> Result<StateCompletion, String> {
            Err("disk full".into())
        };
        let e = take(&dir, "x", Some(&mut fail)).unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(crate::Library::load(&dir).unwrap(), before);
        assert!(SnapshotTree::load(&dir).unwrap().snapshots.is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(dir.join(SNAPSHOTS_DIR))
            .unwrap()
            .flatten()
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        take(&dir, "ok", None).unwrap();
        let tree = dir.join(SNAPSHOTS_DIR).join(TREE_FILE);
        let text = std::fs::read_to_string(&tree).unwrap();
        std::fs::write(&tree, text.replace("ok", "ko")).unwrap();
        let e = SnapshotTree::load(&dir).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains(TREE_FILE), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_live_take_is_disk_only_until_its_state_is_written() {
        let dir = vm("pending", disk::Format::Qcow2);
        let mut capture = |state: &Path, _: &[PathBuf]| -> Result<StateCompletion, String> {
            let state = state.to_path_buf();
            Ok(Box::new(move || {
                std::fs::write(state.join("state.bin"), b"state").map_err(|e| e.to_string())
            }))
        };
        let pending = begin_take(&dir, "live", Some(&mut capture)).unwrap();
        let listed = SnapshotTree::load(&dir).unwrap();
        assert!(
            !listed.snapshots[0].live,
            "live before its state is written"
        );
        let done = pending.complete().unwrap();
        assert!(done.live);
        assert!(SnapshotTree::load(&dir).unwrap().snapshots[0].live);

        // A state that cannot be written leaves a disk-only snapshot and an empty folder.
        let mut full = |state: &Path, _: &[PathBuf]| -> Result<StateCompletion, String> {
            let state = state.to_path_buf();
            Ok(Box::new(move || {
                std::fs::write(state.join("ram.bin"), b"partial").unwrap();
                Err("ram.bin: No space left on device".into())
            }))
        };
        let pending = begin_take(&dir, "full", Some(&mut full)).unwrap();
        let id = pending.snapshot().id;
        let e = pending.complete().unwrap_err().to_string();
        assert!(e.contains("disks only") && e.contains("No space"), "{e}");
        let tree = SnapshotTree::load(&dir).unwrap();
        let s = tree.snapshots.iter().find(|s| s.id == id).unwrap();
        assert!(!s.live);
        assert_eq!(
            std::fs::read_dir(snapshot_dir(&dir, id)).unwrap().count(),
            0
        );
        assert_eq!(revert(&dir, id).unwrap(), None, "reverts to its disks only");
        let _ = std::fs::remove_dir_all(dir);
    }
}
