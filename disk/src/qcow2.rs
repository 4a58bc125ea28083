//! qcow2 images (QEMU's copy-on-write format, versions 2 and 3).
//!
//! The virtual disk is divided into clusters; a two-level table (L1, then one-cluster L2
//! tables) maps each guest cluster to a host cluster, a zero marker (v3), a compressed cluster,
//! or nothing (read from the backing file, or zeros). Host clusters carry reference counts in
//! a two-level refcount table. New clusters are appended at the end of the file; freed ones are
//! left with a zero refcount.
//!
//! Write order: a new cluster's refcount, then its contents, then the L2 entry (or L1 entry
//! for a new L2 table) that points at it; a freed cluster's refcount drops only after nothing
//! points at it. Images with internal snapshots, a dirty or corrupt flag open read-only.

use crate::bytes::{be32, be64, put};
use std::path::{Path, PathBuf};

use crate::storage::{read_exact, read_zero_fill, Storage};
use crate::{
    align_up, check_range, read_backing, BackingRequest, BlockDevice, Error, Extent, ExtentKind,
    Format, ImageInfo, Resolver, Result,
};

/// The magic at the start of every qcow2 file.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Cluster size of new images unless asked otherwise.
pub const DEFAULT_CLUSTER_SIZE: u32 = 64 << 10;
const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
const OFLAG_COPIED: u64 = 1 << 63;
const OFLAG_COMPRESSED: u64 = 1 << 62;
const OFLAG_ZERO: u64 = 1;
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const MAX_HOST_OFFSET: u64 = 1 << 56;
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const L2_CACHE_TABLES: usize = 32;
const RB_CACHE_BLOCKS: usize = 8;

/// A small least-recently-used cache keyed by host offset.
struct Lru<T> {
    items: Vec<(u64, T, u64)>,
    cap: usize,
    tick: u64,
}

impl<T> Lru<T> {
    fn new(cap: usize) -> Self {
        Self {
            items: Vec::new(),
            cap,
            tick: 0,
        }
    }

    fn find(&mut self, key: u64) -> Option<usize> {
        self.tick += 1;
        let t = self.tick;
        let i = self.items.iter().position(|(k, _, _)| *k == key)?;
        self.items[i].2 = t;
        Some(i)
    }

    fn insert(&mut self, key: u64, v: T) -> usize {
        self.tick += 1;
        if let Some(i) = self.items.iter().position(|(k, _, _)| *k == key) {
            self.items[i] = (key, v, self.tick);
            return i;
        }
        if self.items.len() < self.cap {
            self.items.push((key, v, self.tick));
            return self.items.len() - 1;
        }
        let i = self
            .items
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, _, t))| *t)
            .map(|(i, _)| i)
            .unwrap_or(0);
        self.items[i] = (key, v, self.tick);
        i
    }

    fn get(&self, i: usize) -> &T {
        &self.items[i].1
    }

    fn get_mut(&mut self, i: usize) -> &mut T {
        &mut self.items[i].1
    }
}

/// The fixed header fields.
#[derive(Debug, Clone, Default)]
struct Header {
    version: u32,
    backing_file_offset: u64,
    backing_file_size: u32,
    cluster_bits: u32,
    size: u64,
    l1_size: u32,
    l1_table_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
    nb_snapshots: u32,
    incompatible: u64,
    autoclear: u64,
    refcount_order: u32,
}

/// Where a guest cluster's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    /// Not in this image.
    Unallocated,
    /// Reads as zeros, no host cluster.
    Zero,
    /// Reads as zeros, host cluster preallocated.
    ZeroAlloc(u64),
    /// A standard cluster.
    Data(u64),
    /// Compressed data: offset and length in the file.
    Compressed(u64, u64),
}

/// An open qcow2 image.
pub struct Qcow2<S: Storage> {
    st: S,
    path: PathBuf,
    read_only: bool,
    h: Header,
    cs: u64,
    l2_entries: u64,
    rb_entries: u64,
    refcount_bits: u32,
    l1: Vec<u64>,
    reftable: Vec<u64>,
    file_len: u64,
    next_free: u64,
    l2: Lru<Vec<u64>>,
    rb: Lru<Vec<u8>>,
    last_compressed: Option<(u64, Vec<u8>)>,
    backing: Option<Box<dyn BlockDevice>>,
    backing_name: Option<String>,
}

impl<S: Storage> std::fmt::Debug for Qcow2<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2")
            .field("path", &self.path)
            .field("header", &self.h)
            .finish_non_exhaustive()
    }
}

fn feature_name(table: &[u8], kind: u8, bit: u32) -> Option<String> {
    table.chunks_exact(48).find_map(|e| {
        (e[0] == kind && u32::from(e[1]) == bit).then(|| {
            let n = &e[2..48];
            let end = n.iter().position(|&c| c == 0).unwrap_or(n.len());
            String::from_utf8_lossy(&n[..end]).into_owned()
        })
    })
}

impl<S: Storage> Qcow2<S> {
    /// Opens a qcow2 image held in `st`, asking `resolver` for its backing file.
    pub(crate) fn open(
        mut st: S,
        path: &Path,
        read_only: bool,
        resolver: &mut Resolver<'_>,
    ) -> Result<Self> {
        let bad = |m: String| Error::invalid(path, m);
        let rd = |e| Error::io(path, "read failed", e);
        let file_len = st.len().map_err(|e| Error::io(path, "cannot read", e))?;
        if file_len < 72 {
            return Err(bad(format!(
                "is truncated: a qcow2 header needs 72 bytes, the file has {file_len}"
            )));
        }
        let mut b = [0u8; 104];
        read_zero_fill(&mut st, 0, &mut b).map_err(rd)?;
        if b[..4] != MAGIC {
            return Err(bad("is not a qcow2 image (no QFI\\xfb magic)".into()));
        }
        let mut h = Header {
            version: be32(&b, 4),
            backing_file_offset: be64(&b, 8),
            backing_file_size: be32(&b, 16),
            cluster_bits: be32(&b, 20),
            size: be64(&b, 24),
            l1_size: be32(&b, 36),
            l1_table_offset: be64(&b, 40),
            refcount_table_offset: be64(&b, 48),
            refcount_table_clusters: be32(&b, 56),
            nb_snapshots: be32(&b, 60),
            ..Header::default()
        };
        let crypt = be32(&b, 32);
        if h.version != 2 && h.version != 3 {
            return Err(Error::unsupported(
                path,
                format!(
                    "is qcow2 version {}; only versions 2 and 3 are supported",
                    h.version
                ),
            ));
        }
        if !(9..=21).contains(&h.cluster_bits) {
            return Err(bad(format!(
                "has cluster_bits {} (valid: 9 to 21, 512 bytes to 2 MiB); the header is damaged",
                h.cluster_bits
            )));
        }
        let cs = 1u64 << h.cluster_bits;
        let header_length;
        if h.version == 3 {
            if file_len < 104 {
                return Err(bad(format!(
                    "is truncated: a qcow2 v3 header needs 104 bytes, the file has {file_len}"
                )));
            }
            h.incompatible = be64(&b, 72);
            h.autoclear = be64(&b, 88);
            h.refcount_order = be32(&b, 96);
            header_length = u64::from(be32(&b, 100));
            if header_length < 104 || !header_length.is_multiple_of(8) || header_length > cs {
                return Err(bad(format!(
                    "has header_length {header_length} (must be a multiple of 8 from 104 to the \
                     cluster size); the header is damaged"
                )));
            }
            if h.refcount_order > 6 {
                return Err(bad(format!(
                    "has refcount_order {} (at most 6); the header is damaged",
                    h.refcount_order
                )));
            }
        } else {
            h.refcount_order = 4;
            header_length = 72;
        }
        if crypt != 0 {
            return Err(Error::unsupported(
                path,
                format!(
                    "is encrypted (qcow2 crypt method {crypt}); decrypt it with `qemu-img convert` first"
                ),
            ));
        }
        // The first cluster holds header extensions and the backing file name.
        let mut first = vec![0u8; cs as usize];
        read_zero_fill(&mut st, 0, &mut first).map_err(rd)?;
        let mut backing_format: Option<String> = None;
        let mut features: Vec<u8> = Vec::new();
        let ext_end = if h.backing_file_offset != 0 && h.backing_file_offset < cs {
            h.backing_file_offset
        } else {
            cs
        };
        let mut pos = header_length;
        while pos + 8 <= ext_end {
            let p = pos as usize;
            let ty = be32(&first, p);
            let len = u64::from(be32(&first, p + 4));
            if ty == 0 {
                break;
            }
            let data_end = pos + 8 + len;
            if data_end > ext_end {
                return Err(bad(format!(
                    "header extension {ty:#x} at offset {pos} ({len} bytes) overruns the header \
                     area; the header is damaged"
                )));
            }
            let data = &first[p + 8..data_end as usize];
            match ty {
                EXT_BACKING_FORMAT => {
                    backing_format = Some(String::from_utf8_lossy(data).into_owned());
                }
                EXT_FEATURE_TABLE => features = data.to_vec(),
                _ => {}
            }
            pos = pos + 8 + align_up(len, 8).unwrap_or(len);
        }
        let unknown = h.incompatible
            & !(INCOMPAT_DIRTY
                | INCOMPAT_CORRUPT
                | INCOMPAT_DATA_FILE
                | INCOMPAT_COMPRESSION
                | INCOMPAT_EXTL2);
        if unknown != 0 {
            let names: Vec<String> = (0..64)
                .filter(|bit| unknown & (1 << bit) != 0)
                .map(|bit| {
                    feature_name(&features, 0, bit)
                        .map(|n| format!("{n} (bit {bit})"))
                        .unwrap_or_else(|| format!("bit {bit}"))
                })
                .collect();
            return Err(Error::unsupported(
                path,
                format!(
                    "uses incompatible qcow2 features this version does not know: {}; convert it \
                     with `qemu-img convert -O qcow2`",
                    names.join(", ")
                ),
            ));
        }
        if h.incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::unsupported(
                path,
                "keeps its data in an external data file, which is not supported; merge it with \
                 `qemu-img convert -O qcow2`",
            ));
        }
        if h.incompatible & INCOMPAT_COMPRESSION != 0 {
            return Err(Error::unsupported(
                path,
                "uses a non-zlib compression type (zstd), which is not supported; convert it with \
                 `qemu-img convert -O qcow2 -o compression_type=zlib`",
            ));
        }
        if h.incompatible & INCOMPAT_EXTL2 != 0 {
            return Err(Error::unsupported(
                path,
                "uses extended L2 entries (subclusters), which are not supported; convert it with \
                 `qemu-img convert -O qcow2 -o extended_l2=off`",
            ));
        }
        let l2_entries = cs / 8;
        let clusters = h.size.div_ceil(cs);
        let needed_l1 = clusters.div_ceil(l2_entries);
        if u64::from(h.l1_size) * 8 > MAX_L1_BYTES {
            return Err(bad(format!(
                "claims an L1 table of {} entries (at most {}); the header is damaged",
                h.l1_size,
                MAX_L1_BYTES / 8
            )));
        }
        if needed_l1 > u64::from(h.l1_size) {
            return Err(bad(format!(
                "claims a virtual size of {} bytes, which needs {needed_l1} L1 entries, but the \
                 L1 table has {}; the header is damaged",
                h.size, h.l1_size
            )));
        }
        if h.l1_size > 0 {
            if !h.l1_table_offset.is_multiple_of(cs) {
                return Err(bad(format!(
                    "has an L1 table offset {} that is not cluster-aligned; the header is damaged",
                    h.l1_table_offset
                )));
            }
            let end = h.l1_table_offset.checked_add(u64::from(h.l1_size) * 8);
            if end.is_none_or(|e| e > file_len) {
                return Err(bad(format!(
                    "is truncated: the L1 table ({} entries at offset {}) lies past the end of \
                     the {file_len}-byte file",
                    h.l1_size, h.l1_table_offset
                )));
            }
        }
        if !h.refcount_table_offset.is_multiple_of(cs) || h.refcount_table_offset == 0 {
            return Err(bad(format!(
                "has an invalid refcount table offset {}; the header is damaged",
                h.refcount_table_offset
            )));
        }
        let rt_bytes = u64::from(h.refcount_table_clusters) * cs;
        if h.refcount_table_clusters == 0 || rt_bytes > MAX_REFTABLE_BYTES {
            return Err(bad(format!(
                "claims a refcount table of {} clusters (1 to {}); the header is damaged",
                h.refcount_table_clusters,
                MAX_REFTABLE_BYTES / cs
            )));
        }
        if h.refcount_table_offset
            .checked_add(rt_bytes)
            .is_none_or(|e| e > file_len)
        {
            return Err(bad(format!(
                "is truncated: the refcount table ({} clusters at offset {}) lies past the end \
                 of the {file_len}-byte file",
                h.refcount_table_clusters, h.refcount_table_offset
            )));
        }
        let mut l1_raw = vec![0u8; h.l1_size as usize * 8];
        read_exact(&mut st, h.l1_table_offset, &mut l1_raw).map_err(rd)?;
        let l1: Vec<u64> = l1_raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        let mut rt_raw = vec![0u8; rt_bytes as usize];
        read_exact(&mut st, h.refcount_table_offset, &mut rt_raw).map_err(rd)?;
        let reftable: Vec<u64> = rt_raw.chunks_exact(8).map(|c| be64(c, 0)).collect();

        let mut backing_name = None;
        if h.backing_file_offset != 0 {
            let len = u64::from(h.backing_file_size);
            if len == 0
                || len > 1023
                || h.backing_file_offset
                    .checked_add(len)
                    .is_none_or(|e| e > cs.min(file_len))
            {
                return Err(bad(format!(
                    "has a backing file name of {len} bytes at offset {} outside the header \
                     cluster; the header is damaged",
                    h.backing_file_offset
                )));
            }
            let s = h.backing_file_offset as usize;
            backing_name = Some(String::from_utf8_lossy(&first[s..s + len as usize]).into_owned());
        }
        let refcount_bits = 1u32 << h.refcount_order;
        let mut me = Qcow2 {
            st,
            path: path.to_path_buf(),
            read_only,
            cs,
            l2_entries,
            rb_entries: cs * 8 / u64::from(refcount_bits),
            refcount_bits,
            l1,
            reftable,
            file_len,
            next_free: 0,
            l2: Lru::new(L2_CACHE_TABLES),
            rb: Lru::new(RB_CACHE_BLOCKS),
            last_compressed: None,
            backing: None,
            backing_name: backing_name.clone(),
            h,
        };
        if let Some(name) = &backing_name {
            let format = match backing_format.as_deref() {
                None => None,
                Some("qcow2") => Some(Format::Qcow2),
                Some("raw") => Some(Format::Raw),
                Some("vpc") => Some(Format::VhdDynamic),
                Some(other) => {
                    return Err(Error::unsupported(
                        path,
                        format!(
                            "its backing file {name} is in format `{other}`, which cannot be read; \
                             convert the backing file to qcow2, raw or vpc"
                        ),
                    ))
                }
            };
            me.backing = Some(resolver(BackingRequest::Named { name, format })?);
        }
        if !read_only {
            me.prepare_for_writing()?;
        }
        Ok(me)
    }

    fn prepare_for_writing(&mut self) -> Result<()> {
        let path = self.path.clone();
        if self.h.nb_snapshots > 0 {
            return Err(Error::unsupported(
                &path,
                format!(
                    "has {} internal snapshots; such images open only read-only (delete them with \
                     `qemu-img snapshot -d`, or open the image read-only)",
                    self.h.nb_snapshots
                ),
            ));
        }
        if self.h.incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(Error::invalid(
                &path,
                "is marked corrupt; repair it with `qemu-img check -r all` or open it read-only",
            ));
        }
        if self.h.incompatible & INCOMPAT_DIRTY != 0 {
            return Err(Error::invalid(
                &path,
                "was not closed cleanly (dirty flag set, refcounts may be stale); repair it with \
                 `qemu-img check -r all` or open it read-only",
            ));
        }
        if self.h.version >= 3 && self.h.autoclear != 0 {
            // Bitmaps and other auto-clear data are not maintained here, so they must be
            // marked stale before the first write.
            self.write(88, &0u64.to_be_bytes())?;
            self.h.autoclear = 0;
        }
        let mut nf = align_up(self.file_len, self.cs).unwrap_or(self.file_len);
        let last = self
            .reftable
            .iter()
            .enumerate()
            .rev()
            .find(|(_, e)| **e & REFT_OFFSET_MASK != 0)
            .map(|(i, e)| (i as u64, *e & REFT_OFFSET_MASK));
        if let Some((idx, boff)) = last {
            let slot = self.load_rb(boff)?;
            let bits = self.refcount_bits;
            let block = self.rb.get(slot);
            if let Some(i) = (0..self.rb_entries)
                .rev()
                .find(|&i| get_rc(block, i, bits) != 0)
            {
                let used_end = idx
                    .checked_mul(self.rb_entries)
                    .and_then(|c| c.checked_add(i + 1))
                    .and_then(|c| c.checked_mul(self.cs))
                    .filter(|&e| e <= MAX_HOST_OFFSET)
                    .ok_or_else(|| {
                        Error::invalid(
                            &path,
                            "refcounts describe clusters past 64 PiB; the image is damaged",
                        )
                    })?;
                nf = nf.max(used_end);
            }
        }
        self.next_free = nf;
        Ok(())
    }

    fn write(&mut self, off: u64, data: &[u8]) -> Result<()> {
        self.st
            .write_at(off, data)
            .map_err(|e| Error::io(&self.path, "write failed", e))?;
        self.file_len = self.file_len.max(off + data.len() as u64);
        Ok(())
    }

    fn load_l2(&mut self, off: u64, l1_index: u64) -> Result<usize> {
        if let Some(i) = self.l2.find(off) {
            return Ok(i);
        }
        if !off.is_multiple_of(self.cs)
            || off.checked_add(self.cs).is_none_or(|e| e > self.file_len)
        {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "L1 entry {l1_index} points at an L2 table at offset {off}, which is unaligned \
                     or past the end of the {}-byte file; the image is damaged",
                    self.file_len
                ),
            ));
        }
        let mut raw = vec![0u8; self.cs as usize];
        read_exact(&mut self.st, off, &mut raw)
            .map_err(|e| Error::io(&self.path, "read failed", e))?;
        let table = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        Ok(self.l2.insert(off, table))
    }

    fn load_rb(&mut self, off: u64) -> Result<usize> {
        if let Some(i) = self.rb.find(off) {
            return Ok(i);
        }
        if !off.is_multiple_of(self.cs)
            || off.checked_add(self.cs).is_none_or(|e| e > self.file_len)
        {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "a refcount block at offset {off} is unaligned or past the end of the \
                     {}-byte file; the image is damaged",
                    self.file_len
                ),
            ));
        }
        let mut raw = vec![0u8; self.cs as usize];
        read_exact(&mut self.st, off, &mut raw)
            .map_err(|e| Error::io(&self.path, "read failed", e))?;
        Ok(self.rb.insert(off, raw))
    }

    /// The L2 entry of guest cluster `vc` (0 if its L2 table is not allocated).
    fn entry(&mut self, vc: u64) -> Result<u64> {
        let l1i = vc / self.l2_entries;
        let l1e = self.l1.get(l1i as usize).copied().unwrap_or(0);
        let off = l1e & L1E_OFFSET_MASK;
        if off == 0 {
            return Ok(0);
        }
        let slot = self.load_l2(off, l1i)?;
        Ok(self
            .l2
            .get(slot)
            .get((vc % self.l2_entries) as usize)
            .copied()
            .unwrap_or(0))
    }

    fn classify(&self, vc: u64, e: u64) -> Result<Map> {
        if e & OFLAG_COMPRESSED != 0 {
            let x = 62 - (self.h.cluster_bits - 8);
            let off = e & ((1u64 << x) - 1);
            let sectors = ((e >> x) & ((1u64 << (self.h.cluster_bits - 8)) - 1)) + 1;
            let len = sectors * 512 - (off & 511);
            if off >= self.file_len {
                return Err(Error::invalid(
                    &self.path,
                    format!(
                        "the compressed cluster for guest offset {} lies past the end of the file; \
                         the image is damaged",
                        vc * self.cs
                    ),
                ));
            }
            return Ok(Map::Compressed(off, len));
        }
        let host = e & L2E_OFFSET_MASK;
        let zero = self.h.version >= 3 && e & OFLAG_ZERO != 0;
        if !host.is_multiple_of(self.cs) {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "the L2 entry for guest offset {} points at unaligned host offset {host}; the \
                     image is damaged (`qemu-img check -r all` may repair it)",
                    vc * self.cs
                ),
            ));
        }
        if zero {
            return Ok(if host == 0 {
                Map::Zero
            } else {
                Map::ZeroAlloc(host)
            });
        }
        if host == 0 {
            return Ok(Map::Unallocated);
        }
        if host >= self.file_len {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "the data cluster for guest offset {} is at host offset {host}, past the end \
                     of the {}-byte file; the image is truncated",
                    vc * self.cs,
                    self.file_len
                ),
            ));
        }
        Ok(Map::Data(host))
    }

    fn map(&mut self, vc: u64) -> Result<Map> {
        let e = self.entry(vc)?;
        self.classify(vc, e)
    }

    fn decompress(&mut self, off: u64, len: u64) -> Result<&[u8]> {
        let key = off ^ (len << 56);
        if self.last_compressed.as_ref().is_none_or(|(k, _)| *k != key) {
            let avail = len.min(self.file_len.saturating_sub(off));
            let mut input = vec![0u8; avail as usize];
            read_zero_fill(&mut self.st, off, &mut input)
                .map_err(|e| Error::io(&self.path, "read failed", e))?;
            let mut out = match self.last_compressed.take() {
                Some((_, v)) if v.len() == self.cs as usize => v,
                _ => vec![0u8; self.cs as usize],
            };
            let mut state = miniz_oxide::inflate::core::DecompressorOxide::new();
            let flags =
                miniz_oxide::inflate::core::inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
            let (_status, _in, produced) =
                miniz_oxide::inflate::core::decompress(&mut state, &input, &mut out, 0, flags);
            if produced != out.len() {
                return Err(Error::invalid(
                    &self.path,
                    format!(
                        "the compressed cluster at host offset {off} does not inflate to a whole \
                         cluster ({produced} of {} bytes); the image is damaged",
                        self.cs
                    ),
                ));
            }
            self.last_compressed = Some((key, out));
        }
        Ok(self
            .last_compressed
            .as_ref()
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[]))
    }

    /// The current contents of guest cluster `vc` with mapping `m` (for copy-on-write).
    fn cluster_contents(&mut self, vc: u64, m: Map) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.cs as usize];
        match m {
            Map::Zero | Map::ZeroAlloc(_) => {}
            Map::Unallocated => read_backing(self.backing.as_mut(), vc * self.cs, &mut buf)?,
            Map::Data(h) => read_zero_fill(&mut self.st, h, &mut buf)
                .map_err(|e| Error::io(&self.path, "read failed", e))?,
            Map::Compressed(off, len) => buf.copy_from_slice(self.decompress(off, len)?),
        }
        Ok(buf)
    }

    /// The L2 table for guest cluster `vc`, allocated if missing: (offset, cache slot).
    fn l2_for_write(&mut self, vc: u64) -> Result<(u64, usize)> {
        let l1i = vc / self.l2_entries;
        let Some(&l1e) = self.l1.get(l1i as usize) else {
            return Err(Error::invalid(
                &self.path,
                "guest offset beyond the L1 table",
            ));
        };
        let off = l1e & L1E_OFFSET_MASK;
        if off != 0 {
            let slot = self.load_l2(off, l1i)?;
            return Ok((off, slot));
        }
        let new = self.alloc_clusters(1)?;
        let zeros = vec![0u8; self.cs as usize];
        self.write(new, &zeros)?;
        let slot = self.l2.insert(new, vec![0u64; self.l2_entries as usize]);
        let ent = new | OFLAG_COPIED;
        self.write(self.h.l1_table_offset + l1i * 8, &ent.to_be_bytes())?;
        self.l1[l1i as usize] = ent;
        Ok((new, slot))
    }

    /// Appends `k` clusters to the file and gives them refcount 1.
    fn alloc_clusters(&mut self, k: u64) -> Result<u64> {
        let start = self.next_free;
        let end = k
            .checked_mul(self.cs)
            .and_then(|b| start.checked_add(b))
            .filter(|&e| e <= MAX_HOST_OFFSET)
            .ok_or_else(|| Error::invalid(&self.path, "the image file would grow past 64 PiB"))?;
        self.next_free = end;
        self.ensure_refcount_coverage(start)?;
        self.refcount_change(start, k, true)?;
        Ok(start)
    }

    fn new_refcount_block(&mut self) -> Result<u64> {
        let b = self.next_free;
        self.next_free = b
            .checked_add(self.cs)
            .filter(|&e| e <= MAX_HOST_OFFSET)
            .ok_or_else(|| Error::invalid(&self.path, "the image file would grow past 64 PiB"))?;
        let zeros = vec![0u8; self.cs as usize];
        self.write(b, &zeros)?;
        self.rb.insert(b, zeros);
        Ok(b)
    }

    /// Makes sure every cluster from `from` up to `next_free` has a refcount block, growing
    /// the refcount table if needed.
    fn ensure_refcount_coverage(&mut self, from: u64) -> Result<()> {
        let per_block = self.cs * self.rb_entries;
        let mut pending: Vec<usize> = Vec::new();
        let mut lo = from / per_block;
        loop {
            let hi = (self.next_free - 1) / per_block;
            if hi >= self.reftable.len() as u64 {
                self.grow_reftable(from, hi + 1)?;
                continue;
            }
            let mut added = false;
            for idx in lo..=hi {
                if self.reftable[idx as usize] & REFT_OFFSET_MASK == 0 {
                    let b = self.new_refcount_block()?;
                    self.reftable[idx as usize] = b;
                    pending.push(idx as usize);
                    added = true;
                }
            }
            if !added {
                break;
            }
            lo = hi;
        }
        for &idx in &pending {
            let b = self.reftable[idx] & REFT_OFFSET_MASK;
            self.refcount_change(b, 1, true)?;
        }
        for idx in pending {
            let v = self.reftable[idx];
            self.write(
                self.h.refcount_table_offset + idx as u64 * 8,
                &v.to_be_bytes(),
            )?;
        }
        Ok(())
    }

    fn grow_reftable(&mut self, from: u64, min_entries: u64) -> Result<()> {
        let per_cluster = self.cs / 8;
        let per_block = self.cs * self.rb_entries;
        let want = min_entries
            .max(self.reftable.len() as u64 * 2)
            .saturating_add(2);
        let tbl_clusters = want.div_ceil(per_cluster);
        if tbl_clusters * self.cs > MAX_REFTABLE_BYTES {
            return Err(Error::unsupported(
                &self.path,
                "the image has outgrown the largest refcount table qcow2 allows",
            ));
        }
        let entries = (tbl_clusters * per_cluster) as usize;
        let tbl_off = self.next_free;
        self.next_free = tbl_off
            .checked_add(tbl_clusters * self.cs)
            .filter(|&e| e <= MAX_HOST_OFFSET)
            .ok_or_else(|| Error::invalid(&self.path, "the image file would grow past 64 PiB"))?;
        let mut table = self.reftable.clone();
        table.resize(entries, 0);
        let mut new_blocks = Vec::new();
        let mut lo = from / per_block;
        loop {
            let hi = (self.next_free - 1) / per_block;
            if hi >= entries as u64 {
                return Err(Error::unsupported(
                    &self.path,
                    "the refcount table cannot grow fast enough for this allocation",
                ));
            }
            let mut added = false;
            for idx in lo..=hi {
                if table[idx as usize] & REFT_OFFSET_MASK == 0 {
                    let b = self.new_refcount_block()?;
                    table[idx as usize] = b;
                    new_blocks.push(b);
                    added = true;
                }
            }
            if !added {
                break;
            }
            lo = hi;
        }
        let old_off = self.h.refcount_table_offset;
        let old_clusters = u64::from(self.h.refcount_table_clusters);
        self.reftable = table;
        self.refcount_change(tbl_off, tbl_clusters, true)?;
        for b in new_blocks {
            self.refcount_change(b, 1, true)?;
        }
        let bytes: Vec<u8> = self.reftable.iter().flat_map(|v| v.to_be_bytes()).collect();
        self.write(tbl_off, &bytes)?;
        let mut hdr = [0u8; 12];
        put(&mut hdr, 0, &tbl_off.to_be_bytes());
        put(&mut hdr, 8, &(tbl_clusters as u32).to_be_bytes());
        self.write(48, &hdr)?;
        self.h.refcount_table_offset = tbl_off;
        self.h.refcount_table_clusters = tbl_clusters as u32;
        self.refcount_change(old_off, old_clusters, false)?;
        Ok(())
    }

    /// Adds or removes one reference to each of `count` clusters from host offset `start`.
    fn refcount_change(&mut self, start: u64, count: u64, inc: bool) -> Result<()> {
        let mut c = start / self.cs;
        let end = c + count;
        let bits = self.refcount_bits;
        let max = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        while c < end {
            let idx = c / self.rb_entries;
            let first = c % self.rb_entries;
            let n = (self.rb_entries - first).min(end - c);
            let boff = self.reftable.get(idx as usize).copied().unwrap_or(0) & REFT_OFFSET_MASK;
            if boff == 0 {
                return Err(Error::invalid(
                    &self.path,
                    format!(
                        "host cluster {} has no refcount block; the image is damaged",
                        c * self.cs
                    ),
                ));
            }
            let slot = self.load_rb(boff)?;
            let block = self.rb.get_mut(slot);
            let mut bad = None;
            for i in first..first + n {
                let v = get_rc(block, i, bits);
                let nv = if inc {
                    v.checked_add(1).filter(|&x| x <= max)
                } else {
                    v.checked_sub(1)
                };
                match nv {
                    Some(nv) => set_rc(block, i, bits, nv),
                    None => {
                        bad = Some((i, v));
                        break;
                    }
                }
            }
            let b0 = (first * u64::from(bits) / 8) as usize;
            let b1 = ((first + n) * u64::from(bits)).div_ceil(8) as usize;
            let bytes = block[b0..b1.min(block.len())].to_vec();
            self.write(boff + b0 as u64, &bytes)?;
            if let Some((i, v)) = bad {
                let host = (idx * self.rb_entries + i) * self.cs;
                return Err(Error::invalid(
                    &self.path,
                    format!(
                        "the refcount of host cluster {host} is {v} and cannot be {}; the image \
                         is damaged (`qemu-img check -r all` may repair it)",
                        if inc { "raised" } else { "lowered" }
                    ),
                ));
            }
            c += n;
        }
        Ok(())
    }

    /// Drops the references a compressed cluster holds on the host clusters it spans.
    fn free_compressed(&mut self, off: u64, len: u64) -> Result<()> {
        let first = (off & !511) / self.cs;
        let last = (off + len - 1) / self.cs;
        self.refcount_change(first * self.cs, last - first + 1, false)
    }
}

fn get_rc(block: &[u8], i: u64, bits: u32) -> u64 {
    if bits >= 8 {
        let n = (bits / 8) as usize;
        let s = i as usize * n;
        block
            .get(s..s + n)
            .map(|b| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
            .unwrap_or(0)
    } else {
        let bitpos = i * u64::from(bits);
        let byte = block.get((bitpos / 8) as usize).copied().unwrap_or(0);
        (u64::from(byte) >> (bitpos % 8)) & ((1u64 << bits) - 1)
    }
}

fn set_rc(block: &mut [u8], i: u64, bits: u32, v: u64) {
    if bits >= 8 {
        let n = (bits / 8) as usize;
        let s = i as usize * n;
        if let Some(b) = block.get_mut(s..s + n) {
            b.copy_from_slice(&v.to_be_bytes()[8 - n..]);
        }
    } else {
        let bitpos = i * u64::from(bits);
        let mask = ((1u16 << bits) - 1) as u8;
        let shift = (bitpos % 8) as u32;
        if let Some(byte) = block.get_mut((bitpos / 8) as usize) {
            *byte = (*byte & !(mask << shift)) | (((v as u8) & mask) << shift);
        }
    }
}

impl<S: Storage + 'static> BlockDevice for Qcow2<S> {
    fn size(&self) -> u64 {
        self.h.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.path, offset, buf.len(), self.h.size)?;
        let cs = self.cs;
        let len = buf.len();
        let mut pos = 0usize;
        while pos < len {
            let off = offset + pos as u64;
            let vc = off / cs;
            let in_off = off % cs;
            let first_n = ((cs - in_off) as usize).min(len - pos);
            let m = self.map(vc)?;
            let mut n = first_n;
            if !matches!(m, Map::Compressed(..)) {
                let mut next = vc + 1;
                while pos + n < len {
                    let m2 = self.map(next)?;
                    let same = match (m, m2) {
                        (Map::Data(a), Map::Data(b)) => b == a + (next - vc) * cs,
                        (Map::Zero | Map::ZeroAlloc(_), Map::Zero | Map::ZeroAlloc(_)) => true,
                        (Map::Unallocated, Map::Unallocated) => true,
                        _ => false,
                    };
                    if !same {
                        break;
                    }
                    n += (cs as usize).min(len - pos - n);
                    next += 1;
                }
            }
            let out = &mut buf[pos..pos + n];
            match m {
                Map::Data(h) => read_zero_fill(&mut self.st, h + in_off, out)
                    .map_err(|e| Error::io(&self.path, "read failed", e))?,
                Map::Zero | Map::ZeroAlloc(_) => out.fill(0),
                Map::Unallocated => read_backing(self.backing.as_mut(), off, out)?,
                Map::Compressed(o, l) => {
                    let data = self.decompress(o, l)?;
                    out.copy_from_slice(&data[in_off as usize..in_off as usize + n]);
                }
            }
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
        check_range(&self.path, offset, buf.len(), self.h.size)?;
        let cs = self.cs;
        let len = buf.len();
        let mut pos = 0usize;
        while pos < len {
            let off = offset + pos as u64;
            let vc = off / cs;
            let in_off = off % cs;
            let n = ((cs - in_off) as usize).min(len - pos);
            let (l2off, slot) = self.l2_for_write(vc)?;
            let l2i = (vc % self.l2_entries) as usize;
            let e = self.l2.get(slot).get(l2i).copied().unwrap_or(0);
            let m = self.classify(vc, e)?;
            match m {
                Map::Data(h) => {
                    let mut total = n;
                    let mut next = vc + 1;
                    while pos + total < len {
                        if self.map(next)? != Map::Data(h + (next - vc) * cs) {
                            break;
                        }
                        total += (cs as usize).min(len - pos - total);
                        next += 1;
                    }
                    self.write(h + in_off, &buf[pos..pos + total])?;
                    pos += total;
                }
                Map::ZeroAlloc(h) => {
                    let mut data = vec![0u8; cs as usize];
                    data[in_off as usize..in_off as usize + n].copy_from_slice(&buf[pos..pos + n]);
                    self.write(h, &data)?;
                    let ent = h | OFLAG_COPIED;
                    self.write(l2off + l2i as u64 * 8, &ent.to_be_bytes())?;
                    if let Some(s) = self.l2.find(l2off) {
                        self.l2.get_mut(s)[l2i] = ent;
                    }
                    pos += n;
                }
                Map::Unallocated | Map::Zero | Map::Compressed(..) => {
                    // Whole clusters that need new space are allocated as one run.
                    let mut olds = vec![m];
                    if in_off == 0 && n as u64 == cs {
                        while l2i + olds.len() < self.l2_entries as usize
                            && pos + (olds.len() + 1) * cs as usize <= len
                        {
                            let e2 = self.l2.get(slot)[l2i + olds.len()];
                            let m2 = self.classify(vc + olds.len() as u64, e2)?;
                            if !matches!(m2, Map::Unallocated | Map::Zero | Map::Compressed(..)) {
                                break;
                            }
                            olds.push(m2);
                        }
                    }
                    let k = olds.len() as u64;
                    let contents = if n as u64 == cs {
                        None
                    } else {
                        let mut c = self.cluster_contents(vc, m)?;
                        c[in_off as usize..in_off as usize + n].copy_from_slice(&buf[pos..pos + n]);
                        Some(c)
                    };
                    let host = self.alloc_clusters(k)?;
                    match &contents {
                        Some(c) => self.write(host, c)?,
                        None => self.write(host, &buf[pos..pos + (k * cs) as usize])?,
                    }
                    let ents: Vec<u64> = (0..k).map(|i| (host + i * cs) | OFLAG_COPIED).collect();
                    let bytes: Vec<u8> = ents.iter().flat_map(|v| v.to_be_bytes()).collect();
                    self.write(l2off + l2i as u64 * 8, &bytes)?;
                    let s = match self.l2.find(l2off) {
                        Some(s) => s,
                        None => self.load_l2(l2off, vc / self.l2_entries)?,
                    };
                    self.l2.get_mut(s)[l2i..l2i + k as usize].copy_from_slice(&ents);
                    for old in olds {
                        if let Map::Compressed(o, l) = old {
                            self.free_compressed(o, l)?;
                        }
                    }
                    pos += if contents.is_some() {
                        n
                    } else {
                        (k * cs) as usize
                    };
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.st
            .sync()
            .map_err(|e| Error::io(&self.path, "flush failed", e))
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: self.path.clone(),
            format: Format::Qcow2,
            virtual_size: self.h.size,
            file_size: self.st.len().unwrap_or(self.file_len),
            allocated_bytes: self.st.allocated_bytes().unwrap_or(0),
            cluster_size: Some(self.cs),
            format_version: Some(self.h.version),
            backing_file: self.backing_name.clone(),
            backing: self.backing.as_ref().map(|b| Box::new(b.info())),
            unique_id: None,
        }
    }

    fn extent(&mut self, offset: u64, max_len: u64) -> Result<Extent> {
        let max_len = max_len.min(self.h.size.saturating_sub(offset));
        if max_len == 0 {
            return Ok(Extent {
                kind: ExtentKind::Data,
                len: 0,
            });
        }
        let kind_of = |m: Map, has_backing: bool| match m {
            Map::Data(_) | Map::Compressed(..) => ExtentKind::Data,
            Map::Zero | Map::ZeroAlloc(_) => ExtentKind::Zero,
            Map::Unallocated if has_backing => ExtentKind::Backing,
            Map::Unallocated => ExtentKind::Zero,
        };
        let has_backing = self.backing.is_some();
        let vc = offset / self.cs;
        let kind = kind_of(self.map(vc)?, has_backing);
        let mut len = (self.cs - offset % self.cs).min(max_len);
        let mut next = vc + 1;
        while len < max_len && kind_of(self.map(next)?, has_backing) == kind {
            len = (len + self.cs).min(max_len);
            next += 1;
        }
        Ok(Extent { kind, len })
    }

    fn backing_mut(&mut self) -> Option<&mut dyn BlockDevice> {
        match self.backing.as_mut() {
            Some(b) => Some(b.as_mut()),
            None => None,
        }
    }
}

/// How to lay out a new qcow2 image.
#[derive(Debug, Clone)]
pub struct Qcow2Options {
    /// Format version: 3 (default) or 2.
    pub version: u32,
    /// Cluster size, a power of two from 512 bytes to 2 MiB.
    pub cluster_size: u32,
    /// Backing file name as it should be recorded (relative to the new image's directory, or
    /// absolute) and its format name (`qcow2`, `raw`, `vpc`).
    pub backing: Option<(String, String)>,
}

impl Default for Qcow2Options {
    fn default() -> Self {
        Self {
            version: 3,
            cluster_size: DEFAULT_CLUSTER_SIZE,
            backing: None,
        }
    }
}

/// Writes an empty qcow2 image of `size` bytes into `st`.
pub fn create<S: Storage>(st: &mut S, path: &Path, size: u64, o: &Qcow2Options) -> Result<()> {
    let arg = |m: String| Error::InvalidArgument(format!("{}: {m}", path.display()));
    if o.version != 2 && o.version != 3 {
        return Err(arg(format!("qcow2 version {} (use 2 or 3)", o.version)));
    }
    if !o.cluster_size.is_power_of_two() || !(512..=(2 << 20)).contains(&o.cluster_size) {
        return Err(arg(format!(
            "cluster size {} (use a power of two from 512 bytes to 2 MiB)",
            o.cluster_size
        )));
    }
    if size == 0 {
        return Err(arg("size must not be zero".into()));
    }
    let cs = u64::from(o.cluster_size);
    let cluster_bits = o.cluster_size.trailing_zeros();
    let l1_size = size.div_ceil(cs).div_ceil(cs / 8);
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(arg(format!(
            "{size} bytes is too large for {cs}-byte clusters; use a larger cluster size"
        )));
    }
    let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
    let rb_entries = cs * 8 / 16;
    let (mut t, mut b) = (1u64, 1u64);
    loop {
        let total = 1 + l1_clusters + t + b;
        let nb = total.div_ceil(rb_entries);
        let nt = (nb * 8).div_ceil(cs);
        if nb == b && nt == t {
            break;
        }
        b = nb;
        t = nt;
    }
    let total = 1 + l1_clusters + t + b;
    let rt_off = cs;
    let rb_off = rt_off + t * cs;
    let l1_off = rb_off + b * cs;

    let mut hdr = vec![0u8; cs as usize];
    put(&mut hdr, 0, &MAGIC);
    put(&mut hdr, 4, &o.version.to_be_bytes());
    put(&mut hdr, 20, &cluster_bits.to_be_bytes());
    put(&mut hdr, 24, &size.to_be_bytes());
    put(&mut hdr, 36, &(l1_size as u32).to_be_bytes());
    put(&mut hdr, 40, &l1_off.to_be_bytes());
    put(&mut hdr, 48, &rt_off.to_be_bytes());
    put(&mut hdr, 56, &(t as u32).to_be_bytes());
    let mut pos = if o.version == 3 {
        put(&mut hdr, 96, &4u32.to_be_bytes());
        put(&mut hdr, 100, &104u32.to_be_bytes());
        104usize
    } else {
        72usize
    };
    if let Some((name, fmt)) = &o.backing {
        if name.is_empty() || name.len() > 1023 {
            return Err(arg(format!(
                "backing file name of {} bytes (1 to 1023 allowed)",
                name.len()
            )));
        }
        put(&mut hdr, pos, &EXT_BACKING_FORMAT.to_be_bytes());
        put(&mut hdr, pos + 4, &(fmt.len() as u32).to_be_bytes());
        put(&mut hdr, pos + 8, fmt.as_bytes());
        pos += 8 + fmt.len().div_ceil(8) * 8;
        pos += 8; // end-of-extensions marker (zeros)
        if pos + name.len() > cs as usize {
            return Err(arg(
                "backing file name does not fit the header cluster".into()
            ));
        }
        put(&mut hdr, pos, name.as_bytes());
        put(&mut hdr, 8, &(pos as u64).to_be_bytes());
        put(&mut hdr, 16, &(name.len() as u32).to_be_bytes());
    }
    let mut rt = vec![0u8; (t * cs) as usize];
    for i in 0..b {
        put(&mut rt, (i * 8) as usize, &(rb_off + i * cs).to_be_bytes());
    }
    let mut blocks = vec![0u8; (b * cs) as usize];
    for c in 0..total {
        put(&mut blocks, (c * 2) as usize, &1u16.to_be_bytes());
    }
    let l1 = vec![0u8; (l1_clusters * cs) as usize];
    let io = |e| Error::io(path, "cannot write the image", e);
    st.set_len(0).map_err(io)?;
    st.write_at(0, &hdr).map_err(io)?;
    st.write_at(rt_off, &rt).map_err(io)?;
    st.write_at(rb_off, &blocks).map_err(io)?;
    st.write_at(l1_off, &l1).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcount_widths_round_trip() {
        for order in 0..=6u32 {
            let bits = 1u32 << order;
            let mut block = vec![0u8; 64];
            let max = if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
            let n = 64 * 8 / u64::from(bits);
            for i in 0..n {
                set_rc(&mut block, i, bits, (i * 7) & max);
            }
            for i in 0..n {
                assert_eq!(
                    get_rc(&block, i, bits),
                    (i * 7) & max,
                    "order {order} entry {i}"
                );
            }
        }
    }

    #[test]
    fn lru_evicts_oldest() {
        let mut c = Lru::new(2);
        c.insert(1, 'a');
        c.insert(2, 'b');
        c.find(1);
        c.insert(3, 'c');
        assert!(c.find(2).is_none());
        assert!(c.find(1).is_some());
    }
}
