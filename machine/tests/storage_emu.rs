//! Boot media and IDE disks on the software CPU, with real firmware and guests:
//! SeaBIOS boots the isolinux CD, the syslinux hard disk and the memtest86+ floppy; Linux's
//! `ata_piix` reads and writes an IDE disk in each image format and its floppy driver reads the
//! floppy; afterwards `qemu-img` finds the images consistent and holding what the guest wrote.

mod common;

use common::{assets, run_emu, scratch, seabios};
use machine::{BootDevice, LinuxBoot, MachineConfig, OffReason};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MARKER: &str = "TERRARIUM-BOOT-OK";
/// Generous: the interpreter needs minutes for the kernel's decompression on a slow machine.
const LINUX_LIMIT: Duration = Duration::from_secs(1200);
/// Bytes `terrarium.test=disks` writes at 1 MiB: "TERRARIUM-PATTERN\n" repeated.
const PATTERN_BYTES: usize = 4 << 20;
const MIB: usize = 1 << 20;

fn asset(name: &str) -> PathBuf {
    let p = assets().join(name);
    assert!(
        p.is_file(),
        "{} missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

fn firmware_config(boot: BootDevice) -> MachineConfig {
    let mut order = vec![BootDevice::Cdrom, BootDevice::Disk, BootDevice::Floppy];
    order.retain(|d| *d != boot);
    order.insert(0, boot);
    MachineConfig {
        memory_mib: 256,
        firmware: Some(seabios()),
        boot_order: order,
        ..MachineConfig::default()
    }
}

fn assert_linux_finished(off: Option<OffReason>, serial: &str) {
    assert!(serial.contains(MARKER), "no marker; serial:\n{serial}");
    assert_eq!(off, Some(OffReason::GuestPowerOff), "serial:\n{serial}");
}

#[test]
fn seabios_boots_isolinux_cd_into_linux() {
    let config = MachineConfig {
        cdrom: Some(asset("linux.iso")),
        ..firmware_config(BootDevice::Cdrom)
    };
    let r = run_emu(config, LINUX_LIMIT, |_| false);
    assert!(r.serial.contains("ISOLINUX"), "serial:\n{}", r.serial);
    // Every PCI function stays registered: with SeaBIOS's ACPI tables, GPE0 and the hotplug
    // ports must not report events (all-ones reads made Linux eject the devices).
    assert!(
        r.serial.contains(
            "PCI-DEVICES 0000:00:00.0 0000:00:01.0 0000:00:01.1 0000:00:01.3 0000:00:02.0 "
        ),
        "serial:\n{}",
        r.serial
    );
    // Linux's sr driver found the same CD and read its file system.
    assert!(
        r.serial.contains("CDROM-FILES initrd.gz vmlinuz"),
        "serial:\n{}",
        r.serial
    );
    assert_linux_finished(r.off, &r.serial);
}

#[test]
fn seabios_boots_syslinux_hard_disk_into_linux() {
    let dir = scratch("hdd-boot");
    let disk = dir.join("linux-hdd.img");
    std::fs::copy(asset("linux-hdd.img"), &disk).expect("copy disk");
    let config = MachineConfig {
        disks: vec![disk],
        ..firmware_config(BootDevice::Disk)
    };
    let r = run_emu(config, LINUX_LIMIT, |_| false);
    assert!(r.serial.contains("SYSLINUX"), "serial:\n{}", r.serial);
    assert_linux_finished(r.off, &r.serial);
}

#[test]
fn seabios_boots_memtest_floppy() {
    let config = MachineConfig {
        floppy: Some(asset("memtest-floppy.img")),
        ..firmware_config(BootDevice::Floppy)
    };
    let r = run_emu(config, Duration::from_secs(300), |s| {
        s.contains("[Address test, walking ones")
    });
    assert!(r.serial.contains("SYSLINUX"), "serial:\n{}", r.serial);
    assert!(r.serial.contains("Memtest86+"), "serial:\n{}", r.serial);
    assert!(
        r.serial.contains("[Address test, walking ones"),
        "memtest86+ did not start testing; serial:\n{}",
        r.serial
    );
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (package qemu-utils) must be installed: scripts/test.sh installs it");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn md5(data: &[u8], dir: &Path) -> String {
    let f = dir.join("md5-input");
    std::fs::write(&f, data).unwrap();
    let out = Command::new("md5sum").arg(&f).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn pattern() -> Vec<u8> {
    b"TERRARIUM-PATTERN\n"
        .iter()
        .copied()
        .cycle()
        .take(PATTERN_BYTES)
        .collect()
}

/// One disk of the format test: how it is made, what the guest sees first, what it holds after.
struct FormatDisk {
    path: PathBuf,
    format: &'static str,
    /// The first MiB as the guest should read it.
    first_mib: Vec<u8>,
}

#[test]
fn linux_reads_and_writes_an_ide_disk_in_each_format() {
    let dir = scratch("formats");
    let size = 64 * MIB;
    let path = |n: &str| dir.join(n);
    let seed: Vec<u8> = (0..MIB).map(|i| (i * 7 + i / 512) as u8).collect();

    // Made by Terrarium: a raw disk and a fixed VHD.
    let create = |name: &str, format| {
        disk::create(&path(name), &disk::CreateOptions::new(format, size as u64))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    create("terrarium.raw", disk::Format::Raw);
    create("terrarium.vhd", disk::Format::VhdFixed);
    // Made by qemu-img: a dynamic VHD, and a qcow2 overlay over a raw backing file that holds
    // the seed in its first MiB (reads fall through to it).
    let vhd_dyn = path("qemu-dynamic.vhd");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=dynamic",
        vhd_dyn.to_str().unwrap(),
        "64M",
    ]);
    let backing = path("backing.raw");
    let mut b = seed.clone();
    b.resize(size, 0);
    std::fs::write(&backing, &b).unwrap();
    let overlay = path("qemu-overlay.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        backing.to_str().unwrap(),
        overlay.to_str().unwrap(),
    ]);
    let zero = vec![0u8; MIB];
    let disks = [
        FormatDisk {
            path: path("terrarium.raw"),
            format: "raw",
            first_mib: zero.clone(),
        },
        FormatDisk {
            path: path("terrarium.vhd"),
            format: "vpc",
            first_mib: zero.clone(),
        },
        FormatDisk {
            path: vhd_dyn,
            format: "vpc",
            first_mib: zero.clone(),
        },
        FormatDisk {
            path: overlay,
            format: "qcow2",
            first_mib: seed,
        },
    ];
    let floppy = path("floppy.img");
    std::fs::copy(asset("memtest-floppy.img"), &floppy).unwrap();

    let config = MachineConfig {
        memory_mib: 256,
        disks: disks.iter().map(|d| d.path.clone()).collect(),
        floppy: Some(floppy.clone()),
        linux: Some(LinuxBoot {
            kernel: asset("vmlinuz"),
            initrd: Some(asset("initramfs.cpio.gz")),
            cmdline: "console=ttyS0 cryptomgr.notests terrarium.test=disks".into(),
        }),
        ..MachineConfig::default()
    };
    let r = run_emu(config, LINUX_LIMIT, |_| false);
    assert_linux_finished(r.off, &r.serial);
    assert!(r.serial.contains("ata_piix"), "serial:\n{}", r.serial);

    let pattern = pattern();
    let wrote = md5(&pattern, &dir);
    // The guest names each disk by its SCSI address, host:channel:target:lun, where libata
    // makes IDE channels hosts and master/slave targets 0/1. The machine places the disks at
    // primary master, primary slave, secondary slave, secondary master.
    for (name, d) in ["0:0:0:0", "0:0:1:0", "1:0:1:0", "1:0:0:0"]
        .iter()
        .zip(&disks)
    {
        let read = md5(&d.first_mib, &dir);
        assert!(
            r.serial.contains(&format!("DISK-READ {name} {read}")),
            "{name} ({}) first MiB should read as md5 {read}; serial:\n{}",
            d.path.display(),
            r.serial
        );
        assert!(
            r.serial.contains(&format!("DISK-WROTE {name} {wrote}")),
            "{name} ({}) pattern should read back as md5 {wrote}; serial:\n{}",
            d.path.display(),
            r.serial
        );
        // (qemu-img checks only qcow2's metadata; for VHD the comparison below is the check.)
        if d.format == "qcow2" {
            qemu_img(&["check", "-q", "-f", d.format, d.path.to_str().unwrap()]);
        }
        // The image holds the first MiB and the pattern, and zeros elsewhere.
        let mut expected = d.first_mib.clone();
        expected.resize(size, 0);
        expected[MIB..MIB + PATTERN_BYTES].copy_from_slice(&pattern);
        let raw = dir.join("expected.raw");
        std::fs::write(&raw, &expected).unwrap();
        qemu_img(&[
            "compare",
            "-q",
            "-f",
            d.format,
            "-F",
            "raw",
            d.path.to_str().unwrap(),
            raw.to_str().unwrap(),
        ]);
    }
    let floppy_md5 = md5(&std::fs::read(&floppy).unwrap(), &dir);
    assert!(
        r.serial.contains(&format!("FLOPPY-READ fd0 {floppy_md5}")),
        "the floppy should read as md5 {floppy_md5}; serial:\n{}",
        r.serial
    );
}
