//! Tests on synthetic images built here: a small ISO with El Torito and ISOLINUX, FAT12
//! floppies, MBR and GPT disks, non-images, and a random-mutation run over all of them.

use super::*;

const S: usize = 2048;

fn put(img: &mut [u8], at: usize, b: &[u8]) {
    img[at..at + b.len()].copy_from_slice(b);
}

fn put16(img: &mut [u8], at: usize, v: u16) {
    put(img, at, &v.to_le_bytes());
}

fn put32(img: &mut [u8], at: usize, v: u32) {
    put(img, at, &v.to_le_bytes());
}

fn put64(img: &mut [u8], at: usize, v: u64) {
    put(img, at, &v.to_le_bytes());
}

/// An ISO 9660 directory record, with a Rock Ridge NM entry when `rr` is given.
fn dir_record(iso_name: &[u8], rr: Option<&str>, lba: u32, size: u32, dir: bool) -> Vec<u8> {
    let pad = usize::from(iso_name.len().is_multiple_of(2));
    let su: Vec<u8> = match rr {
        Some(n) => {
            let mut v = vec![b'N', b'M', (5 + n.len()) as u8, 1, 0];
            v.extend_from_slice(n.as_bytes());
            v
        }
        None => Vec::new(),
    };
    let mut len = 33 + iso_name.len() + pad + su.len();
    len += len % 2;
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    put32(&mut r, 2, lba);
    put(&mut r, 6, &lba.to_be_bytes());
    put32(&mut r, 10, size);
    put(&mut r, 14, &size.to_be_bytes());
    r[25] = if dir { 2 } else { 0 };
    put16(&mut r, 28, 1);
    r[32] = iso_name.len() as u8;
    put(&mut r, 33, iso_name);
    put(&mut r, 33 + iso_name.len() + pad, &su);
    r
}

fn iso_name_of(name: &str, dir: bool) -> Vec<u8> {
    let mut n = name.to_ascii_uppercase().replace('.', "_");
    if !dir {
        n = match name.rfind('.') {
            Some(i) if i > 0 => format!("{}.{}", &name[..i], &name[i + 1..]).to_ascii_uppercase(),
            _ => format!("{}.", n),
        };
        n.push_str(";1");
    }
    n.into_bytes()
}

/// A small ISO: PVD, El Torito boot record booting `boot` (no emulation), terminator, boot
/// catalog, then one sector per directory and the files.
fn make_iso(label: &str, files: &[(&str, &[u8])], boot: Option<&str>) -> Vec<u8> {
    let parent = |p: &str| match p.rfind('/') {
        Some(i) => p[..i].to_string(),
        None => String::new(),
    };
    let mut dirs: Vec<String> = vec![String::new()];
    for (p, _) in files {
        let comps: Vec<&str> = p.split('/').collect();
        for i in 1..comps.len() {
            let d = comps[..i].join("/");
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    let mut next = 20u32;
    let dir_lba: Vec<u32> = dirs
        .iter()
        .map(|_| {
            next += 1;
            next - 1
        })
        .collect();
    let file_lba: Vec<u32> = files
        .iter()
        .map(|(_, c)| {
            let l = next;
            next += (c.len().div_ceil(S)).max(1) as u32;
            l
        })
        .collect();
    let mut img = vec![0u8; next as usize * S];
    let lba_of_dir = |d: &str| dir_lba[dirs.iter().position(|x| x == d).unwrap()];
    for (di, d) in dirs.iter().enumerate() {
        let mut recs = dir_record(&[0], None, dir_lba[di], S as u32, true);
        recs.extend(dir_record(
            &[1],
            None,
            lba_of_dir(&parent(d)),
            S as u32,
            true,
        ));
        for d2 in dirs.iter().filter(|x| !x.is_empty() && parent(x) == *d) {
            let name = d2.rsplit('/').next().unwrap();
            recs.extend(dir_record(
                &iso_name_of(name, true),
                Some(name),
                lba_of_dir(d2),
                S as u32,
                true,
            ));
        }
        for (fi, (p, c)) in files.iter().enumerate() {
            if parent(p) == *d {
                let name = p.rsplit('/').next().unwrap();
                recs.extend(dir_record(
                    &iso_name_of(name, false),
                    Some(name),
                    file_lba[fi],
                    c.len() as u32,
                    false,
                ));
            }
        }
        assert!(recs.len() <= S);
        put(&mut img, dir_lba[di] as usize * S, &recs);
    }
    for (fi, (_, c)) in files.iter().enumerate() {
        put(&mut img, file_lba[fi] as usize * S, c);
    }
    // Primary volume descriptor.
    let pvd = 16 * S;
    put(&mut img, pvd, b"\x01CD001\x01");
    let mut l = [b' '; 32];
    l[..label.len()].copy_from_slice(label.as_bytes());
    put(&mut img, pvd + 40, &l);
    put16(&mut img, pvd + 128, S as u16);
    put(&mut img, pvd + 130, &(S as u16).to_be_bytes());
    let root = dir_record(&[0], None, dir_lba[0], S as u32, true);
    put(&mut img, pvd + 156, &root);
    // Boot record and catalog.
    let br = 17 * S;
    put(&mut img, br, b"\x00CD001\x01EL TORITO SPECIFICATION");
    put32(&mut img, br + 71, 19);
    put(&mut img, 18 * S, b"\xffCD001\x01");
    if let Some(b) = boot {
        let rba = file_lba[files.iter().position(|(p, _)| *p == b).unwrap()];
        let cat = 19 * S;
        img[cat] = 1;
        img[cat + 30] = 0x55;
        img[cat + 31] = 0xAA;
        let sum = (0..16).fold(0u16, |a, i| {
            a.wrapping_add(u16::from_le_bytes([img[cat + 2 * i], img[cat + 2 * i + 1]]))
        });
        put16(&mut img, cat + 28, 0u16.wrapping_sub(sum));
        img[cat + 32] = 0x88;
        put16(&mut img, cat + 38, 4);
        put32(&mut img, cat + 40, rba);
    }
    img
}

const ISOLINUX_CFG: &[u8] = b"serial 0 115200\nprompt 1\ntimeout 10\ndefault linux\n\n\
label linux\n  kernel /boot/vmlinuz\n  append initrd=/boot/initrd.gz console=ttyS0\n";

fn linux_iso() -> Vec<u8> {
    make_iso(
        "TERRARIUM_TEST",
        &[
            ("isolinux/isolinux.cfg", ISOLINUX_CFG),
            ("isolinux/isolinux.bin", &[0xFA; 100]),
            ("boot/vmlinuz", &[0x4D, 0x5A, 0, 0]),
        ],
        Some("isolinux/isolinux.bin"),
    )
}

fn set_fat12(fat: &mut [u8], n: usize, v: u16) {
    let off = n * 3 / 2;
    if n.is_multiple_of(2) {
        fat[off] = v as u8;
        fat[off + 1] = (fat[off + 1] & 0xF0) | ((v >> 8) as u8 & 0x0F);
    } else {
        fat[off] = (fat[off] & 0x0F) | ((v as u8 & 0x0F) << 4);
        fat[off + 1] = (v >> 4) as u8;
    }
}

/// A 1.44 MB FAT12 floppy with `files` in the root directory (8.3 names).
fn make_floppy(oem: &[u8; 8], label: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut img = vec![0u8; 1_474_560];
    put(&mut img, 0, &[0xEB, 0x3C, 0x90]);
    put(&mut img, 3, oem);
    put16(&mut img, 11, 512);
    img[13] = 1;
    put16(&mut img, 14, 1);
    img[16] = 2;
    put16(&mut img, 17, 224);
    put16(&mut img, 19, 2880);
    img[21] = 0xF0;
    put16(&mut img, 22, 9);
    put16(&mut img, 24, 18);
    put16(&mut img, 26, 2);
    img[38] = 0x29;
    let mut l = [b' '; 11];
    l[..label.len()].copy_from_slice(label.as_bytes());
    put(&mut img, 43, &l);
    put(&mut img, 54, b"FAT12   ");
    put(&mut img, 62, &[0xFA, 0x31, 0xC0, 0xCD, 0x19]);
    put(&mut img, 510, &[0x55, 0xAA]);
    let mut fat = vec![0u8; 9 * 512];
    set_fat12(&mut fat, 0, 0xFF0);
    set_fat12(&mut fat, 1, 0xFFF);
    let mut root = Vec::new();
    let mut vol = [0u8; 32];
    put(&mut vol, 0, &l);
    vol[11] = 0x08;
    root.extend_from_slice(&vol);
    let mut cluster = 2usize;
    for (name, data) in files {
        let (base, ext) = name.split_once('.').unwrap_or((name, ""));
        let mut e = [b' '; 32];
        e[..base.len()].copy_from_slice(base.as_bytes());
        e[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
        e[11..32].fill(0);
        e[11] = 0x20;
        let n = data.len().div_ceil(512).max(1);
        put16(&mut e, 26, cluster as u16);
        put32(&mut e, 28, data.len() as u32);
        root.extend_from_slice(&e);
        put(&mut img, (33 + cluster - 2) * 512, data);
        for k in 0..n {
            let v = if k + 1 == n {
                0xFFF
            } else {
                (cluster + k + 1) as u16
            };
            set_fat12(&mut fat, cluster + k, v);
        }
        cluster += n;
    }
    put(&mut img, 512, &fat);
    put(&mut img, 10 * 512, &fat);
    put(&mut img, 19 * 512, &root);
    img
}

fn freedos_floppy() -> Vec<u8> {
    make_floppy(
        b"FRDOS4.1",
        "FREEDOS",
        &[("KERNEL.SYS", &[0x90; 1500]), ("COMMAND.COM", &[0xC3; 700])],
    )
}

fn mbr_entry(img: &mut [u8], i: usize, active: bool, ty: u8, lba: u32, count: u32) {
    let at = 446 + 16 * i;
    img[at] = if active { 0x80 } else { 0 };
    img[at + 4] = ty;
    put32(img, at + 8, lba);
    put32(img, at + 12, count);
}

/// A 2 MiB MBR disk with an active NTFS partition at 1 MiB.
fn ntfs_disk() -> Vec<u8> {
    let mut img = vec![0u8; 2 << 20];
    put(&mut img, 0, &[0x33, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C]);
    mbr_entry(&mut img, 0, true, 0x07, 2048, 2048);
    put(&mut img, 510, &[0x55, 0xAA]);
    let v = 1 << 20;
    put(&mut img, v, b"\xEB\x52\x90NTFS    ");
    put16(&mut img, v + 11, 512);
    put(
        &mut img,
        v + 0x180,
        b"A disk read error occurred\0BOOTMGR is missing\0",
    );
    put(&mut img, v + 510, &[0x55, 0xAA]);
    img
}

fn guid_bytes(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut g = [0u8; 16];
    g[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    g[4..6].copy_from_slice(&[b[5], b[4]]);
    g[6..8].copy_from_slice(&[b[7], b[6]]);
    g[8..16].copy_from_slice(&b[8..16]);
    g
}

/// A 2 MiB GPT disk with one Linux filesystem partition holding an ext4 superblock.
fn gpt_disk() -> Vec<u8> {
    let mut img = vec![0u8; 2 << 20];
    mbr_entry(&mut img, 0, false, 0xEE, 1, 4095);
    put(&mut img, 510, &[0x55, 0xAA]);
    let h = 512;
    put(&mut img, h, b"EFI PART");
    put32(&mut img, h + 8, 0x0001_0000);
    put32(&mut img, h + 12, 92);
    put64(&mut img, h + 24, 1);
    put64(&mut img, h + 32, 4095);
    put64(&mut img, h + 40, 34);
    put64(&mut img, h + 48, 4062);
    put64(&mut img, h + 72, 2);
    put32(&mut img, h + 80, 128);
    put32(&mut img, h + 84, 128);
    let e = 1024;
    put(
        &mut img,
        e,
        &guid_bytes("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    );
    put(
        &mut img,
        e + 16,
        &guid_bytes("12345678-1234-1234-1234-123456789ABC"),
    );
    put64(&mut img, e + 32, 2048);
    put64(&mut img, e + 40, 4061);
    let sb = (1 << 20) + 1024;
    put32(&mut img, sb, 256);
    put32(&mut img, sb + 24, 2);
    put(&mut img, sb + 56, &[0x53, 0xEF]);
    put(&mut img, sb + 120, b"rootfs");
    img
}

#[test]
fn iso_with_isolinux_is_a_bootable_linux_cd() {
    let img = linux_iso();
    let m = probe_bytes("linux.iso", &img).unwrap();
    assert_eq!(m.kind, MediaKind::Cdrom);
    assert_eq!(m.format, ImageFormat::Iso);
    assert_eq!(m.size, img.len() as u64);
    assert_eq!(m.os, OsFamily::Linux);
    assert_eq!(m.os_name.as_deref(), Some("Linux"));
    assert_eq!(m.volume_label.as_deref(), Some("TERRARIUM_TEST"));
    assert!(m.bootable, "{m:?}");
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
}

#[test]
fn iso_without_boot_catalog_is_not_bootable() {
    let img = make_iso("DATA", &[("readme.txt", b"hello")], None);
    let m = probe_bytes("data.iso", &img).unwrap();
    assert_eq!(m.kind, MediaKind::Cdrom);
    assert!(!m.bootable);
    assert_eq!(m.os, OsFamily::Other);
    assert_eq!(m.os_name, None);
    assert_eq!(m.suggested_name, "DATA");
    assert!(
        m.evidence.iter().any(|e| e.contains("damaged")),
        "{:?}",
        m.evidence
    );
}

#[test]
fn debian_iso_is_named_by_disk_info() {
    let img = make_iso(
        "Debian 12.5.0 amd64 n",
        &[
            (
                ".disk/info",
                b"Debian GNU/Linux 12.5.0 \"Bookworm\" - Official amd64 NETINST with firmware 20240210-11:27",
            ),
            ("isolinux/isolinux.cfg", b"include menu.cfg\ndefault vesamenu.c32\n"),
            (
                "isolinux/menu.cfg",
                b"menu title Debian GNU/Linux installer menu (BIOS mode)\ninclude txt.cfg\n",
            ),
            ("isolinux/txt.cfg", b"label install\n\tmenu label ^Install\n\tkernel /install.amd/vmlinuz\n"),
            ("isolinux/isolinux.bin", &[1; 10]),
        ],
        Some("isolinux/isolinux.bin"),
    );
    let m = probe_bytes("debian-12.5.0-amd64-netinst.iso", &img).unwrap();
    assert_eq!(m.os, OsFamily::Linux);
    assert_eq!(m.os_name.as_deref(), Some("Debian GNU/Linux 12.5.0"));
    assert_eq!(m.suggested_name, "Debian GNU/Linux 12.5.0");
    assert!(m.bootable);
    assert!(
        m.evidence
            .iter()
            .any(|e| e.contains("boots /install.amd/vmlinuz")),
        "{:?}",
        m.evidence
    );
}

#[test]
fn windows_iso_by_setup_files_and_label() {
    let img = make_iso(
        "CCCOMA_X64FRE_EN-US_DV9",
        &[
            ("sources/install.wim", b"MSWIM\0\0\0"),
            ("bootmgr", b"x"),
            ("boot/etfsboot.com", &[2; 10]),
        ],
        Some("boot/etfsboot.com"),
    );
    let m = probe_bytes("Win10_22H2_English_x64.iso", &img).unwrap();
    assert_eq!(m.os, OsFamily::Windows);
    assert_eq!(m.os_name.as_deref(), Some("Windows 10/11"));
    assert!(m.bootable);
    // The label alone (a UDF-only Windows ISO shows nothing else) is enough.
    let img = make_iso("CCCOMA_X64FRE_EN-US_DV9", &[("README.TXT", b"UDF")], None);
    let m = probe_bytes("win.iso", &img).unwrap();
    assert_eq!(
        (m.os, m.os_name.as_deref()),
        (OsFamily::Windows, Some("Windows 10/11"))
    );
}

#[test]
fn memtest_only_iso_and_grub_config() {
    let img = make_iso(
        "MT86PLUS",
        &[
            (
                "boot/grub/grub.cfg",
                b"menuentry 'Memtest86+ 6.10' {\n  linux /boot/memtest86+x64.bin\n}\n",
            ),
            ("boot/memtest86+x64.bin", &[3; 64]),
        ],
        None,
    );
    let m = probe_bytes("mt86plus.iso", &img).unwrap();
    assert_eq!(m.os, OsFamily::MemTest);
    assert_eq!(m.os_name.as_deref(), Some("memtest86+"));
}

#[test]
fn freebsd_iso_by_kernel_path() {
    let img = make_iso(
        "14_0_RELEASE_AMD64_CD",
        &[("boot/kernel/kernel", b"\x7fELF")],
        None,
    );
    let m = probe_bytes("FreeBSD-14.0-RELEASE-amd64-disc1.iso", &img).unwrap();
    assert_eq!(m.os, OsFamily::Bsd);
    assert_eq!(m.os_name.as_deref(), Some("FreeBSD 14.0"));
}

#[test]
fn truncated_iso_gives_a_clean_answer() {
    let img = linux_iso();
    for len in [40 << 10, 32768, 32768 + 2048, 20 * 2048 + 100] {
        let r = probe_bytes("cut.iso", &img[..len.min(img.len())]);
        if let Ok(m) = &r {
            assert_eq!(m.kind, MediaKind::Cdrom);
        }
    }
    let m = probe_bytes("cut.iso", &img[..40 << 10]).unwrap();
    assert_eq!(m.volume_label.as_deref(), Some("TERRARIUM_TEST"));
}

#[test]
fn mbr_with_ntfs_partition_is_windows() {
    let m = probe_bytes("win.img", &ntfs_disk()).unwrap();
    assert_eq!(m.kind, MediaKind::HardDisk);
    assert_eq!(m.format, ImageFormat::Raw);
    assert_eq!(m.os, OsFamily::Windows);
    assert_eq!(m.os_name.as_deref(), Some("Windows"));
    assert!(m.bootable);
    assert!(
        m.evidence
            .iter()
            .any(|e| e == "partition 1 type 0x07 (NTFS/exFAT), active"),
        "{:?}",
        m.evidence
    );
    assert!(
        m.evidence.iter().any(|e| e.contains("BOOTMGR")),
        "{:?}",
        m.evidence
    );
}

#[test]
fn gpt_with_linux_partition_is_linux() {
    let m = probe_bytes("disk.raw", &gpt_disk()).unwrap();
    assert_eq!(m.kind, MediaKind::HardDisk);
    assert_eq!(m.os, OsFamily::Linux);
    assert_eq!(m.volume_label.as_deref(), Some("rootfs"));
    assert!(
        m.evidence
            .iter()
            .any(|e| e == "GPT partition 1: Linux filesystem"),
        "{:?}",
        m.evidence
    );
}

#[test]
fn fat12_floppy_with_kernel_sys_is_freedos() {
    let m = probe_bytes("fdboot.img", &freedos_floppy()).unwrap();
    assert_eq!(m.kind, MediaKind::Floppy);
    assert_eq!(m.format, ImageFormat::Raw);
    assert_eq!(m.os, OsFamily::Dos);
    assert_eq!(m.os_name.as_deref(), Some("FreeDOS"));
    assert_eq!(m.volume_label.as_deref(), Some("FREEDOS"));
    assert!(m.bootable);
}

#[test]
fn floppies_of_other_systems() {
    let cfg = b"default memtest\nlabel memtest\n  linux /memtest.bin\n";
    let img = make_floppy(
        b"SYSLINUX",
        "MEMTEST",
        &[
            ("LDLINUX.SYS", &[1; 600]),
            ("SYSLINUX.CFG", cfg),
            ("MEMTEST.BIN", &[2; 3000]),
        ],
    );
    let m = probe_bytes("memtest.img", &img).unwrap();
    assert_eq!((m.kind, m.os), (MediaKind::Floppy, OsFamily::MemTest));
    assert_eq!(m.os_name.as_deref(), Some("memtest86+"));

    let img = make_floppy(
        b"MSWIN4.1",
        "WIN98BOOT",
        &[
            ("IO.SYS", &[1; 600]),
            ("MSDOS.SYS", &[2; 10]),
            ("COMMAND.COM", &[3; 10]),
        ],
    );
    let m = probe_bytes("win98.ima", &img).unwrap();
    assert_eq!(
        (m.os, m.os_name.as_deref()),
        (OsFamily::Windows, Some("Windows 95/98"))
    );

    let img = make_floppy(
        b"IBM  3.3",
        "DOS",
        &[("IBMBIO.COM", &[1; 60]), ("IBMDOS.COM", &[2; 60])],
    );
    let m = probe_bytes("pcdos.img", &img).unwrap();
    assert_eq!(
        (m.os, m.os_name.as_deref()),
        (OsFamily::Dos, Some("PC DOS"))
    );

    // A data floppy: not bootable, no OS.
    let img = make_floppy(b"mkfs.fat", "DATA", &[("NOTES.TXT", b"hello")]);
    let m = probe_bytes("data.img", &img).unwrap();
    assert_eq!(
        (m.kind, m.os, m.bootable),
        (MediaKind::Floppy, OsFamily::Other, false)
    );
    assert_eq!(m.suggested_name, "DATA");
}

#[test]
fn text_and_empty_files_are_not_images() {
    let e = probe_bytes("/x/notes.txt", b"Shopping list\n- milk\n- eggs\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/x/notes.txt is not a disk image: drop an ISO, VHD, qcow2, raw disk or floppy image"
    );
    let mut text = Vec::new();
    while text.len() < 100_000 {
        text.extend_from_slice(b"The quick brown fox jumps over the lazy dog.\n");
    }
    match probe_bytes("notes.txt", &text) {
        Err(ProbeError::NotAnImage { reason, .. }) => assert!(reason.contains("text")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        probe_bytes("empty.iso", b""),
        Err(ProbeError::NotAnImage { .. })
    ));
    assert!(matches!(
        probe_bytes("tiny.img", &[0; 100]),
        Err(ProbeError::NotAnImage { .. })
    ));
}

#[test]
fn blank_and_random_raw_files() {
    let m = probe_bytes("new-disk.img", &vec![0u8; 1 << 20]).unwrap();
    assert_eq!(
        (m.kind, m.os, m.bootable),
        (MediaKind::HardDisk, OsFamily::Other, false)
    );
    assert_eq!(m.suggested_name, "new-disk");
    assert!(probe_bytes("zeros.bin", &vec![0u8; 1 << 20]).is_err());
    assert!(probe_bytes("odd.img", &vec![0u8; (1 << 20) + 1]).is_err());
    let mut rng = XorShift(0x1234_5678_9ABC_DEF0);
    let mut random: Vec<u8> = (0..65536).map(|_| rng.next() as u8).collect();
    random[510] = 0;
    assert!(matches!(
        probe_bytes("random.dat", &random),
        Err(ProbeError::NotAnImage { .. })
    ));
    // A bare boot sector with the signature is a (tiny) hard disk.
    let mut mbr = vec![0u8; 4096];
    mbr[0] = 0xFA;
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let m = probe_bytes("boot.bin", &mbr).unwrap();
    assert_eq!((m.kind, m.bootable), (MediaKind::HardDisk, true));
}

#[test]
fn family_tables() {
    assert_eq!(OsFamily::ALL.len(), 6);
    let labels: Vec<&str> = OsFamily::ALL.iter().map(|f| f.label()).collect();
    assert_eq!(
        labels,
        ["Linux", "Windows", "DOS", "BSD", "Memory tester", "Other"]
    );
    let icons: Vec<&str> = OsFamily::ALL.iter().map(|f| f.icon_name()).collect();
    assert_eq!(
        icons,
        ["linux", "windows", "dos", "bsd", "memtest", "other"]
    );
    assert_eq!(OsFamily::default(), OsFamily::Other);
    assert_eq!(OsFamily::Windows.default_memory_mib(), 2048);
    assert_eq!(OsFamily::MemTest.default_disk_gib(), 0);
    use serde::de::{value::StrDeserializer, IntoDeserializer};
    for (s, f) in [
        ("linux", OsFamily::Linux),
        ("memtest", OsFamily::MemTest),
        ("dos", OsFamily::Dos),
    ] {
        let d: StrDeserializer<'_, serde::de::value::Error> = s.into_deserializer();
        assert_eq!(<OsFamily as serde::Deserialize>::deserialize(d).unwrap(), f);
    }
    for (s, k) in [
        ("cdrom", MediaKind::Cdrom),
        ("harddisk", MediaKind::HardDisk),
        ("floppy", MediaKind::Floppy),
    ] {
        let d: StrDeserializer<'_, serde::de::value::Error> = s.into_deserializer();
        assert_eq!(
            <MediaKind as serde::Deserialize>::deserialize(d).unwrap(),
            k
        );
    }
}

#[test]
fn io_errors_name_the_file() {
    let e = probe(Path::new("/nonexistent/terrarium/y.iso")).unwrap_err();
    assert!(matches!(e, ProbeError::Io { .. }));
    assert_eq!(
        e.to_string(),
        "cannot read /nonexistent/terrarium/y.iso: No such file or directory"
    );
    let e = probe(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_err();
    assert!(matches!(e, ProbeError::NotAnImage { .. }), "{e}");
}

#[test]
fn damaged_qcow2_is_an_image_error() {
    let mut img = vec![0u8; 4096];
    img[..4].copy_from_slice(b"QFI\xfb");
    img[7] = 3;
    let e = probe_bytes("/x/broken.qcow2", &img).unwrap_err();
    assert!(matches!(e, ProbeError::Image(_)), "{e:?}");
    assert!(e.to_string().contains("/x/broken.qcow2"), "{e}");
}

/// A tiny xorshift64 generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A mutation case: image, file name, byte ranges worth mutating.
type Case = (Vec<u8>, &'static str, Vec<(usize, usize)>);

#[test]
fn random_mutations_never_panic() {
    let iters: usize = std::env::var("MEDIA_DETECT_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let debian = make_iso(
        "Debian 12",
        &[
            (".disk/info", b"Debian GNU/Linux 12 \"Bookworm\""),
            (
                "isolinux/isolinux.cfg",
                b"include menu.cfg\ninclude isolinux.cfg\n",
            ),
            (
                "isolinux/menu.cfg",
                b"menu title Debian\nlabel a\n kernel /install.amd/vmlinuz\n",
            ),
            (
                "boot/grub/grub.cfg",
                b"source /boot/grub/grub.cfg\nmenuentry 'x' {\nlinux /vmlinuz\n}\n",
            ),
        ],
        Some("isolinux/menu.cfg"),
    );
    let iso = linux_iso();
    let iso_len = iso.len();
    let debian_len = debian.len();
    // (image, name, byte ranges worth mutating as (start, end))
    let mut cases: Vec<Case> = vec![
        (iso, "a.iso", vec![(0, iso_len)]),
        (debian, "d.iso", vec![(16 * S, debian_len)]),
        (
            freedos_floppy(),
            "f.img",
            vec![(0, 1024), (19 * 512, 20 * 512), (33 * 512, 34 * 512)],
        ),
        (
            ntfs_disk(),
            "n.img",
            vec![(0, 512), (1 << 20, (1 << 20) + 512)],
        ),
        (
            gpt_disk(),
            "g.img",
            vec![(0, 2048), ((1 << 20) + 1024, (1 << 20) + 1280)],
        ),
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for i in 0..iters {
        let ci = i % cases.len();
        let (img, name, ranges) = &mut cases[ci];
        let n = 1 + rng.below(8);
        let mut undo = Vec::with_capacity(n);
        for _ in 0..n {
            let (start, end) = ranges[rng.below(ranges.len())];
            let at = start + rng.below(end - start);
            undo.push((at, img[at]));
            img[at] = match rng.below(4) {
                0 => img[at] ^ (1 << rng.below(8)),
                1 => 0,
                2 => 0xFF,
                _ => rng.next() as u8,
            };
        }
        let len = if rng.below(16) == 0 {
            rng.below(img.len() + 1)
        } else {
            img.len()
        };
        let _ = probe_bytes(name, &img[..len]);
        for (at, b) in undo.into_iter().rev() {
            img[at] = b;
        }
    }
}
