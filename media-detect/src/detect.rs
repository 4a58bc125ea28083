//! The top-level decision: CD, floppy, hard disk or not an image at all.

use crate::analyze;
use crate::fat;
use crate::findings::Findings;
use crate::iso;
use crate::layout;
use crate::source::{ReadError, Reader};
use crate::{ImageFormat, MediaKind};

/// Raw image sizes of PC floppy formats (160K to 2.88M, with DMF 1.68M and 1.72M).
pub(crate) const FLOPPY_SIZES: &[u64] = &[
    163_840, 184_320, 327_680, 368_640, 737_280, 1_228_800, 1_474_560, 1_720_320, 1_763_328,
    2_949_120,
];
/// Largest floppy image.
const MAX_FLOPPY: u64 = 2_949_120;
/// Extensions of floppy images.
const FLOPPY_EXTS: &[&str] = &["img", "ima", "flp", "vfd"];
/// Extensions under which a blank (all-zero) file counts as an empty hard disk.
const BLANK_DISK_EXTS: &[&str] = &["img", "raw"];
/// Bytes checked for zeros before calling a raw file a blank disk.
const BLANK_CHECK: usize = 64 << 10;

/// Why detection gave up.
pub(crate) enum Reject {
    /// Not a disk image; the reason.
    NotAnImage(String),
    /// The container could not be read.
    Device(disk::Error),
}

fn read_or_reject(r: &mut Reader<'_>, off: u64, buf: &mut [u8]) -> Result<bool, Reject> {
    match r.try_read(off, buf) {
        Ok(()) => Ok(true),
        Err(ReadError::Device(e)) => Err(Reject::Device(e)),
        Err(_) => Ok(false),
    }
}

/// Decides what the image in `r` is; `ext` is the lowercase file extension.
pub(crate) fn detect(
    r: &mut Reader<'_>,
    format: ImageFormat,
    ext: &str,
) -> Result<(MediaKind, Findings), Reject> {
    let size = r.size();
    let raw = format == ImageFormat::Raw;
    let mut f = Findings::default();
    if raw && size == 0 {
        return Err(Reject::NotAnImage("the file is empty".into()));
    }

    // ISO 9660 / UDF: a volume descriptor at sector 16.
    if raw {
        let mut s16 = [0u8; iso::SECTOR as usize];
        if read_or_reject(r, iso::VD_START, &mut s16)? {
            if iso::is_iso9660(&s16) {
                analyze::iso_image(r, &mut f, 0);
                return Ok((MediaKind::Cdrom, f));
            }
            if iso::is_udf(&s16) {
                f.note("UDF volume recognition sequence (DVD image)");
                return Ok((MediaKind::Cdrom, f));
            }
        }
    }

    let mut s0 = [0u8; 512];
    if !read_or_reject(r, 0, &mut s0)? {
        if raw {
            return Err(Reject::NotAnImage(
                "the file is too small to hold a boot sector".into(),
            ));
        }
        f.note("empty virtual disk");
        return Ok((MediaKind::HardDisk, f));
    }
    let sig = layout::has_boot_signature(&s0);
    let partitioned = layout::mbr_primary(&s0).is_some();
    let fat0 = fat::parse_boot_sector(&s0, 0, size);

    // Floppies: a FAT boot sector on a floppy-sized file, or a boot sector of exactly a
    // floppy's size.
    if raw {
        let floppy_size = FLOPPY_SIZES.contains(&size);
        let floppy_ext = FLOPPY_EXTS.contains(&ext);
        if fat0.is_some() && !partitioned && (floppy_size || floppy_ext && size <= MAX_FLOPPY) {
            analyze::volume(r, &mut f, 0, size, 0, true);
            return Ok((MediaKind::Floppy, f));
        }
        if floppy_size && sig && !partitioned {
            f.note("floppy boot sector without a FAT file system");
            f.bootable = true;
            return Ok((MediaKind::Floppy, f));
        }
        if floppy_size && floppy_ext && s0.iter().all(|&b| b == 0) {
            f.note("blank floppy image");
            return Ok((MediaKind::Floppy, f));
        }
    }

    // A Linux kernel carries a boot sector too (with "HdrS" at 0x202); it is no disk.
    if raw && !partitioned && fat0.is_none() {
        let mut hdr = [0u8; 4];
        if read_or_reject(r, 0x202, &mut hdr)? && &hdr == b"HdrS" {
            return Err(Reject::NotAnImage(
                "it is a Linux kernel (bzImage), not a disk image".into(),
            ));
        }
    }

    // Hard disks: a partition table, a file system, or a boot signature (on a whole number
    // of sectors).
    let found = analyze::disk(r, &mut f, 0, size, 0);
    let sig = sig && (!raw || partitioned || size.is_multiple_of(512));
    if !partitioned && fat0.is_none() && sig {
        f.note("boot sector with the 0x55AA signature");
        f.bootable = s0.iter().take(440).any(|&b| b != 0);
    }
    if found || sig || !raw {
        if !raw && !found && !sig {
            f.note("no partition table (blank virtual disk)");
        }
        return Ok((MediaKind::HardDisk, f));
    }

    if BLANK_DISK_EXTS.contains(&ext) && size >= 1 << 20 && size.is_multiple_of(512) {
        let mut head = vec![0u8; BLANK_CHECK];
        if read_or_reject(r, 0, &mut head)? && head.iter().all(|&b| b == 0) {
            f.note("blank disk image (all zeros)");
            return Ok((MediaKind::HardDisk, f));
        }
    }
    let text = s0
        .iter()
        .take(usize::try_from(size).unwrap_or(512).min(512))
        .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7F).contains(&b) || b >= 0x80);
    Err(Reject::NotAnImage(if text {
        "it looks like a text file".into()
    } else {
        "no ISO 9660 volume, boot sector or partition table found".into()
    }))
}
