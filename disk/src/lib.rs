//! Disk image formats behind one block-device trait.
//!
//! [`open`] detects the format of a file (qcow2 by its magic, VHD by its `conectix` footer,
//! anything else is raw) and opens its whole backing chain: qcow2 backing files and VHD
//! differencing parents, each read-only. Every format works on a [`Storage`], so the same parsers
//! run on host files and on memory buffers (tests and fuzzing).
//!
//! Image files are untrusted input: every size and offset read from a header is checked before
//! it is used, and a bad image gives an [`Error`] naming the file, never a panic.
//!
//! Writes reach the file in dependency order (new data before the table entry that points at
//! it, reference counts before the reference, the VHD footer last), so a process that dies
//! mid-write leaves at worst leaked space; [`BlockDevice::flush`] makes everything written so
//! far durable, like a disk's cache flush.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bytes;
mod error;
pub mod fuzz;
mod ops;
pub mod qcow2;
pub mod raw;
mod storage;
pub mod vhd;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use error::{Error, Result};
pub use ops::{commit, convert, create, create_overlay, info, CreateOptions};
pub use storage::{FileStorage, MemStorage, Storage};

/// The longest backing chain [`open`] follows.
pub const MAX_CHAIN_DEPTH: usize = 32;

/// An image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A flat file, byte for byte the disk.
    Raw,
    /// VHD with the whole disk stored up front and a footer at the end.
    VhdFixed,
    /// Sparse VHD (blocks allocated on first write).
    VhdDynamic,
    /// Sparse VHD whose unwritten sectors come from a parent VHD.
    VhdDifferencing,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
}

impl Format {
    /// The name used on the command line and in [`ImageInfo`] output.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::VhdFixed => "vhd-fixed",
            Format::VhdDynamic => "vhd",
            Format::VhdDifferencing => "vhd-differencing",
            Format::Qcow2 => "qcow2",
        }
    }

    /// True for the three VHD variants.
    pub fn is_vhd(self) -> bool {
        matches!(
            self,
            Format::VhdFixed | Format::VhdDynamic | Format::VhdDifferencing
        )
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "raw" | "img" => Format::Raw,
            "vhd" | "vpc" | "vhd-dynamic" => Format::VhdDynamic,
            "vhd-fixed" => Format::VhdFixed,
            "vhd-differencing" => Format::VhdDifferencing,
            "qcow2" => Format::Qcow2,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown image format `{s}`; use raw, vhd, vhd-fixed or qcow2"
                )))
            }
        })
    }
}

/// How [`open`] opens an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Refuse writes (backing images are always opened this way).
    pub read_only: bool,
    /// Skip detection and open as this format. A VM should record the format of its disks and
    /// pass it here: a raw disk whose guest wrote a qcow2 header must stay raw.
    pub format: Option<Format>,
}

impl OpenOptions {
    /// Read-write, format detected.
    pub fn read_write() -> Self {
        Self::default()
    }

    /// Read-only, format detected.
    pub fn read_only() -> Self {
        Self {
            read_only: true,
            format: None,
        }
    }
}

/// What an image is, as [`info`] and [`BlockDevice::info`] report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The file (as given, or as resolved for backing files).
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// Length of the file.
    pub file_size: u64,
    /// Bytes the file occupies on the host (less than `file_size` when sparse).
    pub allocated_bytes: u64,
    /// qcow2 cluster size or VHD block size.
    pub cluster_size: Option<u64>,
    /// qcow2 version.
    pub format_version: Option<u32>,
    /// The backing file or parent as the image records it.
    pub backing_file: Option<String>,
    /// The opened backing image, if any.
    pub backing: Option<Box<ImageInfo>>,
    /// The VHD footer's unique id (a differencing disk records its parent's).
    pub unique_id: Option<[u8; 16]>,
}

/// What a range of the virtual disk holds in one image of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Stored in this image.
    Data,
    /// Reads as zeros, as this image says (unallocated without a backing image, or a zero
    /// cluster).
    Zero,
    /// Not in this image: reads come from the backing image.
    Backing,
}

/// A run of the virtual disk with one [`ExtentKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// What the run holds.
    pub kind: ExtentKind,
    /// Its length in bytes (at least 1 when asked about a non-empty range inside the disk).
    pub len: u64,
}

/// A virtual disk backed by an image file (or a chain of them).
pub trait BlockDevice: Send {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// True if writes are refused.
    fn read_only(&self) -> bool;
    /// Fills `buf` from virtual byte `offset`; any alignment is allowed.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `buf` at virtual byte `offset`; any alignment is allowed.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()>;
    /// Makes every earlier write durable on the host (fsync).
    fn flush(&mut self) -> Result<()>;
    /// Format, sizes and backing chain.
    fn info(&self) -> ImageInfo;
    /// What this image (not its backing chain) holds from `offset` for at most `max_len` bytes.
    fn extent(&mut self, offset: u64, max_len: u64) -> Result<Extent>;
    /// The backing image, if this image has one.
    fn backing_mut(&mut self) -> Option<&mut dyn BlockDevice>;
}

/// What a format asks for when it needs its backing image.
#[derive(Debug)]
pub(crate) enum BackingRequest<'a> {
    /// A file named in the image (qcow2), relative to the image's directory unless absolute.
    Named {
        name: &'a str,
        format: Option<Format>,
    },
    /// VHD parent locations, best first: absolute paths or paths relative to the child's
    /// directory, with `\` or `/` separators.
    VhdParent { candidates: &'a [String] },
}

/// Opens backing images for a format's `open`.
pub(crate) type Resolver<'r> = dyn FnMut(BackingRequest<'_>) -> Result<Box<dyn BlockDevice>> + 'r;

/// Opens the image at `path` with its backing chain.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn BlockDevice>> {
    let mut chain = Vec::new();
    open_in_chain(path, opts, &mut chain)
}

fn open_in_chain(
    path: &Path,
    opts: &OpenOptions,
    chain: &mut Vec<PathBuf>,
) -> Result<Box<dyn BlockDevice>> {
    let canon = std::fs::canonicalize(path).map_err(|e| Error::io(path, "cannot open", e))?;
    if chain.contains(&canon) {
        let referrer = chain.last().cloned().unwrap_or_else(|| path.to_path_buf());
        return Err(Error::BackingLoop {
            path: referrer,
            again: path.to_path_buf(),
            chain: chain.clone(),
        });
    }
    if chain.len() >= MAX_CHAIN_DEPTH {
        return Err(Error::ChainTooDeep {
            path: path.to_path_buf(),
            max: MAX_CHAIN_DEPTH,
        });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!opts.read_only)
        .open(path)
        .map_err(|e| {
            let what = if opts.read_only {
                "cannot open"
            } else {
                "cannot open for writing (pass read-only to only read it)"
            };
            Error::io(path, what, e)
        })?;
    let dir = canon.parent().map(Path::to_path_buf).unwrap_or_default();
    chain.push(canon);
    let result = {
        let mut resolver = |req: BackingRequest<'_>| -> Result<Box<dyn BlockDevice>> {
            let (p, format) = resolve_backing(path, &dir, &req)?;
            let o = OpenOptions {
                read_only: true,
                format,
            };
            open_in_chain(&p, &o, chain)
        };
        open_storage(FileStorage::new(file), path, opts, &mut resolver)
    };
    chain.pop();
    result
}

fn resolve_backing(
    child: &Path,
    dir: &Path,
    req: &BackingRequest<'_>,
) -> Result<(PathBuf, Option<Format>)> {
    match req {
        BackingRequest::Named { name, format } => {
            let p = Path::new(name);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            };
            Ok((p, *format))
        }
        BackingRequest::VhdParent { candidates } => {
            let mut tried = Vec::new();
            for c in candidates.iter() {
                let native = if std::path::MAIN_SEPARATOR == '/' {
                    c.replace('\\', "/")
                } else {
                    c.clone()
                };
                let p = Path::new(&native);
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    dir.join(p.strip_prefix("./").unwrap_or(p))
                };
                if p.is_file() {
                    return Ok((p, None));
                }
                tried.push(p.display().to_string());
            }
            Err(Error::invalid(
                child,
                format!(
                    "the parent of this differencing VHD is missing (looked for {}); put the \
                     parent image back at that path",
                    if tried.is_empty() {
                        "no recorded location".to_string()
                    } else {
                        tried.join(", ")
                    }
                ),
            ))
        }
    }
}

/// The format a store's first and last sectors suggest.
pub(crate) fn detect(st: &mut dyn Storage, path: &Path) -> Result<Format> {
    let len = st.len().map_err(|e| Error::io(path, "cannot read", e))?;
    let mut head = [0u8; 512];
    storage::read_zero_fill(st, 0, &mut head).map_err(|e| Error::io(path, "read failed", e))?;
    if head[..4] == qcow2::MAGIC {
        return Ok(Format::Qcow2);
    }
    if &head[..8] == vhd::COOKIE {
        return Ok(Format::VhdDynamic);
    }
    if len >= 512 {
        let mut tail = [0u8; 512];
        storage::read_exact(st, len - 512, &mut tail)
            .map_err(|e| Error::io(path, "read failed", e))?;
        if &tail[..8] == vhd::COOKIE {
            return Ok(Format::VhdFixed);
        }
    }
    Ok(Format::Raw)
}

/// Opens an image held in `st`; `path` names it in messages and `resolver` supplies backing
/// images.
pub(crate) fn open_storage<S: Storage + 'static>(
    mut st: S,
    path: &Path,
    opts: &OpenOptions,
    resolver: &mut Resolver<'_>,
) -> Result<Box<dyn BlockDevice>> {
    let format = match opts.format {
        Some(f) => f,
        None => detect(&mut st, path)?,
    };
    Ok(match format {
        Format::Raw => Box::new(raw::Raw::open(st, path, opts.read_only)?),
        Format::Qcow2 => Box::new(qcow2::Qcow2::open(st, path, opts.read_only, resolver)?),
        Format::VhdFixed | Format::VhdDynamic | Format::VhdDifferencing => {
            Box::new(vhd::Vhd::open(st, path, opts.read_only, resolver)?)
        }
    })
}

/// Opens an image held in memory. Backing references are answered by `backing`, which gets
/// the recorded name (qcow2) or parent locations (VHD).
pub fn open_memory(
    st: MemStorage,
    name: &Path,
    opts: &OpenOptions,
    backing: &mut dyn FnMut(&str) -> Result<Box<dyn BlockDevice>>,
) -> Result<Box<dyn BlockDevice>> {
    let mut resolver = |req: BackingRequest<'_>| -> Result<Box<dyn BlockDevice>> {
        match req {
            BackingRequest::Named { name, .. } => backing(name),
            BackingRequest::VhdParent { candidates } => {
                backing(candidates.first().map(String::as_str).unwrap_or(""))
            }
        }
    };
    open_storage(st, name, opts, &mut resolver)
}

/// `Ok` if `len` bytes at `offset` lie inside a disk of `size` bytes.
pub(crate) fn check_range(path: &Path, offset: u64, len: usize, size: u64) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange {
            path: path.to_path_buf(),
            offset,
            len: len as u64,
            size,
        }),
    }
}

/// Reads from a backing image; whatever lies past its end (or everything, without one) reads
/// as zeros.
pub(crate) fn read_backing(
    backing: Option<&mut Box<dyn BlockDevice>>,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    match backing {
        None => buf.fill(0),
        Some(b) => {
            let bsize = b.size();
            if offset >= bsize {
                buf.fill(0);
            } else {
                let n =
                    usize::try_from((bsize - offset).min(buf.len() as u64)).unwrap_or(buf.len());
                b.read_at(offset, &mut buf[..n])?;
                buf[n..].fill(0);
            }
        }
    }
    Ok(())
}

/// Rounds `v` up to a multiple of the power of two `align`; `None` on overflow.
pub(crate) fn align_up(v: u64, align: u64) -> Option<u64> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
