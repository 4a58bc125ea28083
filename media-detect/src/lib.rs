//! Says what a file dropped on the app's window is (CD/DVD image, floppy image, hard disk
//! image) and which operating system it holds, so the new-VM wizard can be prefilled.
//!
//! [`probe`] opens the file with the `disk` crate (raw, VHD or qcow2), then looks for an ISO
//! 9660 volume (with its El Torito boot catalog), a floppy's FAT boot sector, or a partition
//! table (MBR or GPT) and the file systems in it. In ISO 9660 and FAT file systems it reads
//! the files that name an OS: boot loader configurations (ISOLINUX/SYSLINUX, GRUB), `.disk/info`,
//! Windows setup files, DOS kernels. [`probe_bytes`] does the same on a memory buffer.
//!
//! Everything read is untrusted: offsets and lengths are checked, reads are capped (64 KiB per
//! file, 1 MiB per directory, path depth 8, a total read budget), and a damaged image gives a
//! partial answer or an error, never a panic.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod analyze;
mod bootcfg;
mod detect;
mod fat;
mod findings;
mod fs;
mod iso;
mod layout;
mod source;

use std::fmt;
use std::path::{Path, PathBuf};

use detect::Reject;
use findings::{clean_text, MAX_NAME_CHARS};
use source::{Reader, Source};

/// What kind of drive the image belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// A CD/DVD image (ISO 9660 or UDF), for an optical drive.
    Cdrom,
    /// A hard disk image.
    HardDisk,
    /// A floppy disk image.
    Floppy,
}

/// Operating-system family (what the VM config stores and the GUI shows an icon for).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Linux distributions.
    Linux,
    /// Microsoft Windows (9x and NT families).
    Windows,
    /// MS-DOS, PC DOS, FreeDOS.
    Dos,
    /// FreeBSD, OpenBSD, NetBSD and relatives.
    Bsd,
    /// A stand-alone memory tester such as memtest86+.
    MemTest,
    /// Anything else, or unknown.
    #[default]
    Other,
}

impl OsFamily {
    /// Every family, in display order.
    pub const ALL: [OsFamily; 6] = [
        OsFamily::Linux,
        OsFamily::Windows,
        OsFamily::Dos,
        OsFamily::Bsd,
        OsFamily::MemTest,
        OsFamily::Other,
    ];

    /// Name shown to users: "Linux", "Windows", "DOS", "BSD", "Memory tester", "Other".
    pub fn label(self) -> &'static str {
        match self {
            OsFamily::Linux => "Linux",
            OsFamily::Windows => "Windows",
            OsFamily::Dos => "DOS",
            OsFamily::Bsd => "BSD",
            OsFamily::MemTest => "Memory tester",
            OsFamily::Other => "Other",
        }
    }

    /// Name of the family's icon: "linux", "windows", "dos", "bsd", "memtest", "other".
    pub fn icon_name(self) -> &'static str {
        match self {
            OsFamily::Linux => "linux",
            OsFamily::Windows => "windows",
            OsFamily::Dos => "dos",
            OsFamily::Bsd => "bsd",
            OsFamily::MemTest => "memtest",
            OsFamily::Other => "other",
        }
    }

    /// Suggested guest memory in MiB.
    pub fn default_memory_mib(self) -> u64 {
        match self {
            OsFamily::Linux => 512,
            OsFamily::Windows => 2048,
            OsFamily::Dos => 32,
            OsFamily::Bsd => 512,
            OsFamily::MemTest => 256,
            OsFamily::Other => 256,
        }
    }

    /// Suggested size of a new hard disk in GiB (0: the VM needs no disk).
    pub fn default_disk_gib(self) -> u64 {
        match self {
            OsFamily::Linux => 8,
            OsFamily::Windows => 32,
            OsFamily::Dos => 1,
            OsFamily::Bsd => 8,
            OsFamily::MemTest => 0,
            OsFamily::Other => 8,
        }
    }
}

impl fmt::Display for OsFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Image container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// An ISO 9660 / UDF image (a raw file holding a CD/DVD).
    Iso,
    /// A raw disk or floppy image.
    Raw,
    /// A VHD (fixed, dynamic or differencing).
    Vhd,
    /// A qcow2 image.
    Qcow2,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// The drive the image belongs in.
    pub kind: MediaKind,
    /// The container format.
    pub format: ImageFormat,
    /// Virtual size in bytes.
    pub size: u64,
    /// The operating system family.
    pub os: OsFamily,
    /// A readable OS name ("Debian GNU/Linux 12.5.0", "Windows 10/11", "memtest86+"), when
    /// one is known.
    pub os_name: Option<String>,
    /// ISO volume id or file system label, trimmed.
    pub volume_label: Option<String>,
    /// Whether firmware can boot it (El Torito catalog, boot signature with an active
    /// partition or a boot loader).
    pub bootable: bool,
    /// Short human-readable reasons, e.g. "isolinux/isolinux.cfg boots /boot/vmlinuz".
    pub evidence: Vec<String>,
    /// A VM name derived from the OS name, label or file name; never empty.
    pub suggested_name: String,
}

/// Why [`probe`] gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The file can't be read.
    #[error("cannot read {}: {}", .path.display(), io_text(.source))]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Not a disk, CD or floppy image.
    #[error(
        "{} is not a disk image: drop an ISO, VHD, qcow2, raw disk or floppy image",
        .path.display()
    )]
    NotAnImage {
        /// The file.
        path: PathBuf,
        /// Why it was not taken for one ("it looks like a text file").
        reason: String,
    },
    /// The image container (VHD, qcow2) is damaged; the message names the file.
    #[error("{}", image_text(.0))]
    Image(disk::Error),
}

/// An I/O error's text without the "(os error N)" suffix.
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

fn image_text(e: &disk::Error) -> String {
    match e.path() {
        Some(_) => e.to_string(),
        None => format!("damaged disk image: {e}"),
    }
}

fn disk_error(path: &Path, e: disk::Error) -> ProbeError {
    match e {
        disk::Error::Io { err, .. } => ProbeError::Io {
            path: path.to_path_buf(),
            source: err,
        },
        disk::Error::InvalidArgument(msg) => ProbeError::Image(disk::Error::Invalid {
            path: path.to_path_buf(),
            msg,
        }),
        e => ProbeError::Image(e),
    }
}

fn format_of(f: disk::Format) -> ImageFormat {
    match f {
        disk::Format::Qcow2 => ImageFormat::Qcow2,
        disk::Format::Raw => ImageFormat::Raw,
        _ => ImageFormat::Vhd,
    }
}

/// Says what the image file at `path` is and which OS it holds.
pub fn probe(path: &Path) -> Result<MediaInfo, ProbeError> {
    let io = |source| ProbeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_image = |reason: &str| ProbeError::NotAnImage {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(not_image("it is a folder"));
    }
    if !meta.is_file() {
        return Err(not_image("it is not a regular file"));
    }
    std::fs::File::open(path).map_err(io)?;
    let dev = disk::open(path, &disk::OpenOptions::read_only()).map_err(|e| disk_error(path, e))?;
    let format = format_of(dev.info().format);
    let mut src = dev;
    run(&mut src, format, path)
}

/// Same as [`probe`] on an in-memory image (tests, fuzzing); `name` is used for suggestions
/// and messages.
pub fn probe_bytes(name: &str, bytes: &[u8]) -> Result<MediaInfo, ProbeError> {
    let path = Path::new(name);
    let vhd_footer = bytes.len() >= 512 && bytes[bytes.len() - 512..].starts_with(b"conectix");
    if bytes.starts_with(b"QFI\xfb") || bytes.starts_with(b"conectix") || vhd_footer {
        let st = disk::MemStorage::new(bytes.to_vec(), bytes.len() as u64);
        let mut no_backing = |n: &str| -> disk::Result<Box<dyn disk::BlockDevice>> {
            Err(disk::Error::InvalidArgument(format!(
                "the backing image \"{n}\" is not available for an in-memory image"
            )))
        };
        let dev = disk::open_memory(st, path, &disk::OpenOptions::read_only(), &mut no_backing)
            .map_err(|e| disk_error(path, e))?;
        let format = format_of(dev.info().format);
        let mut src = dev;
        return run(&mut src, format, path);
    }
    let mut src: &[u8] = bytes;
    run(&mut src, ImageFormat::Raw, path)
}

fn run(src: &mut dyn Source, format: ImageFormat, path: &Path) -> Result<MediaInfo, ProbeError> {
    let size = src.size();
    let mut r = Reader::new(src);
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let (kind, f) = match detect::detect(&mut r, format, &ext) {
        Ok(found) => found,
        Err(Reject::Device(e)) => return Err(disk_error(path, e)),
        Err(Reject::NotAnImage(reason)) => {
            if let Some(e) = r.device_error.take() {
                return Err(disk_error(path, e));
            }
            return Err(ProbeError::NotAnImage {
                path: path.to_path_buf(),
                reason,
            });
        }
    };
    let (os, os_name) = f.decide();
    let format = if kind == MediaKind::Cdrom && format == ImageFormat::Raw {
        ImageFormat::Iso
    } else {
        format
    };
    let suggested_name = suggest_name(os_name.as_deref(), f.label.as_deref(), path);
    let info = MediaInfo {
        kind,
        format,
        size,
        os,
        os_name,
        volume_label: f.label,
        bootable: f.bootable,
        evidence: f.evidence,
        suggested_name,
    };
    tracing::debug!(
        "media-detect: {}: {:?} {:?} {:?} {:?}",
        path.display(),
        info.kind,
        info.format,
        info.os,
        info.os_name
    );
    Ok(info)
}

/// Labels that say nothing about the contents.
const GENERIC_LABELS: &[&str] = &[
    "CDROM",
    "CD_ROM",
    "CD",
    "DVD",
    "DISK",
    "BOOT",
    "NO NAME",
    "UNTITLED",
    "NEW VOLUME",
    "ISOIMAGE",
    "VOLUME",
    "EFI",
    "ESP",
    "CDROM1",
];

fn suggest_name(os_name: Option<&str>, label: Option<&str>, path: &Path) -> String {
    if let Some(n) = os_name.filter(|n| !n.is_empty()) {
        return n.to_string();
    }
    if let Some(l) = label.filter(|l| !GENERIC_LABELS.iter().any(|g| g.eq_ignore_ascii_case(l))) {
        return l.to_string();
    }
    let stem = path
        .file_stem()
        .map(|s| clean_text(&s.to_string_lossy(), MAX_NAME_CHARS))
        .unwrap_or_default();
    if stem.is_empty() {
        "New virtual machine".to_string()
    } else {
        stem
    }
}

#[cfg(test)]
mod tests;
