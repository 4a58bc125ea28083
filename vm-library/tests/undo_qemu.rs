//! Undo disks checked with `qemu-img compare`: after keep, commit and discard the VM's disk is
//! exactly what it should be, for VHD and qcow2 disks.

use std::path::{Path, PathBuf};
use std::process::Command;
use vm_library::undo::{disks_to_open, finish, UndoAction};
use vm_library::VmConfig;

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn identical(a: &Path, b: &Path) -> bool {
    let out = Command::new("qemu-img")
        .arg("compare")
        .arg(a)
        .arg(b)
        .output()
        .expect("qemu-img (scripts/fetch-assets.sh installs qemu-utils)");
    out.status.success()
}

fn raw_copy(from: &Path, to: &Path) {
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn write(path: &Path, offset: u64, byte: u8) {
    let mut img = disk::open(path, &disk::OpenOptions::read_write()).unwrap();
    img.write_at(offset, &vec![byte; 64 << 10]).unwrap();
    img.flush().unwrap();
}

#[test]
fn keep_commit_and_discard_leave_the_disk_as_expected() {
    for (format, file) in [
        (disk::Format::VhdDynamic, "disk.vhd"),
        (disk::Format::Qcow2, "disk.qcow2"),
    ] {
        let dir = scratch(&format!("undo-{}", format.name()));
        let base = dir.join(file);
        disk::create(&base, &disk::CreateOptions::new(format, 16 << 20)).unwrap();
        write(&base, 1 << 20, 0x11);
        let original = dir.join("original.raw");
        raw_copy(&base, &original);

        let mut config = VmConfig::new("undo", media_detect::OsFamily::Other);
        config.disks = vec![PathBuf::from(file)];
        config.undo_disks = true;

        // A session writes; keep: the disk is unchanged, the layer holds the change.
        let layer = disks_to_open(&dir, &config).unwrap().remove(0);
        write(&layer, 4 << 20, 0x22);
        // QEMU reads differencing VHDs without their parent, so the expected contents come from
        // the original plus the write.
        let changed = dir.join("changed.raw");
        std::fs::copy(&original, &changed).unwrap();
        write(&changed, 4 << 20, 0x22);
        if !format.is_vhd() {
            let through_qemu = dir.join("layer.raw");
            raw_copy(&layer, &through_qemu);
            assert!(
                identical(&through_qemu, &changed),
                "{file}: the layer reads wrong"
            );
        }
        finish(&dir, &config, UndoAction::Keep, &mut |_, _| {}).unwrap();
        assert!(identical(&base, &original), "{file}: keep changed the disk");
        if !format.is_vhd() {
            assert!(identical(&layer, &changed), "{file}: keep lost the change");
        }

        // Discard: the disk is as before the session, the layer is gone.
        finish(&dir, &config, UndoAction::Discard, &mut |_, _| {}).unwrap();
        assert!(!layer.exists());
        assert!(
            identical(&base, &original),
            "{file}: discard changed the disk"
        );

        // Another session, then commit: the disk now equals what the session saw.
        let layer = disks_to_open(&dir, &config).unwrap().remove(0);
        write(&layer, 4 << 20, 0x22);
        finish(&dir, &config, UndoAction::Commit, &mut |_, _| {}).unwrap();
        assert!(!layer.exists());
        assert!(
            identical(&base, &changed),
            "{file}: commit did not write the change"
        );
        let check = Command::new("qemu-img")
            .arg("check")
            .arg(&base)
            .output()
            .unwrap();
        assert!(
            check.status.success() || format.is_vhd(),
            "{file}: {check:?}"
        );
    }
}
