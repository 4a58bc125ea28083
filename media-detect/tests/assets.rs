//! Detection on the real test images built by `scripts/fetch-assets.sh`, and on qcow2 and VHD
//! conversions of the hard disk image made with `qemu-img`.

use std::path::{Path, PathBuf};
use std::process::Command;

use media_detect::{probe, probe_bytes, ImageFormat, MediaInfo, MediaKind, OsFamily, ProbeError};

fn assets() -> PathBuf {
    std::env::var_os("TERRARIUM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.cache/assets")))
}

fn asset(name: &str) -> PathBuf {
    let p = assets().join(name);
    assert!(
        p.is_file(),
        "test asset {} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("media-detect")
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn check_linux_hdd(m: &MediaInfo, format: ImageFormat) {
    assert_eq!(m.kind, MediaKind::HardDisk, "{m:#?}");
    assert_eq!(m.format, format, "{m:#?}");
    assert_eq!(m.size, 32 << 20);
    assert_eq!(m.os, OsFamily::Linux, "{m:#?}");
    assert_eq!(m.os_name.as_deref(), Some("Linux"));
    assert_eq!(m.volume_label.as_deref(), Some("TERRARIUM"));
    assert!(m.bootable, "{m:#?}");
    assert!(
        m.evidence
            .iter()
            .any(|e| e == "partition 1 type 0x06 (FAT16), active"),
        "{:?}",
        m.evidence
    );
    assert!(
        m.evidence
            .iter()
            .any(|e| e == "syslinux.cfg boots /vmlinuz"),
        "{:?}",
        m.evidence
    );
}

#[test]
fn linux_iso_is_a_bootable_linux_cd() {
    let m = probe(&asset("linux.iso")).unwrap();
    assert_eq!(m.kind, MediaKind::Cdrom, "{m:#?}");
    assert_eq!(m.format, ImageFormat::Iso);
    assert_eq!(m.os, OsFamily::Linux, "{m:#?}");
    assert_eq!(m.os_name.as_deref(), Some("Linux"));
    assert_eq!(m.volume_label.as_deref(), Some("TERRARIUM_TEST"));
    assert!(m.bootable, "{m:#?}");
    assert!(
        m.evidence
            .iter()
            .any(|e| e == "isolinux/isolinux.cfg boots /boot/vmlinuz"),
        "{:?}",
        m.evidence
    );
    assert!(
        m.evidence
            .iter()
            .any(|e| e.contains("/isolinux/isolinux.bin")),
        "{:?}",
        m.evidence
    );
    assert_eq!(m.suggested_name, "Linux");
    // The same through the in-memory path.
    let bytes = std::fs::read(asset("linux.iso")).unwrap();
    assert_eq!(probe_bytes("linux.iso", &bytes).unwrap(), m);
}

#[test]
fn linux_hdd_is_a_linux_hard_disk() {
    let m = probe(&asset("linux-hdd.img")).unwrap();
    check_linux_hdd(&m, ImageFormat::Raw);
}

#[test]
fn memtest_floppy_is_a_memory_tester() {
    let m = probe(&asset("memtest-floppy.img")).unwrap();
    assert_eq!(m.kind, MediaKind::Floppy, "{m:#?}");
    assert_eq!(m.format, ImageFormat::Raw);
    assert_eq!(m.size, 1_474_560);
    assert_eq!(m.os, OsFamily::MemTest, "{m:#?}");
    assert_eq!(m.os_name.as_deref(), Some("memtest86+"));
    assert_eq!(m.volume_label.as_deref(), Some("MEMTEST"));
    assert!(m.bootable, "{m:#?}");
    assert_eq!(m.suggested_name, "memtest86+");
}

#[test]
fn qcow2_and_vhd_of_the_linux_hdd() {
    let dir = tmp_dir("containers");
    for (fmt, file, want) in [
        ("qcow2", "linux-hdd.qcow2", ImageFormat::Qcow2),
        ("vpc", "linux-hdd.vhd", ImageFormat::Vhd),
    ] {
        let out = dir.join(file);
        let _ = std::fs::remove_file(&out);
        let st = Command::new("qemu-img")
            .args(["convert", "-O", fmt])
            .arg(asset("linux-hdd.img"))
            .arg(&out)
            .status()
            .expect("qemu-img is needed for this test (apt-get install qemu-utils)");
        assert!(st.success(), "qemu-img convert -O {fmt} failed");
        let m = probe(&out).unwrap();
        // qemu-img rounds VHD sizes to its CHS geometry; the content is what matters.
        let m = MediaInfo {
            size: 32 << 20,
            ..m
        };
        check_linux_hdd(&m, want);
        let bytes = std::fs::read(&out).unwrap();
        let mb = probe_bytes(file, &bytes).unwrap();
        assert_eq!(mb.format, want);
        assert_eq!(mb.os, OsFamily::Linux);
    }
}

#[test]
fn files_that_are_not_images() {
    let dir = tmp_dir("not-images");
    let txt = dir.join("notes.txt");
    std::fs::write(&txt, "remember the milk\n").unwrap();
    let e = probe(&txt).unwrap_err();
    assert!(matches!(e, ProbeError::NotAnImage { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{} is not a disk image: drop an ISO, VHD, qcow2, raw disk or floppy image",
            txt.display()
        )
    );
    let empty = dir.join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(probe(&empty), Err(ProbeError::NotAnImage { .. })));
    // Firmware and kernels are not disk images either.
    for f in ["bios.bin", "vmlinuz", "initramfs.cpio.gz"] {
        let r = probe(&asset(f));
        assert!(
            matches!(r, Err(ProbeError::NotAnImage { .. })),
            "{f}: {r:?}"
        );
    }
    let missing = dir.join("gone.iso");
    let e = probe(&missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot read {}: No such file or directory",
            missing.display()
        )
    );
}

#[test]
fn empty_qcow2_is_a_blank_hard_disk() {
    let dir = tmp_dir("blank");
    let out = dir.join("blank.qcow2");
    let _ = std::fs::remove_file(&out);
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&out)
        .arg("64M")
        .status()
        .expect("qemu-img is needed for this test");
    assert!(st.success());
    let m = probe(&out).unwrap();
    assert_eq!(m.kind, MediaKind::HardDisk);
    assert_eq!(m.format, ImageFormat::Qcow2);
    assert_eq!(m.os, OsFamily::Other);
    assert!(!m.bootable);
    assert_eq!(m.suggested_name, "blank");
}
