//! The detection rules: what an ISO, a partitioned disk, a volume or a floppy holds.

use crate::bootcfg::{classify, BootConfig, Dialect, Target};
use crate::fat::{self, FatFs};
use crate::findings::{clean_bytes, os_in_text, prio, windows_label, Findings, MAX_NAME_CHARS};
use crate::fs::{FileSystem, Walker};
use crate::iso::{self, IsoVolume, SECTOR as ISO_SECTOR};
use crate::layout::{self, PartType, Partition};
use crate::source::{le32, slice, Reader};
use crate::OsFamily::{self, Bsd, Dos, Linux, MemTest, Windows};

/// Deepest nesting of images in images (El Torito floppy images) followed.
const MAX_NESTING: usize = 2;
/// Most partitions whose contents are looked at.
const MAX_VOLUMES: usize = 8;

/// SYSLINUX-family configuration files, in the order the loaders search them.
const SYSLINUX_CONFIGS: &[&str] = &[
    "/boot/isolinux/isolinux.cfg",
    "/isolinux/isolinux.cfg",
    "/isolinux.cfg",
    "/boot/syslinux/syslinux.cfg",
    "/syslinux/syslinux.cfg",
    "/syslinux.cfg",
    "/boot/extlinux/extlinux.conf",
    "/extlinux.conf",
];

/// GRUB configuration files.
const GRUB_CONFIGS: &[&str] = &[
    "/boot/grub/grub.cfg",
    "/boot/grub/loopback.cfg",
    "/EFI/BOOT/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/boot/grub/menu.lst",
    "/menu.lst",
];

/// Boot loader files whose presence makes a FAT volume bootable.
const LOADER_FILES: &[&str] = &[
    "ldlinux.sys",
    "io.sys",
    "ibmbio.com",
    "kernel.sys",
    "ntldr",
    "bootmgr",
    "grldr",
    "command.com",
];

/// What an ISO 9660 image holds.
pub(crate) fn iso_image(r: &mut Reader<'_>, f: &mut Findings, depth: usize) {
    let vol = iso::read_volume(r, 0);
    match &vol.label {
        Some(l) => {
            f.note(format!("ISO 9660 volume \"{l}\""));
            f.set_label(l);
            label_hints(f, l);
        }
        None => f.note("ISO 9660 volume"),
    }
    if vol.udf {
        f.note("UDF file system");
    }
    match &vol.fs {
        Some(fs) => {
            let mut w = Walker::new(fs);
            files(r, &mut w, f, None);
            el_torito(r, f, Some(&w), &vol, depth);
        }
        None => el_torito(r, f, None, &vol, depth),
    }
}

fn el_torito(
    r: &mut Reader<'_>,
    f: &mut Findings,
    w: Option<&Walker<'_>>,
    vol: &IsoVolume,
    depth: usize,
) {
    let Some(lba) = vol.boot_catalog else {
        f.note("no El Torito boot record (not bootable)");
        return;
    };
    let mut cat = [0u8; ISO_SECTOR as usize];
    if r.read(u64::from(lba) * ISO_SECTOR, &mut cat).is_none() {
        f.note("El Torito boot catalog lies outside the image");
        return;
    }
    let entries = match iso::parse_catalog(&cat) {
        Ok(e) => e,
        Err(why) => {
            f.note(format!("El Torito boot catalog is damaged ({why})"));
            return;
        }
    };
    for e in entries.iter().filter(|e| e.bootable) {
        f.bootable = true;
        let platform = match e.platform {
            0 => "BIOS".to_string(),
            0xEF => "EFI".to_string(),
            p => format!("platform 0x{p:02X}"),
        };
        let (media, floppy) = match e.media {
            0 => ("no emulation", None),
            1 => ("1.2 MB floppy emulation", Some(1_228_800u64)),
            2 => ("1.44 MB floppy emulation", Some(1_474_560)),
            3 => ("2.88 MB floppy emulation", Some(2_949_120)),
            4 => ("hard disk emulation", None),
            _ => ("unknown emulation", None),
        };
        let image = w.and_then(|w| w.cached_at(u64::from(e.rba)));
        match &image {
            Some((path, _)) => f.note(format!("El Torito {platform} boot image {path} ({media})")),
            None => f.note(format!("El Torito {platform} boot image ({media})")),
        }
        if let Some((path, _)) = image {
            let base = path.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
            match base.as_str() {
                "etfsboot.com" => f.hint(Windows, 60, "boots etfsboot.com (Windows setup)"),
                "cdboot" => f.hint(Bsd, 40, "boots the FreeBSD cdboot loader"),
                _ => {}
            }
        }
        if depth < MAX_NESTING {
            let off = u64::from(e.rba) * ISO_SECTOR;
            if let Some(len) = floppy {
                volume(r, f, off, len, depth + 1, true);
            } else if e.media == 4 {
                let len = r.size().saturating_sub(off);
                disk(r, f, off, len, depth + 1);
            }
        }
    }
}

/// Hints from a volume label.
pub(crate) fn label_hints(f: &mut Findings, label: &str) {
    if let Some(name) = windows_label(label) {
        f.hint(
            Windows,
            60,
            format!("volume label \"{label}\" is Microsoft's for {name}"),
        );
        f.name(Windows, prio::LABEL, name);
        return;
    }
    let up = label.to_ascii_uppercase();
    if up.starts_with("FD1") && up.chars().nth(3).is_some_and(|c| c.is_ascii_digit()) {
        let minor = up.chars().nth(3).unwrap_or('0');
        f.hint(Dos, 60, format!("volume label \"{label}\" (FreeDOS)"));
        f.name(Dos, prio::LABEL, &format!("FreeDOS 1.{minor}"));
        return;
    }
    if let Some((fam, name)) = os_in_text(label) {
        f.hint(fam, 30, format!("volume label \"{label}\" names {name}"));
        f.name(fam, prio::LABEL, &name);
        return;
    }
    // FreeBSD labels read "14_0_RELEASE_AMD64_CD".
    let parts: Vec<&str> = up.split(['_', '-', ' ']).collect();
    if let [maj, min, "RELEASE", ..] = parts.as_slice() {
        if maj.parse::<u8>().is_ok() && min.parse::<u8>().is_ok() {
            f.name(Bsd, prio::LABEL, &format!("FreeBSD {maj}.{min}"));
        }
    }
}

/// Hints from the files of a volume; returns whether a boot loader file was found. `oem` is
/// the FAT boot sector's OEM name.
pub(crate) fn files(
    r: &mut Reader<'_>,
    w: &mut Walker<'_>,
    f: &mut Findings,
    oem: Option<&str>,
) -> bool {
    let Some(root) = w.list(r, "") else {
        return false;
    };
    let file = |n: &str| root.iter().any(|e| !e.is_dir && e.is_named(n));
    let dir = |n: &str| root.iter().any(|e| e.is_dir && e.is_named(n));
    let win9x = oem.is_some_and(|o| o.starts_with("MSWIN4"));
    let mut loader = LOADER_FILES.iter().any(|n| file(n));

    // DOS and Windows 9x.
    if file("kernel.sys") {
        f.hint(Dos, 80, "KERNEL.SYS (FreeDOS kernel)");
        f.name(Dos, prio::FILES, "FreeDOS");
    }
    if dir("freedos") {
        f.hint(Dos, 60, "FREEDOS directory");
        f.name(Dos, prio::LAYOUT, "FreeDOS");
    }
    if file("io.sys") && (file("msdos.sys") || win9x) {
        if win9x || dir("windows") || dir("win98") || dir("win95") {
            f.hint(Windows, 80, "IO.SYS and MSDOS.SYS of Windows 95/98");
            f.name(Windows, prio::FILES, "Windows 95/98");
        } else {
            f.hint(Dos, 80, "IO.SYS and MSDOS.SYS (MS-DOS)");
            f.name(Dos, prio::FILES, "MS-DOS");
        }
    } else if win9x {
        f.hint(
            Windows,
            15,
            "FAT boot sector written by Windows 95/98 (MSWIN4.x)",
        );
        f.name(Windows, prio::LAYOUT, "Windows 95/98");
    }
    if file("ibmbio.com") && file("ibmdos.com") {
        f.hint(Dos, 80, "IBMBIO.COM and IBMDOS.COM (PC DOS)");
        f.name(Dos, prio::FILES, "PC DOS");
    }
    if file("command.com") {
        f.hint(Dos, 20, "COMMAND.COM");
    }
    for (d, name) in [("win98", "Windows 98"), ("win95", "Windows 95")] {
        if dir(d) {
            f.hint(
                Windows,
                60,
                format!("{} setup directory", d.to_ascii_uppercase()),
            );
            f.name(Windows, prio::LAYOUT, name);
        }
    }

    // Windows NT family.
    if file("ntldr") {
        f.hint(Windows, 60, "NTLDR (Windows NT/2000/XP boot loader)");
        f.name(Windows, prio::GENERIC + 1, "Windows 2000/XP");
    }
    if file("bootmgr") {
        f.hint(Windows, 60, "BOOTMGR (Windows Vista or later boot manager)");
    }
    for p in [
        "/sources/install.wim",
        "/sources/install.esd",
        "/sources/boot.wim",
    ] {
        if w.is_file(r, p) {
            let weight = if p.ends_with("boot.wim") { 60 } else { 100 };
            f.hint(Windows, weight, format!("{} (Windows setup)", &p[1..]));
        }
    }
    if w.is_file(r, "/efi/microsoft/boot/bootmgfw.efi") {
        f.hint(Windows, 60, "EFI/Microsoft/Boot/bootmgfw.efi");
    }
    if w.is_file(r, "/boot/etfsboot.com") {
        f.hint(
            Windows,
            40,
            "boot/etfsboot.com (Windows setup CD boot sector)",
        );
    }
    for d in ["i386", "amd64"] {
        if w.is_file(r, &format!("/{d}/txtsetup.sif")) {
            let marker = |p: &str| {
                root.iter()
                    .any(|e| !e.is_dir && e.name.to_ascii_lowercase().starts_with(p))
            };
            let name = if marker("win51") {
                "Windows XP"
            } else if marker("win52") {
                "Windows Server 2003"
            } else if marker("cdrom_nt.5") || marker("cdrom_ip.5") {
                "Windows 2000"
            } else {
                "Windows 2000/XP/2003"
            };
            f.hint(
                Windows,
                100,
                format!("{}/TXTSETUP.SIF ({name} setup)", d.to_ascii_uppercase()),
            );
            f.name(Windows, prio::FILES, name);
        }
    }

    // Linux distributions.
    for p in ["/.disk/info", "/_disk/info"] {
        if let Some(data) = w.read(r, p) {
            let line = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
            let line = clean_bytes(line, 200);
            let name = line.split('"').next().unwrap_or("");
            let name = name.split(" - ").next().unwrap_or("").trim();
            if !name.is_empty() {
                f.hint(Linux, 100, format!(".disk/info: {line}"));
                f.name(Linux, prio::INFO, name);
                break;
            }
        }
    }
    if dir("casper") {
        f.hint(Linux, 60, "casper live system (Ubuntu)");
        f.name(Linux, prio::LAYOUT, "Ubuntu");
    }
    if dir("live") {
        f.hint(Linux, 20, "live directory (Debian Live)");
    }
    if w.is_dir(r, "/arch/boot") {
        f.hint(Linux, 60, "arch/boot (Arch Linux)");
        f.name(Linux, prio::LAYOUT, "Arch Linux");
    }
    if w.is_dir(r, "/images/pxeboot") {
        f.hint(Linux, 50, "images/pxeboot (Fedora/RHEL installer)");
    }
    if w.is_dir(r, "/boot/x86_64/loader") {
        f.hint(Linux, 50, "boot/x86_64/loader (openSUSE)");
        f.name(Linux, prio::LAYOUT, "openSUSE");
    }
    for d in ["install.amd", "install.386", "install.a64"] {
        if dir(d) {
            f.hint(Linux, 50, format!("{d} (Debian installer)"));
            f.name(Linux, prio::LAYOUT, "Debian GNU/Linux");
        }
    }

    // BSD.
    if w.is_file(r, "/boot/kernel/kernel") {
        f.hint(Bsd, 80, "boot/kernel/kernel (FreeBSD kernel)");
        f.name(Bsd, prio::LAYOUT, "FreeBSD");
    }
    if file("netbsd") {
        f.hint(Bsd, 60, "netbsd kernel");
        f.name(Bsd, prio::LAYOUT, "NetBSD");
    }
    if file("bsd.rd") || file("bsd") {
        f.hint(Bsd, 50, "bsd kernel (OpenBSD)");
        f.name(Bsd, prio::LAYOUT, "OpenBSD");
    }

    // EFI vendor directories.
    if let Some(vendors) = w.list(r, "/efi") {
        for v in vendors.iter().filter(|e| e.is_dir).take(16) {
            let n = v.name.to_ascii_lowercase();
            if n == "boot" || n == "microsoft" {
                continue;
            }
            if let Some((fam, name)) = os_in_text(&n) {
                f.hint(fam, 30, format!("EFI/{} boot loader directory", v.name));
                f.name(fam, prio::LAYOUT, &name);
            }
        }
    }

    // Boot loader configuration.
    let mut cfg = BootConfig::default();
    for p in SYSLINUX_CONFIGS {
        cfg.read(r, w, p, Dialect::Syslinux);
    }
    for p in GRUB_CONFIGS {
        cfg.read(r, w, p, Dialect::Grub);
    }
    for p in ["/efi/boot/bootx64.efi", "/efi/boot/bootia32.efi"] {
        if w.is_file(r, p) {
            f.note(format!("EFI boot loader {}", &p[1..]));
            loader = true;
        }
    }
    config_hints(f, &cfg);
    if file("ldlinux.sys") {
        f.hint(Linux, 5, "SYSLINUX boot loader (LDLINUX.SYS)");
    }
    if cfg.files.is_empty() {
        // A memory tester without a menu (the file itself is the boot image).
        let only_memtest = root
            .iter()
            .any(|e| !e.is_dir && classify(&e.name) == Target::MemTest);
        if only_memtest {
            f.note("memory tester binary in the root directory");
        }
    }
    loader
}

/// Hints from what the boot configuration starts.
fn config_hints(f: &mut Findings, cfg: &BootConfig) {
    let first = |t: Target| {
        cfg.of(t)
            .next()
            .map(|(_, file, path)| (file.clone(), path.clone()))
    };
    let linux = first(Target::Linux);
    let windows = first(Target::Windows);
    let bsd = first(Target::Bsd);
    if let Some((file, path)) = &linux {
        f.hint(Linux, 40, format!("{file} boots {path}"));
        f.name(Linux, prio::GENERIC, "Linux");
    }
    if let Some((file, path)) = &windows {
        f.hint(Windows, 20, format!("{file} chain-loads {path}"));
    }
    if let Some((file, path)) = &bsd {
        f.hint(Bsd, 30, format!("{file} boots {path}"));
    }
    if let Some((file, path)) = first(Target::Chain) {
        // Chain-loading another disk's boot sector is how menus start Windows.
        if linux.is_none() && bsd.is_none() && windows.is_none() {
            f.hint(Windows, 10, format!("{file} chain-loads {path}"));
        } else {
            f.note(format!("{file} also chain-loads {path}"));
        }
    }
    if let Some((file, path)) = first(Target::MemTest) {
        if linux.is_none() && windows.is_none() && bsd.is_none() {
            f.hint(MemTest, 70, format!("{file} boots only {path}"));
            let name = os_in_text(&path).map(|(_, n)| n);
            f.name(
                MemTest,
                prio::GENERIC,
                name.as_deref().unwrap_or("memtest86+"),
            );
        } else {
            f.note(format!("{file} also offers {path}"));
        }
    }
    let mut seen: Vec<OsFamily> = Vec::new();
    for t in &cfg.titles {
        if let Some((fam, name)) = os_in_text(t) {
            f.name(fam, prio::MENU, &name);
            if !seen.contains(&fam) {
                seen.push(fam);
                f.hint(fam, 15, format!("boot menu \"{t}\""));
            }
        }
    }
}

/// What the volume (file system) at `base` holds; returns whether one was recognized.
/// `floppy` (an unpartitioned volume) sets the bootable flag when the boot sector has the
/// 0x55AA signature and a boot loader file is there.
pub(crate) fn volume(
    r: &mut Reader<'_>,
    f: &mut Findings,
    base: u64,
    len: u64,
    depth: usize,
    floppy: bool,
) -> bool {
    let Some(vbr) = r.array::<512>(base) else {
        return false;
    };
    if let Some(fs) = fat::parse_boot_sector(&vbr, base, len) {
        let loader = fat_volume(r, f, &fs);
        if floppy && layout::has_boot_signature(&vbr) && loader {
            f.bootable = true;
        }
        return true;
    }
    let oem = slice(&vbr, 3, 8);
    if oem == b"NTFS    " {
        f.hint(Windows, 60, "NTFS volume");
        let code = String::from_utf8_lossy(&vbr);
        if code.contains("BOOTMGR") {
            f.note("NTFS boot code loads BOOTMGR (Windows Vista or later)");
        } else if code.contains("NTLDR") {
            f.note("NTFS boot code loads NTLDR (Windows NT/2000/XP)");
            f.name(Windows, prio::GENERIC + 1, "Windows 2000/XP");
        }
        return true;
    }
    if oem == b"EXFAT   " {
        f.note("exFAT volume");
        return true;
    }
    if let Some(sb) = base.checked_add(1024).and_then(|o| r.array::<256>(o)) {
        // Magic, a block size of at most 64 KiB, and some inodes.
        if slice(&sb, 56, 2) == [0x53, 0xEF] && le32(&sb, 24) <= 6 && le32(&sb, 0) != 0 {
            f.hint(Linux, 60, "ext2/3/4 file system");
            f.set_label(&clean_bytes(slice(&sb, 120, 16), MAX_NAME_CHARS));
            return true;
        }
    }
    if slice(&vbr, 0, 4) == b"XFSB" {
        f.hint(Linux, 40, "XFS file system");
        return true;
    }
    let probes: [(u64, &[u8], OsFamily, u32, &str); 5] = [
        (65536 + 64, b"_BHRfS_M", Linux, 40, "Btrfs file system"),
        (4086, b"SWAPSPACE2", Linux, 30, "Linux swap space"),
        (512, b"LABELONE", Linux, 40, "LVM physical volume"),
        (
            8192 + 1372,
            &[0x19, 0x01, 0x54, 0x19],
            Bsd,
            40,
            "UFS file system",
        ),
        (
            65536 + 1372,
            &[0x19, 0x01, 0x54, 0x19],
            Bsd,
            40,
            "UFS2 file system",
        ),
    ];
    for (off, magic, fam, weight, what) in probes {
        let mut b = [0u8; 10];
        let b = &mut b[..magic.len()];
        if off < len && base.checked_add(off).and_then(|o| r.read(o, b)).is_some() && b == magic {
            f.hint(fam, weight, what);
            return true;
        }
    }
    if depth < MAX_NESTING && base != 0 {
        let mut sec16 = [0u8; 8];
        if base
            .checked_add(iso::VD_START)
            .and_then(|o| r.read(o, &mut sec16))
            .is_some()
            && iso::is_iso9660(&sec16)
        {
            f.note("ISO 9660 file system in a partition");
        }
    }
    false
}

/// What a FAT volume holds; returns whether a boot loader file was found.
fn fat_volume(r: &mut Reader<'_>, f: &mut Findings, fs: &FatFs) -> bool {
    let oem = fs.oem.clone();
    f.note(format!("{} volume, OEM name \"{oem}\"", fs.kind.name()));
    match fat::root_label(fs, r) {
        Some(l) => f.set_label(&l),
        None => f.set_label(&fs.bpb_label),
    }
    if oem == "MSDOS5.0" {
        f.hint(
            Dos,
            10,
            "FAT boot sector written by MS-DOS 5+ or Windows NT",
        );
    } else if oem.starts_with("IBM") {
        f.hint(Dos, 20, "FAT boot sector written by PC DOS");
        f.name(Dos, prio::LAYOUT, "PC DOS");
    } else if oem.starts_with("FRDOS") || oem.eq_ignore_ascii_case("FreeDOS") {
        f.hint(Dos, 40, "FAT boot sector written by FreeDOS");
        f.name(Dos, prio::LAYOUT, "FreeDOS");
    }
    let fs_dyn: &dyn FileSystem = fs;
    let mut w = Walker::new(fs_dyn);
    files(r, &mut w, f, Some(&oem))
}

/// What a partitioned (or unpartitioned) disk at `base` holds; returns whether a partition
/// table or file system was found.
pub(crate) fn disk(
    r: &mut Reader<'_>,
    f: &mut Findings,
    base: u64,
    len: u64,
    depth: usize,
) -> bool {
    let Some(s0) = r.array::<512>(base) else {
        return false;
    };
    let mut parts = layout::mbr_partitions(r, base, &s0);
    let mut gpt = false;
    if parts.iter().any(|p| p.kind == PartType::Mbr(0xEE)) {
        match layout::gpt_partitions(r, base) {
            Some(g) => {
                f.note(format!("GPT with {} partitions", g.len()));
                parts = g;
                gpt = true;
            }
            None => f.note("protective MBR but no readable GPT"),
        }
    }
    if parts.is_empty() {
        // An unpartitioned volume ("superfloppy"): bootable when it has a boot loader.
        return volume(r, f, base, len, depth, true);
    }
    for p in parts.iter().take(32) {
        let (desc, hint) = layout::describe(&p.kind);
        let why = match p.kind {
            PartType::Mbr(_) => format!(
                "partition {} {desc}{}",
                p.number,
                if p.active { ", active" } else { "" }
            ),
            PartType::Gpt(_) => format!("GPT partition {}: {desc}", p.number),
        };
        match hint {
            Some((fam, weight, name)) => {
                f.hint(fam, weight, why);
                if let Some(n) = name {
                    f.name(fam, prio::LAYOUT, n);
                }
            }
            None => f.note(why),
        }
    }
    let sig = layout::has_boot_signature(&s0);
    let efi = parts
        .iter()
        .any(|p| layout::is_esp(&p.kind) || layout::is_bios_boot(&p.kind));
    if sig && (parts.iter().any(|p| p.active) || gpt && efi) {
        f.bootable = true;
    }
    let mut order: Vec<&Partition> = parts
        .iter()
        .filter(|p| !matches!(p.kind, PartType::Mbr(0x05 | 0x0F | 0x85 | 0xEE)))
        .collect();
    order.sort_by_key(|p| (!p.active, p.number));
    for p in order.into_iter().take(MAX_VOLUMES) {
        if let Some(start) = base.checked_add(p.start) {
            volume(r, f, start, p.len, depth, false);
        }
    }
    true
}
