//! Whole-image operations: create, overlays, commit, convert, info.

use std::fs;
use std::path::{Path, PathBuf};

use crate::qcow2::{self, Qcow2Options};
use crate::storage::{FileStorage, Storage};
use crate::vhd::{self, ParentRef};
use crate::{
    align_up, open, raw, BlockDevice, Error, ExtentKind, Format, ImageInfo, OpenOptions, Result,
};

/// What [`create`] makes.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Raw, VhdFixed, VhdDynamic, VhdDifferencing (needs `backing`) or Qcow2.
    pub format: Format,
    /// Virtual size in bytes; VHD and qcow2 round it up to a multiple of 512. Optional with a
    /// backing file (then the backing file's size).
    pub size: Option<u64>,
    /// Backing file (qcow2) or parent (VHD, which makes a differencing disk).
    pub backing: Option<PathBuf>,
    /// qcow2 version: 3 (default) or 2.
    pub qcow2_version: u32,
    /// qcow2 cluster size (default 64 KiB).
    pub cluster_size: u32,
}

impl CreateOptions {
    /// An image of `format` and `size` bytes with qcow2 defaults (v3, 64 KiB clusters).
    pub fn new(format: Format, size: u64) -> Self {
        Self {
            format,
            size: Some(size),
            backing: None,
            qcow2_version: 3,
            cluster_size: qcow2::DEFAULT_CLUSTER_SIZE,
        }
    }
}

/// Creates a new image file at `path`; an existing file is never overwritten.
pub fn create(path: &Path, o: &CreateOptions) -> Result<()> {
    let mut backing_info: Option<ImageInfo> = None;
    if let Some(b) = &o.backing {
        let dev = open(b, &OpenOptions::read_only())?;
        backing_info = Some(dev.info());
    }
    let size = match (o.size, &backing_info) {
        (Some(s), _) => s,
        (None, Some(b)) => b.virtual_size,
        (None, None) => {
            return Err(Error::InvalidArgument(format!(
                "{}: give a size for the new image (or a backing file to take it from)",
                path.display()
            )))
        }
    };
    let size = if o.format == Format::Raw {
        size
    } else {
        align_up(size, 512).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: size {size} is too large", path.display()))
        })?
    };
    if backing_info.is_some() && matches!(o.format, Format::Raw | Format::VhdFixed) {
        return Err(Error::InvalidArgument(format!(
            "{}: {} images cannot have a backing file; use qcow2 or vhd",
            path.display(),
            o.format
        )));
    }
    if o.format == Format::VhdDifferencing && backing_info.is_none() {
        return Err(Error::InvalidArgument(format!(
            "{}: a differencing VHD needs a parent (--backing)",
            path.display()
        )));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::io(
                    path,
                    "already exists; remove it first or pick another name",
                    e,
                )
            } else {
                Error::io(path, "cannot create", e)
            }
        })?;
    let mut st = FileStorage::new(file);
    let r = create_in(&mut st, path, o, size, backing_info.as_ref());
    let r = r.and_then(|()| st.sync().map_err(|e| Error::io(path, "flush failed", e)));
    if r.is_err() {
        let _ = fs::remove_file(path);
    }
    r
}

fn create_in(
    st: &mut FileStorage,
    path: &Path,
    o: &CreateOptions,
    size: u64,
    backing: Option<&ImageInfo>,
) -> Result<()> {
    match o.format {
        Format::Raw => raw::Raw::create(st, path, size),
        Format::VhdFixed => vhd::create_fixed(st, path, size),
        Format::VhdDynamic | Format::VhdDifferencing => match backing {
            None => vhd::create_dynamic(st, path, size),
            Some(b) => {
                let parent = vhd_parent_ref(path, b)?;
                vhd::create_sparse(st, path, size, Some(&parent))
            }
        },
        Format::Qcow2 => {
            let backing = match backing {
                None => None,
                Some(b) => {
                    let fmt = match b.format {
                        Format::Raw => "raw",
                        Format::Qcow2 => "qcow2",
                        _ => "vpc",
                    };
                    Some((backing_reference(path, &b.path)?, fmt.to_string()))
                }
            };
            let q = Qcow2Options {
                version: o.qcow2_version,
                cluster_size: o.cluster_size,
                backing,
            };
            qcow2::create(st, path, size, &q)
        }
    }
}

fn canonical_dir_of(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::canonicalize(dir).map_err(|e| Error::io(dir, "cannot resolve directory", e))
}

/// How a new image refers to its backing file: the bare name when both share a directory
/// (so the pair can move together), else the absolute path.
fn backing_reference(image: &Path, backing: &Path) -> Result<String> {
    let canon = fs::canonicalize(backing).map_err(|e| Error::io(backing, "cannot open", e))?;
    let dir = canonical_dir_of(image)?;
    let s = match canon.strip_prefix(&dir) {
        Ok(rel) if rel.components().count() == 1 => rel.display().to_string(),
        _ => canon.display().to_string(),
    };
    Ok(s)
}

fn vhd_parent_ref(child: &Path, parent: &ImageInfo) -> Result<ParentRef> {
    if !parent.format.is_vhd() {
        return Err(Error::InvalidArgument(format!(
            "{}: a differencing VHD needs a VHD parent, and {} is {}; use qcow2 for the overlay",
            child.display(),
            parent.path.display(),
            parent.format
        )));
    }
    let canon =
        fs::canonicalize(&parent.path).map_err(|e| Error::io(&parent.path, "cannot open", e))?;
    let file = fs::File::open(&canon).map_err(|e| Error::io(&parent.path, "cannot open", e))?;
    let mtime = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut st = FileStorage::new(file);
    let (uuid, _) = vhd::identity(&mut st, &parent.path)?;
    let dir = canonical_dir_of(child)?;
    let name = canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ParentRef {
        uuid,
        mtime,
        name,
        absolute: vhd::locator_text(&canon, false),
        relative: vhd::locator_text(&vhd::relative_path(&dir, &canon), true),
    })
}

/// Creates `overlay`, an empty image whose unwritten parts read from `base`: a qcow2 image
/// with `base` as backing file (`format` Qcow2), or a differencing VHD (`format` VhdDynamic or
/// VhdDifferencing; `base` must be a VHD). Snapshots and undo disks write to the overlay and
/// leave `base` untouched.
pub fn create_overlay(base: &Path, overlay: &Path, format: Format) -> Result<()> {
    let format = match format {
        Format::Qcow2 => Format::Qcow2,
        Format::VhdDynamic | Format::VhdDifferencing => Format::VhdDifferencing,
        f => {
            return Err(Error::InvalidArgument(format!(
                "{}: overlays are qcow2 or vhd, not {f}",
                overlay.display()
            )))
        }
    };
    let mut o = CreateOptions::new(format, 0);
    o.size = None;
    o.backing = Some(base.to_path_buf());
    create(overlay, &o)
}

const COPY_CHUNK: u64 = 1 << 20;

/// Merges everything `overlay` holds (its written data and zeroed ranges) into its backing
/// image, which is opened read-write. The overlay itself is left as it was (its contents now
/// equal the base's in every range it holds); delete or recreate it afterwards. `progress` gets
/// (bytes done, total bytes).
pub fn commit(overlay: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let mut top = open(overlay, &OpenOptions::read_only())?;
    let info = top.info();
    let Some(base_info) = info.backing else {
        return Err(Error::InvalidArgument(format!(
            "{}: has no backing file, so there is nothing to commit into",
            overlay.display()
        )));
    };
    let mut base = open(
        &base_info.path,
        &OpenOptions {
            read_only: false,
            format: Some(base_info.format),
        },
    )?;
    let size = top.size();
    if size > base.size() {
        return Err(Error::InvalidArgument(format!(
            "{}: is larger ({size} bytes) than its base {} ({} bytes); commit would lose data",
            overlay.display(),
            base_info.path.display(),
            base.size()
        )));
    }
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    let mut pos = 0u64;
    progress(0, size);
    while pos < size {
        let ext = top.extent(pos, COPY_CHUNK.min(size - pos))?;
        let len = ext.len.max(1).min(size - pos);
        let chunk = &mut buf[..len as usize];
        match ext.kind {
            ExtentKind::Data => {
                top.read_at(pos, chunk)?;
                base.write_at(pos, chunk)?;
            }
            ExtentKind::Zero => {
                chunk.fill(0);
                base.write_at(pos, chunk)?;
            }
            ExtentKind::Backing => {}
        }
        pos += len;
        progress(pos, size);
    }
    base.flush()
}

/// What the whole chain under `dev` holds at `offset`: `Data` or `Zero` (never `Backing`).
fn chain_extent(dev: &mut dyn BlockDevice, offset: u64, max_len: u64) -> Result<(ExtentKind, u64)> {
    let e = dev.extent(offset, max_len)?;
    let len = e.len.max(1).min(max_len);
    if e.kind != ExtentKind::Backing {
        return Ok((e.kind, len));
    }
    match dev.backing_mut() {
        None => Ok((ExtentKind::Zero, len)),
        Some(b) => {
            let bsize = b.size();
            if offset >= bsize {
                Ok((ExtentKind::Zero, len))
            } else {
                chain_extent(b, offset, len.min(bsize - offset))
            }
        }
    }
}

/// Copies the disk in `src` (its whole chain, flattened) to a new image `dst` of `format`,
/// writing only ranges that hold non-zero data. `progress` gets (bytes done, total bytes).
pub fn convert(
    src: &Path,
    dst: &Path,
    format: Format,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    if format == Format::VhdDifferencing {
        return Err(Error::InvalidArgument(format!(
            "{}: convert makes standalone images; use vhd, vhd-fixed, qcow2 or raw",
            dst.display()
        )));
    }
    let mut s = open(src, &OpenOptions::read_only())?;
    let size = s.size();
    create(dst, &CreateOptions::new(format, size))?;
    let r = copy_into(s.as_mut(), dst, format, size, progress);
    if r.is_err() {
        let _ = fs::remove_file(dst);
    }
    r
}

fn copy_into(
    s: &mut dyn BlockDevice,
    dst: &Path,
    format: Format,
    size: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let mut d = open(
        dst,
        &OpenOptions {
            read_only: false,
            format: Some(format),
        },
    )?;
    const PIECE: usize = 64 << 10;
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    let mut pos = 0u64;
    progress(0, size);
    while pos < size {
        let (kind, len) = chain_extent(s, pos, COPY_CHUNK.min(size - pos))?;
        if kind == ExtentKind::Data {
            let chunk = &mut buf[..len as usize];
            s.read_at(pos, chunk)?;
            let mut i = 0usize;
            while i < chunk.len() {
                let n = PIECE.min(chunk.len() - i);
                let piece = &chunk[i..i + n];
                if piece.iter().any(|&b| b != 0) {
                    d.write_at(pos + i as u64, piece)?;
                }
                i += n;
            }
        }
        pos += len;
        progress(pos, size);
    }
    d.flush()
}

/// Format, sizes and backing chain of the image at `path`.
pub fn info(path: &Path) -> Result<ImageInfo> {
    Ok(open(path, &OpenOptions::read_only())?.info())
}
