//! VHD images (Virtual PC / Hyper-V "Virtual Hard Disk Image Format Specification"): fixed,
//! dynamic and differencing.
//!
//! Fixed: the disk, then a 512-byte footer. Dynamic and differencing: a footer copy at 0, the
//! dynamic header at 512, the block allocation table (BAT), then blocks (a sector bitmap
//! followed by the block's data), then the footer. A new block goes where the footer was; the
//! footer moves to the new end of the file. In a differencing disk a clear bitmap bit means
//! "read this sector from the parent"; dynamic disks set every bit of a new block.

use crate::bytes::{be16, be32, be64, put};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::storage::{read_exact, read_zero_fill, Storage};
use crate::{
    align_up, check_range, read_backing, BackingRequest, BlockDevice, Error, Extent, ExtentKind,
    Format, ImageInfo, Resolver, Result,
};

/// The footer's cookie.
pub const COOKIE: &[u8; 8] = b"conectix";
const DYN_COOKIE: &[u8; 8] = b"cxsparse";
const FOOTER_SIZE: usize = 512;
const DYN_HEADER_SIZE: usize = 1024;
const TYPE_FIXED: u32 = 2;
const TYPE_DYNAMIC: u32 = 3;
const TYPE_DIFFERENCING: u32 = 4;
const BAT_UNUSED: u32 = u32::MAX;
/// Largest virtual disk: 0xFF000000 sectors (2040 GiB), the limit Hyper-V and QEMU apply.
pub const MAX_SIZE: u64 = 0xff00_0000 * 512;
/// Sectors of the largest CHS geometry (65535 cylinders, 16 heads, 255 sectors per track).
const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;
/// Block size of the dynamic disks this crate creates.
pub const DEFAULT_BLOCK_SIZE: u32 = 2 << 20;
const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Creator application written into new images.
const CREATOR_APP: &[u8; 4] = b"trrm";
/// The VHD epoch, 2000-01-01 00:00:00 UTC, in Unix seconds.
const VHD_EPOCH: u64 = 946_684_800;
const PLAT_W2KU: u32 = u32::from_be_bytes(*b"W2ku");
const PLAT_W2RU: u32 = u32::from_be_bytes(*b"W2ru");
const PLAT_MACX: u32 = u32::from_be_bytes(*b"MacX");
/// Longest parent locator this crate reads.
const MAX_LOCATOR_LEN: u32 = 64 << 10;
/// Block data starts on this boundary in the files this crate writes.
const DATA_ALIGN: u64 = 4096;

/// One's complement of the byte sum, with the 4-byte checksum field at `skip` counted as zero.
fn checksum(buf: &[u8], skip: usize) -> u32 {
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |a, (_, &b)| a.wrapping_add(u32::from(b)));
    !sum
}

/// Gives the VHD at `path` the unique id `uuid` (in its footer and, for dynamic and
/// differencing disks, the footer's copy at the start), keeping the checksums valid. Used when
/// a merged layer takes the place of the layer that differencing disks were made from: they
/// check their parent by this id.
pub fn set_unique_id(path: &Path, uuid: [u8; 16]) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let err = |what: &str, e: std::io::Error| Error::io(path, what.to_string(), e);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| err("cannot open", e))?;
    let len = f.metadata().map_err(|e| err("cannot stat", e))?.len();
    if len < FOOTER_SIZE as u64 {
        return Err(Error::invalid(path, "too short for a VHD footer"));
    }
    let mut footer = [0u8; FOOTER_SIZE];
    f.seek(SeekFrom::Start(len - FOOTER_SIZE as u64))
        .and_then(|_| f.read_exact(&mut footer))
        .map_err(|e| err("read failed", e))?;
    if &footer[..8] != COOKIE {
        return Err(Error::invalid(path, "no VHD footer"));
    }
    put(&mut footer, 68, &uuid);
    let sum = checksum(&footer, 64);
    put(&mut footer, 64, &sum.to_be_bytes());
    let sparse = matches!(be32(&footer, 60), 3 | 4);
    let mut places = vec![len - FOOTER_SIZE as u64];
    if sparse {
        places.push(0);
    }
    for at in places {
        f.seek(SeekFrom::Start(at))
            .and_then(|_| f.write_all(&footer))
            .map_err(|e| err("write failed", e))?;
    }
    f.sync_data().map_err(|e| err("sync failed", e))
}

/// CHS geometry for a disk of `total_sectors`, by the algorithm in the VHD specification:
/// (cylinders, heads, sectors per track).
pub fn chs_geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(MAX_GEOMETRY_SECTORS);
    let (spt, heads, cyl_times_heads);
    if total >= 65535 * 16 * 63 {
        spt = 255u64;
        heads = 16u64;
        cyl_times_heads = total / spt;
    } else {
        let mut s = 17u64;
        let mut cth = total / s;
        let mut h = cth.div_ceil(1024).max(4);
        if cth >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            cth = total / s;
        }
        if cth >= h * 1024 {
            s = 63;
            h = 16;
            cth = total / s;
        }
        spt = s;
        heads = h;
        cyl_times_heads = cth;
    }
    let cyl = cyl_times_heads / heads;
    (
        u16::try_from(cyl).unwrap_or(u16::MAX),
        u8::try_from(heads).unwrap_or(16),
        u8::try_from(spt).unwrap_or(255),
    )
}

/// The virtual size a footer describes. Images made by Virtual PC (`vpc `) and older QEMU
/// (`qemu`) are sized by their CHS geometry, unless that geometry is the maximum (then it
/// cannot describe the disk); every other creator (Hyper-V `win `, QEMU `qem2`, Disk2vhd,
/// XenServer, Azure, Terrarium) is sized by the footer's current size. This is the rule
/// QEMU's `vpc` driver applies, so both report the same size.
fn footer_disk_size(f: &[u8]) -> u64 {
    let chs = u64::from(be16(f, 56)) * u64::from(f[58]) * u64::from(f[59]);
    let app = &f[28..32];
    let use_chs = app == b"vpc " || app == b"qemu";
    if !use_chs || chs == MAX_GEOMETRY_SECTORS {
        be64(f, 48) / 512 * 512
    } else {
        chs * 512
    }
}

fn random_uuid() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::unix_now());
        h.write_u32(std::process::id());
        h.write_usize(i);
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u32(d.subsec_nanos());
        }
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

fn vhd_timestamp(unix: u64) -> u32 {
    u32::try_from(unix.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX)
}

fn build_footer(size: u64, disk_type: u32, data_offset: u64, uuid: [u8; 16]) -> [u8; 512] {
    let mut f = [0u8; FOOTER_SIZE];
    put(&mut f, 0, COOKIE);
    put(&mut f, 8, &2u32.to_be_bytes());
    put(&mut f, 12, &0x0001_0000u32.to_be_bytes());
    put(&mut f, 16, &data_offset.to_be_bytes());
    put(&mut f, 24, &vhd_timestamp(crate::unix_now()).to_be_bytes());
    put(&mut f, 28, CREATOR_APP);
    put(&mut f, 32, &0x0001_0000u32.to_be_bytes());
    put(&mut f, 36, b"Wi2k");
    put(&mut f, 40, &size.to_be_bytes());
    put(&mut f, 48, &size.to_be_bytes());
    let (c, h, s) = chs_geometry(size / 512);
    put(&mut f, 56, &c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    put(&mut f, 60, &disk_type.to_be_bytes());
    put(&mut f, 68, &uuid);
    let sum = checksum(&f, 64);
    put(&mut f, 64, &sum.to_be_bytes());
    f
}

/// What a differencing disk records about its parent.
#[derive(Debug, Clone)]
pub(crate) struct ParentRef {
    /// The parent footer's unique id.
    pub uuid: [u8; 16],
    /// The parent's modification time in Unix seconds.
    pub mtime: u64,
    /// File name (for the header's parent name field).
    pub name: String,
    /// Absolute path (W2ku locator).
    pub absolute: String,
    /// Path relative to the child's directory (W2ru locator).
    pub relative: String,
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn from_utf16(b: &[u8], big_endian: bool) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| {
            if big_endian {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn check_size(path: &Path, size: u64) -> Result<()> {
    if size == 0 || !size.is_multiple_of(512) || size > MAX_SIZE {
        return Err(Error::InvalidArgument(format!(
            "{}: a VHD's size must be a non-zero multiple of 512 bytes up to 2040 GiB, not {size}",
            path.display()
        )));
    }
    Ok(())
}

/// Writes a fixed VHD of `size` bytes into `st` (sparse where the host allows).
pub fn create_fixed<S: Storage>(st: &mut S, path: &Path, size: u64) -> Result<()> {
    check_size(path, size)?;
    let footer = build_footer(size, TYPE_FIXED, u64::MAX, random_uuid());
    st.set_len(size)
        .and_then(|()| st.write_at(size, &footer))
        .map_err(|e| Error::io(path, "cannot write the image", e))
}

/// Writes an empty dynamic VHD of `size` bytes into `st`.
pub fn create_dynamic<S: Storage>(st: &mut S, path: &Path, size: u64) -> Result<()> {
    create_sparse(st, path, size, None)
}

pub(crate) fn create_sparse<S: Storage>(
    st: &mut S,
    path: &Path,
    size: u64,
    parent: Option<&ParentRef>,
) -> Result<()> {
    check_size(path, size)?;
    let block = u64::from(DEFAULT_BLOCK_SIZE);
    let entries = size.div_ceil(block);
    let entries32 = u32::try_from(entries)
        .map_err(|_| Error::InvalidArgument(format!("{}: size too large", path.display())))?;
    let disk_type = if parent.is_some() {
        TYPE_DIFFERENCING
    } else {
        TYPE_DYNAMIC
    };
    let footer = build_footer(size, disk_type, FOOTER_SIZE as u64, random_uuid());
    let bat_offset = (FOOTER_SIZE + DYN_HEADER_SIZE) as u64;
    let bat_len = align_up(entries * 4, 512).unwrap_or(0);
    let mut end = bat_offset + bat_len;

    let mut h = [0u8; DYN_HEADER_SIZE];
    put(&mut h, 0, DYN_COOKIE);
    put(&mut h, 8, &u64::MAX.to_be_bytes());
    put(&mut h, 16, &bat_offset.to_be_bytes());
    put(&mut h, 24, &0x0001_0000u32.to_be_bytes());
    put(&mut h, 28, &entries32.to_be_bytes());
    put(&mut h, 32, &DEFAULT_BLOCK_SIZE.to_be_bytes());
    let mut locator_data: Vec<(u64, Vec<u8>)> = Vec::new();
    if let Some(p) = parent {
        put(&mut h, 40, &p.uuid);
        put(&mut h, 56, &vhd_timestamp(p.mtime).to_be_bytes());
        let name: Vec<u8> = p
            .name
            .encode_utf16()
            .take(255)
            .flat_map(u16::to_be_bytes)
            .collect();
        put(&mut h, 64, &name);
        for (i, (code, text)) in [(PLAT_W2RU, &p.relative), (PLAT_W2KU, &p.absolute)]
            .into_iter()
            .enumerate()
        {
            let data = utf16le(text);
            let space = align_up(data.len() as u64, 512).unwrap_or(512).max(512);
            let e = 576 + i * 24;
            put(&mut h, e, &code.to_be_bytes());
            put(&mut h, e + 4, &(space as u32).to_be_bytes());
            put(&mut h, e + 8, &(data.len() as u32).to_be_bytes());
            put(&mut h, e + 16, &end.to_be_bytes());
            locator_data.push((end, data));
            end += space;
        }
    }
    let sum = checksum(&h, 36);
    put(&mut h, 36, &sum.to_be_bytes());

    let io = |e| Error::io(path, "cannot write the image", e);
    st.set_len(0).map_err(io)?;
    st.write_at(0, &footer).map_err(io)?;
    st.write_at(FOOTER_SIZE as u64, &h).map_err(io)?;
    let bat = vec![0xffu8; bat_len as usize];
    st.write_at(bat_offset, &bat).map_err(io)?;
    for (off, data) in &locator_data {
        st.write_at(*off, data).map_err(io)?;
    }
    st.write_at(end, &footer).map_err(io)?;
    Ok(())
}

/// The unique id and kind of a VHD, read from its footer (for linking a differencing disk).
pub(crate) fn identity(st: &mut dyn Storage, path: &Path) -> Result<([u8; 16], Format)> {
    let len = st.len().map_err(|e| Error::io(path, "cannot read", e))?;
    if len < 512 {
        return Err(Error::invalid(
            path,
            "is not a VHD (shorter than one footer)",
        ));
    }
    let mut f = [0u8; FOOTER_SIZE];
    read_exact(st, len - 512, &mut f).map_err(|e| Error::io(path, "read failed", e))?;
    if &f[..8] != COOKIE {
        read_exact(st, 0, &mut f).map_err(|e| Error::io(path, "read failed", e))?;
    }
    let format = match be32(&f, 60) {
        TYPE_FIXED => Format::VhdFixed,
        TYPE_DYNAMIC => Format::VhdDynamic,
        _ => Format::VhdDifferencing,
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&f[68..84]);
    Ok((id, format))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fixed,
    Dynamic,
    Differencing,
}

/// An open VHD.
pub struct Vhd<S: Storage> {
    st: S,
    path: PathBuf,
    read_only: bool,
    kind: Kind,
    /// The footer as written to the file.
    footer: [u8; FOOTER_SIZE],
    size: u64,
    bat_offset: u64,
    bat: Vec<u32>,
    block_size: u64,
    bitmap_size: u64,
    /// Where the trailing footer is (and where the next block goes).
    end: u64,
    bitmaps: HashMap<u32, Vec<u8>>,
    parent: Option<Box<dyn BlockDevice>>,
    parent_name: Option<String>,
    unique_id: [u8; 16],
}

impl<S: Storage> std::fmt::Debug for Vhd<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vhd")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Vhd<S> {
    /// Opens a VHD held in `st`, asking `resolver` for a differencing disk's parent.
    pub(crate) fn open(
        mut st: S,
        path: &Path,
        read_only: bool,
        resolver: &mut Resolver<'_>,
    ) -> Result<Self> {
        let rd = |e| Error::io(path, "read failed", e);
        let file_len = st.len().map_err(|e| Error::io(path, "cannot read", e))?;
        if file_len < FOOTER_SIZE as u64 {
            return Err(Error::invalid(
                path,
                format!("is truncated: a VHD needs at least a 512-byte footer, the file has {file_len} bytes"),
            ));
        }
        let mut head = [0u8; FOOTER_SIZE];
        let mut tail = [0u8; FOOTER_SIZE];
        read_zero_fill(&mut st, 0, &mut head).map_err(rd)?;
        read_exact(&mut st, file_len - 512, &mut tail).map_err(rd)?;
        let valid = |f: &[u8; FOOTER_SIZE]| &f[..8] == COOKIE && be32(f, 64) == checksum(f, 64);
        let tail_footer = valid(&tail);
        let footer = if tail_footer {
            tail
        } else if valid(&head) {
            if &tail[..8] == COOKIE {
                tracing::warn!(
                    "{}: the footer at the end has a bad checksum; using the copy at the start",
                    path.display()
                );
            }
            head
        } else {
            let f = if &tail[..8] == COOKIE { &tail } else { &head };
            if &f[..8] != COOKIE {
                return Err(Error::invalid(path, "is not a VHD: no `conectix` footer"));
            }
            return Err(Error::invalid(
                path,
                format!(
                    "VHD footer checksum mismatch (stored {:#010x}, computed {:#010x}); the file is damaged",
                    be32(f, 64),
                    checksum(f, 64)
                ),
            ));
        };
        let size = footer_disk_size(&footer);
        if size > MAX_SIZE {
            return Err(Error::invalid(
                path,
                format!("claims a virtual size of {size} bytes; a VHD holds at most 2040 GiB"),
            ));
        }
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(&footer[68..84]);
        let kind = match be32(&footer, 60) {
            TYPE_FIXED => Kind::Fixed,
            TYPE_DYNAMIC => Kind::Dynamic,
            TYPE_DIFFERENCING => Kind::Differencing,
            t => {
                return Err(Error::unsupported(
                    path,
                    format!("unknown VHD disk type {t} (2 fixed, 3 dynamic, 4 differencing)"),
                ))
            }
        };
        let mut me = Vhd {
            st,
            path: path.to_path_buf(),
            read_only,
            kind,
            footer,
            size,
            bat_offset: 0,
            bat: Vec::new(),
            block_size: 0,
            bitmap_size: 0,
            end: file_len - 512,
            bitmaps: HashMap::new(),
            parent: None,
            parent_name: None,
            unique_id,
        };
        if kind == Kind::Fixed {
            if !tail_footer {
                return Err(Error::invalid(
                    path,
                    "is a fixed VHD without a valid footer at its end; the file is truncated or damaged",
                ));
            }
            if size > file_len - 512 {
                return Err(Error::invalid(
                    path,
                    format!(
                        "is truncated: the footer says {size} bytes of disk, the file holds {}",
                        file_len - 512
                    ),
                ));
            }
            return Ok(me);
        }
        me.open_dynamic(file_len, tail_footer, resolver)?;
        Ok(me)
    }

    fn open_dynamic(
        &mut self,
        file_len: u64,
        tail_footer: bool,
        resolver: &mut Resolver<'_>,
    ) -> Result<()> {
        let path = self.path.clone();
        let path = path.as_path();
        let rd = |e| Error::io(path, "read failed", e);
        let hoff = be64(&self.footer, 16);
        if hoff
            .checked_add(DYN_HEADER_SIZE as u64)
            .is_none_or(|e| e > file_len)
        {
            return Err(Error::invalid(
                path,
                format!("is truncated: the dynamic header at offset {hoff} lies past the end of the {file_len}-byte file"),
            ));
        }
        let mut h = [0u8; DYN_HEADER_SIZE];
        read_exact(&mut self.st, hoff, &mut h).map_err(rd)?;
        if &h[..8] != DYN_COOKIE {
            return Err(Error::invalid(
                path,
                format!("has no `cxsparse` dynamic header at offset {hoff}; the file is damaged"),
            ));
        }
        if be32(&h, 36) != checksum(&h, 36) {
            return Err(Error::invalid(
                path,
                format!(
                    "VHD dynamic header checksum mismatch (stored {:#010x}, computed {:#010x}); the file is damaged",
                    be32(&h, 36),
                    checksum(&h, 36)
                ),
            ));
        }
        let block_size = be32(&h, 32);
        if !block_size.is_power_of_two() || !(512..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(Error::invalid(
                path,
                format!("has an invalid block size {block_size} (a power of two from 512 bytes to 256 MiB)"),
            ));
        }
        let block = u64::from(block_size);
        let entries = u64::from(be32(&h, 28));
        if entries.saturating_mul(block) < self.size {
            return Err(Error::invalid(
                path,
                format!(
                    "its block table covers {} bytes but the disk is {} bytes; the file is damaged",
                    entries.saturating_mul(block),
                    self.size
                ),
            ));
        }
        let bat_offset = be64(&h, 16);
        let bat_end = bat_offset
            .checked_add(entries * 4)
            .filter(|&e| e <= file_len)
            .ok_or_else(|| {
                Error::invalid(
                    path,
                    format!(
                        "is truncated: the block table ({entries} entries at offset {bat_offset}) \
                         lies past the end of the {file_len}-byte file"
                    ),
                )
            })?;
        let mut raw = vec![0u8; (entries * 4) as usize];
        read_exact(&mut self.st, bat_offset, &mut raw).map_err(rd)?;
        let bat: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let bitmap_size = align_up(block / 512 / 8, 512).unwrap_or(512).max(512);
        let mut end = align_up(bat_end, 512).unwrap_or(bat_end).max(hoff + 1024);
        for (i, &e) in bat.iter().enumerate() {
            if e == BAT_UNUSED {
                continue;
            }
            let start = u64::from(e) * 512;
            let block_end = start + bitmap_size + block;
            if block_end > file_len {
                return Err(Error::invalid(
                    path,
                    format!(
                        "is truncated: block {i} ends at offset {block_end} but the file has {file_len} bytes"
                    ),
                ));
            }
            end = end.max(block_end);
        }
        // Parent locator data also lives between the header and the blocks.
        for i in 0..8 {
            let e = 576 + i * 24;
            if be32(&h, e) != 0 {
                let loc_end = be64(&h, e + 16).saturating_add(u64::from(be32(&h, e + 8)));
                if loc_end <= file_len {
                    end = end.max(align_up(loc_end, 512).unwrap_or(loc_end));
                }
            }
        }
        end = if tail_footer {
            end.max(file_len - 512)
        } else {
            end.max(align_up(file_len, 512).unwrap_or(file_len))
        };
        self.bat_offset = bat_offset;
        self.bat = bat;
        self.block_size = block;
        self.bitmap_size = bitmap_size;
        self.end = end;

        if self.kind == Kind::Differencing {
            let mut candidates = Vec::new();
            let mut ordered: Vec<(u32, String)> = Vec::new();
            for i in 0..8 {
                let e = 576 + i * 24;
                let code = be32(&h, e);
                if code != PLAT_W2RU && code != PLAT_W2KU && code != PLAT_MACX {
                    continue;
                }
                let len = be32(&h, e + 8);
                let off = be64(&h, e + 16);
                if len == 0
                    || len > MAX_LOCATOR_LEN
                    || off.checked_add(u64::from(len)).is_none_or(|x| x > file_len)
                {
                    tracing::warn!(
                        "{}: ignoring parent locator {i}: {len} bytes at offset {off} do not fit the file",
                        path.display()
                    );
                    continue;
                }
                let mut data = vec![0u8; len as usize];
                read_exact(&mut self.st, off, &mut data).map_err(rd)?;
                let text = if code == PLAT_MACX {
                    let s = String::from_utf8_lossy(&data)
                        .trim_end_matches('\0')
                        .to_string();
                    s.strip_prefix("file://").unwrap_or(&s).to_string()
                } else {
                    from_utf16(&data, false)
                };
                if !text.is_empty() {
                    ordered.push((code, text));
                }
            }
            for pref in [PLAT_W2RU, PLAT_W2KU, PLAT_MACX] {
                for (c, t) in &ordered {
                    if *c == pref && !candidates.contains(t) {
                        candidates.push(t.clone());
                    }
                }
            }
            let name = from_utf16(&h[64..576], true);
            if !name.is_empty() && !candidates.contains(&name) {
                candidates.push(name);
            }
            let parent = resolver(BackingRequest::VhdParent {
                candidates: &candidates,
            })?;
            let pinfo = parent.info();
            if let Some(pid) = pinfo.unique_id {
                if pid != h[40..56] {
                    return Err(Error::invalid(
                        path,
                        format!(
                            "its parent {} is not the image it was made from (unique ids differ); \
                             the parent was replaced or recreated",
                            pinfo.path.display()
                        ),
                    ));
                }
            }
            self.parent_name = Some(pinfo.path.display().to_string());
            self.parent = Some(parent);
        }
        Ok(())
    }

    fn io_err(&self, what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
        let what = what.to_string();
        move |e| Error::io(&self.path, what.clone(), e)
    }

    fn bitmap(&mut self, blk: u32) -> Result<&mut Vec<u8>> {
        if !self.bitmaps.contains_key(&blk) {
            if self.bitmaps.len() >= 256 {
                self.bitmaps.clear();
            }
            let mut b = vec![0u8; self.bitmap_size as usize];
            let e = self.bat.get(blk as usize).copied().unwrap_or(BAT_UNUSED);
            if e != BAT_UNUSED {
                let off = u64::from(e) * 512;
                read_exact(&mut self.st, off, &mut b)
                    .map_err(|e| Error::io(&self.path, "read failed", e))?;
            }
            self.bitmaps.insert(blk, b);
        }
        self.bitmaps
            .get_mut(&blk)
            .ok_or_else(|| Error::invalid(&self.path, "bitmap cache"))
    }

    fn bit(bm: &[u8], sector: u64) -> bool {
        bm.get((sector / 8) as usize)
            .is_some_and(|b| b & (0x80 >> (sector % 8)) != 0)
    }

    /// Reads `buf` from within one block.
    fn read_block(&mut self, blk: u32, in_blk: u64, buf: &mut [u8]) -> Result<()> {
        let voff = u64::from(blk) * self.block_size + in_blk;
        let e = self.bat[blk as usize];
        if e == BAT_UNUSED {
            if self.kind == Kind::Differencing {
                return read_backing(self.parent.as_mut(), voff, buf);
            }
            buf.fill(0);
            return Ok(());
        }
        let data = u64::from(e) * 512 + self.bitmap_size;
        if self.kind == Kind::Dynamic {
            return read_zero_fill(&mut self.st, data + in_blk, buf)
                .map_err(self.io_err("read failed"));
        }
        let bm = self.bitmap(blk)?.clone();
        let end = in_blk + buf.len() as u64;
        let mut p = in_blk;
        while p < end {
            let sec = p / 512;
            let set = Self::bit(&bm, sec);
            let mut next = (sec + 1) * 512;
            while next < end && Self::bit(&bm, next / 512) == set {
                next += 512;
            }
            let run_end = next.min(end);
            let slice = &mut buf[(p - in_blk) as usize..(run_end - in_blk) as usize];
            if set {
                read_zero_fill(&mut self.st, data + p, slice)
                    .map_err(self.io_err("read failed"))?;
            } else {
                read_backing(self.parent.as_mut(), voff - in_blk + p, slice)?;
            }
            p = run_end;
        }
        Ok(())
    }

    fn write_block(&mut self, blk: u32, in_blk: u64, buf: &[u8]) -> Result<()> {
        let e = self.bat[blk as usize];
        let new_block = e == BAT_UNUSED;
        let bitmap_off = if new_block {
            let pos = align_up(self.end + self.bitmap_size, DATA_ALIGN)
                .ok_or_else(|| Error::invalid(&self.path, "file offset overflow"))?
                - self.bitmap_size;
            if pos / 512 >= u64::from(BAT_UNUSED) {
                return Err(Error::unsupported(
                    &self.path,
                    "the VHD file cannot grow past 2 TiB; convert it to qcow2",
                ));
            }
            pos
        } else {
            u64::from(e) * 512
        };
        let data = bitmap_off + self.bitmap_size;
        if self.kind == Kind::Dynamic {
            self.st
                .write_at(data + in_blk, buf)
                .map_err(self.io_err("write failed"))?;
            if new_block {
                let ones = vec![0xffu8; self.bitmap_size as usize];
                self.st
                    .write_at(bitmap_off, &ones)
                    .map_err(self.io_err("write failed"))?;
            }
        } else {
            if new_block {
                self.bitmaps.remove(&blk);
                let zeros = vec![0u8; self.bitmap_size as usize];
                self.bitmaps.insert(blk, zeros);
            }
            let a = in_blk / 512 * 512;
            let b = align_up(in_blk + buf.len() as u64, 512).unwrap_or(self.block_size);
            if a == in_blk && b == in_blk + buf.len() as u64 {
                self.st
                    .write_at(data + a, buf)
                    .map_err(self.io_err("write failed"))?;
            } else {
                let mut tmp = vec![0u8; (b - a) as usize];
                let bm = self.bitmap(blk)?.clone();
                let voff = u64::from(blk) * self.block_size;
                for sec_start in [a, b - 512] {
                    let s = &mut tmp[(sec_start - a) as usize..(sec_start - a + 512) as usize];
                    if !new_block && Self::bit(&bm, sec_start / 512) {
                        read_zero_fill(&mut self.st, data + sec_start, s)
                            .map_err(self.io_err("read failed"))?;
                    } else {
                        read_backing(self.parent.as_mut(), voff + sec_start, s)?;
                    }
                }
                tmp[(in_blk - a) as usize..(in_blk - a) as usize + buf.len()].copy_from_slice(buf);
                self.st
                    .write_at(data + a, &tmp)
                    .map_err(self.io_err("write failed"))?;
            }
            let bm = self.bitmap(blk)?;
            for sec in a / 512..b / 512 {
                if let Some(byte) = bm.get_mut((sec / 8) as usize) {
                    *byte |= 0x80 >> (sec % 8);
                }
            }
            let (first, last) = if new_block {
                (0, bm.len())
            } else {
                (
                    (a / 512 / 8) as usize,
                    ((b / 512).div_ceil(8) as usize).min(bm.len()),
                )
            };
            let bytes = bm[first..last].to_vec();
            self.st
                .write_at(bitmap_off + first as u64, &bytes)
                .map_err(self.io_err("write failed"))?;
        }
        if new_block {
            let new_end = data + self.block_size;
            let sector = (bitmap_off / 512) as u32;
            self.st
                .write_at(self.bat_offset + u64::from(blk) * 4, &sector.to_be_bytes())
                .map_err(self.io_err("write failed"))?;
            self.bat[blk as usize] = sector;
            self.st
                .write_at(new_end, &self.footer)
                .map_err(self.io_err("write failed"))?;
            self.end = new_end;
        }
        Ok(())
    }
}

impl<S: Storage + 'static> BlockDevice for Vhd<S> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.path, offset, buf.len(), self.size)?;
        if self.kind == Kind::Fixed {
            return read_zero_fill(&mut self.st, offset, buf).map_err(self.io_err("read failed"));
        }
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let blk = off / self.block_size;
            let in_blk = off % self.block_size;
            let n = ((self.block_size - in_blk) as usize).min(buf.len() - pos);
            let blk = u32::try_from(blk).map_err(|_| Error::invalid(&self.path, "block index"))?;
            self.read_block(blk, in_blk, &mut buf[pos..pos + n])?;
            pos += n;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        check_range(&self.path, offset, buf.len(), self.size)?;
        if self.kind == Kind::Fixed {
            return self
                .st
                .write_at(offset, buf)
                .map_err(self.io_err("write failed"));
        }
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let blk = off / self.block_size;
            let in_blk = off % self.block_size;
            let n = ((self.block_size - in_blk) as usize).min(buf.len() - pos);
            let blk = u32::try_from(blk).map_err(|_| Error::invalid(&self.path, "block index"))?;
            self.write_block(blk, in_blk, &buf[pos..pos + n])?;
            pos += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.st.sync().map_err(self.io_err("flush failed"))
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: self.path.clone(),
            format: match self.kind {
                Kind::Fixed => Format::VhdFixed,
                Kind::Dynamic => Format::VhdDynamic,
                Kind::Differencing => Format::VhdDifferencing,
            },
            virtual_size: self.size,
            file_size: self.st.len().unwrap_or(0),
            allocated_bytes: self.st.allocated_bytes().unwrap_or(0),
            cluster_size: (self.kind != Kind::Fixed).then_some(self.block_size),
            format_version: None,
            backing_file: self.parent_name.clone(),
            backing: self.parent.as_ref().map(|p| Box::new(p.info())),
            unique_id: Some(self.unique_id),
        }
    }

    fn extent(&mut self, offset: u64, max_len: u64) -> Result<Extent> {
        let max_len = max_len.min(self.size.saturating_sub(offset));
        if self.kind == Kind::Fixed || max_len == 0 {
            return Ok(Extent {
                kind: ExtentKind::Data,
                len: max_len,
            });
        }
        let blk = offset / self.block_size;
        let in_blk = offset % self.block_size;
        let in_block_len = (self.block_size - in_blk).min(max_len);
        let blk = u32::try_from(blk).map_err(|_| Error::invalid(&self.path, "block index"))?;
        let e = self.bat.get(blk as usize).copied().unwrap_or(BAT_UNUSED);
        let kind_of_unused = if self.kind == Kind::Differencing {
            ExtentKind::Backing
        } else {
            ExtentKind::Zero
        };
        if e == BAT_UNUSED || self.kind == Kind::Dynamic {
            let kind = if e == BAT_UNUSED {
                kind_of_unused
            } else {
                ExtentKind::Data
            };
            // Extend over following blocks of the same kind.
            let mut len = in_block_len;
            let mut b = blk as usize + 1;
            while len < max_len {
                let same = self
                    .bat
                    .get(b)
                    .is_some_and(|&x| (x == BAT_UNUSED) == (e == BAT_UNUSED));
                if !same {
                    break;
                }
                len = (len + self.block_size).min(max_len);
                b += 1;
            }
            return Ok(Extent { kind, len });
        }
        let bm = self.bitmap(blk)?.clone();
        let set = Self::bit(&bm, in_blk / 512);
        let end = in_blk + in_block_len;
        let mut next = (in_blk / 512 + 1) * 512;
        while next < end && Self::bit(&bm, next / 512) == set {
            next += 512;
        }
        Ok(Extent {
            kind: if set {
                ExtentKind::Data
            } else {
                ExtentKind::Backing
            },
            len: next.min(end) - in_blk,
        })
    }

    fn backing_mut(&mut self) -> Option<&mut dyn BlockDevice> {
        match self.parent.as_mut() {
            Some(p) => Some(p.as_mut()),
            None => None,
        }
    }
}

/// The path of `target` relative to directory `base`, both absolute and canonical.
pub(crate) fn relative_path(base: &Path, target: &Path) -> PathBuf {
    let b: Vec<Component<'_>> = base.components().collect();
    let t: Vec<Component<'_>> = target.components().collect();
    let common = b.iter().zip(&t).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// A path as a VHD locator string: `\` separators, no `\\?\` prefix.
pub(crate) fn locator_text(p: &Path, relative: bool) -> String {
    let s = p.display().to_string();
    let s = s.strip_prefix(r"\\?\").unwrap_or(&s).replace('/', "\\");
    if relative && !s.starts_with("..") {
        format!(".\\{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_spec() {
        // 100 MiB: 17 sectors per track, 12 heads, cylinders rounded down.
        let (c, h, s) = chs_geometry(204_800);
        assert_eq!((c, h, s), (1003, 12, 17));
        assert!(u64::from(c) * u64::from(h) * u64::from(s) <= 204_800);
        let (c, h, s) = chs_geometry(u64::MAX);
        assert_eq!((c, h, s), (65535, 16, 255));
        let (_, h, s) = chs_geometry(65535 * 16 * 63);
        assert_eq!((h, s), (16, 255));
    }

    #[test]
    fn checksum_skips_its_field() {
        let f = build_footer(1 << 20, TYPE_FIXED, u64::MAX, [7; 16]);
        assert_eq!(be32(&f, 64), checksum(&f, 64));
        assert_eq!(footer_disk_size(&f), 1 << 20);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b"), Path::new("/a/b/c.vhd")),
            PathBuf::from("c.vhd")
        );
        assert_eq!(
            relative_path(Path::new("/a/b"), Path::new("/a/x/c.vhd")),
            PathBuf::from("../x/c.vhd")
        );
        assert_eq!(locator_text(Path::new("c.vhd"), true), ".\\c.vhd");
    }
}
