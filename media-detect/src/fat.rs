//! FAT12/16/32 boot sectors, directories (with long names) and cluster chains.

use crate::findings::{clean_bytes, MAX_NAME_CHARS};
use crate::fs::{DirEntry, FileSystem, MAX_DIR_BYTES, MAX_DIR_ENTRIES};
use crate::source::{byte, le16, le32, slice, Reader};

/// FAT variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FatType {
    /// 12-bit entries (floppies).
    Fat12,
    /// 16-bit entries.
    Fat16,
    /// 28-bit entries, root directory in a cluster chain.
    Fat32,
}

impl FatType {
    /// "FAT12" and so on.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
}

/// A FAT volume found at `base` of a source.
#[derive(Debug, Clone)]
pub(crate) struct FatFs {
    /// FAT12, FAT16 or FAT32.
    pub(crate) kind: FatType,
    /// The OEM name of the boot sector (bytes 3..11), trimmed.
    pub(crate) oem: String,
    /// The label in the boot sector, trimmed (may be "NO NAME").
    pub(crate) bpb_label: String,
    base: u64,
    cluster_bytes: u64,
    fat_offset: u64,
    root_offset: u64,
    root_bytes: u64,
    data_offset: u64,
    clusters: u32,
    root_cluster: u32,
}

/// Parses the boot sector `bs` (at least 512 bytes) of a volume at `base`, `len` bytes long;
/// `None` unless it has a believable BIOS parameter block.
pub(crate) fn parse_boot_sector(bs: &[u8], base: u64, len: u64) -> Option<FatFs> {
    let jump = byte(bs, 0);
    if !matches!(jump, 0xEB | 0xE9) {
        return None;
    }
    let bps = u64::from(le16(bs, 11));
    let spc = u64::from(byte(bs, 13));
    let reserved = u64::from(le16(bs, 14));
    let nfats = u64::from(byte(bs, 16));
    let root_entries = u64::from(le16(bs, 17));
    let total16 = u64::from(le16(bs, 19));
    let media = byte(bs, 21);
    let fat16_size = u64::from(le16(bs, 22));
    let total32 = u64::from(le32(bs, 32));
    let fat32_size = u64::from(le32(bs, 36));
    if !matches!(bps, 512 | 1024 | 2048 | 4096)
        || !spc.is_power_of_two()
        || spc > 128
        || reserved == 0
        || !(1..=4).contains(&nfats)
        || !(media == 0xF0 || media >= 0xF8)
    {
        return None;
    }
    let fat_size = if fat16_size != 0 {
        fat16_size
    } else {
        fat32_size
    };
    let total = if total16 != 0 { total16 } else { total32 };
    if fat_size == 0 || total == 0 {
        return None;
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = reserved
        .checked_add(nfats.checked_mul(fat_size)?)?
        .checked_add(root_sectors)?;
    let data_sectors = total.checked_sub(first_data)?;
    let clusters = data_sectors / spc;
    let kind = if clusters < 4085 {
        FatType::Fat12
    } else if clusters < 65525 {
        FatType::Fat16
    } else {
        FatType::Fat32
    };
    if kind == FatType::Fat32 && (fat16_size != 0 || root_entries != 0) {
        return None;
    }
    if kind != FatType::Fat32 && root_entries == 0 {
        return None;
    }
    // A volume far larger than its container is not a real one.
    if total.checked_mul(bps)? > len.saturating_mul(2).max(4 << 20) {
        return None;
    }
    let label_at = if kind == FatType::Fat32 { 71 } else { 43 };
    let sig_at = if kind == FatType::Fat32 { 66 } else { 38 };
    let bpb_label = if matches!(byte(bs, sig_at), 0x28 | 0x29) {
        clean_bytes(slice(bs, label_at, 11), MAX_NAME_CHARS)
    } else {
        String::new()
    };
    let fat_offset = reserved * bps;
    let root_offset = fat_offset + nfats * fat_size * bps;
    Some(FatFs {
        kind,
        oem: clean_bytes(slice(bs, 3, 8), 8),
        bpb_label,
        base,
        cluster_bytes: spc * bps,
        fat_offset,
        root_offset,
        root_bytes: root_sectors * bps,
        data_offset: first_data * bps,
        clusters: u32::try_from(clusters).ok()?,
        root_cluster: le32(bs, 44),
    })
}

impl FatFs {
    fn valid_cluster(&self, c: u32) -> bool {
        c >= 2 && c - 2 < self.clusters
    }

    /// The FAT entry of cluster `c`.
    fn next(&self, r: &mut Reader<'_>, c: u32) -> Option<u32> {
        let c64 = u64::from(c);
        let v = match self.kind {
            FatType::Fat12 => {
                let at = self.base.checked_add(self.fat_offset + c64 + c64 / 2)?;
                let v = u16::from_le_bytes(r.array(at)?);
                u32::from(if c % 2 == 1 { v >> 4 } else { v & 0xFFF })
            }
            FatType::Fat16 => {
                let at = self.base.checked_add(self.fat_offset + c64 * 2)?;
                u32::from(u16::from_le_bytes(r.array(at)?))
            }
            FatType::Fat32 => {
                let at = self.base.checked_add(self.fat_offset + c64 * 4)?;
                u32::from_le_bytes(r.array(at)?) & 0x0FFF_FFFF
            }
        };
        self.valid_cluster(v).then_some(v)
    }

    /// Up to `cap` bytes of the chain starting at cluster `first` (`len` bytes long when known).
    fn read_chain(
        &self,
        r: &mut Reader<'_>,
        first: u32,
        len: Option<u64>,
        cap: usize,
    ) -> Option<Vec<u8>> {
        let want = len.unwrap_or(u64::MAX).min(cap as u64);
        let mut out = Vec::new();
        let mut c = first;
        if !self.valid_cluster(c) {
            return if want == 0 { Some(out) } else { None };
        }
        let max_clusters = (cap as u64).div_ceil(self.cluster_bytes) + 1;
        for _ in 0..max_clusters {
            let left = want.saturating_sub(out.len() as u64);
            if left == 0 {
                break;
            }
            let off = self
                .base
                .checked_add(self.data_offset)?
                .checked_add(u64::from(c - 2).checked_mul(self.cluster_bytes)?)?;
            let n = usize::try_from(left.min(self.cluster_bytes)).ok()?;
            let start = out.len();
            out.resize(start + n, 0);
            let dst = out.get_mut(start..)?;
            if r.read(off, dst).is_none() {
                out.truncate(start);
                break;
            }
            match self.next(r, c) {
                Some(n) => c = n,
                None => break,
            }
        }
        Some(out)
    }
}

impl FileSystem for FatFs {
    fn root(&self) -> DirEntry {
        DirEntry {
            name: String::new(),
            alt: None,
            is_dir: true,
            size: 0,
            loc: 0,
        }
    }

    fn read_dir(&self, r: &mut Reader<'_>, dir: &DirEntry) -> Option<Vec<DirEntry>> {
        let data = if dir.loc == 0 {
            if self.kind == FatType::Fat32 {
                self.read_chain(r, self.root_cluster, None, MAX_DIR_BYTES)?
            } else {
                let off = self.base.checked_add(self.root_offset)?;
                r.vec_capped(off, self.root_bytes, MAX_DIR_BYTES)?
            }
        } else {
            let c = u32::try_from(dir.loc).ok()?;
            self.read_chain(r, c, None, MAX_DIR_BYTES)?
        };
        Some(parse_dir(&data).0)
    }

    fn read_file(&self, r: &mut Reader<'_>, file: &DirEntry, cap: usize) -> Option<Vec<u8>> {
        let c = u32::try_from(file.loc).ok()?;
        self.read_chain(r, c, Some(file.size), cap)
    }
}

/// The 8.3 name of a short entry, "NAME.EXT".
fn short_name(e: &[u8]) -> String {
    let conv = |b: &[u8]| -> String {
        let s: String = b
            .iter()
            .enumerate()
            .map(|(i, &c)| match c {
                0x05 if i == 0 => '_',
                c if c.is_ascii_graphic() || c == b' ' => c as char,
                _ => '_',
            })
            .collect();
        s.trim_end().to_string()
    };
    let base = conv(slice(e, 0, 8));
    let ext = conv(slice(e, 8, 3));
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

fn lfn_checksum(short: &[u8]) -> u8 {
    short
        .iter()
        .take(11)
        .fold(0u8, |s, &c| s.rotate_right(1).wrapping_add(c))
}

/// The entries of a directory's bytes and the volume label entry, if any.
pub(crate) fn parse_dir(data: &[u8]) -> (Vec<DirEntry>, Option<String>) {
    let mut out = Vec::new();
    let mut label = None;
    // Long-name pieces: (checksum, parts by sequence number).
    let mut lfn: Option<(u8, Vec<Option<Vec<u16>>>)> = None;
    for e in data.chunks_exact(32) {
        if out.len() >= MAX_DIR_ENTRIES {
            break;
        }
        let first = byte(e, 0);
        if first == 0 {
            break;
        }
        if first == 0xE5 {
            lfn = None;
            continue;
        }
        let attr = byte(e, 11);
        if attr & 0x3F == 0x0F {
            let seq = usize::from(first & 0x1F);
            if seq == 0 {
                lfn = None;
                continue;
            }
            if first & 0x40 != 0 {
                lfn = Some((byte(e, 13), vec![None; seq]));
            }
            if let Some((sum, parts)) = lfn.as_mut() {
                if *sum == byte(e, 13) {
                    if let Some(slot) = parts.get_mut(seq - 1) {
                        let mut units = Vec::with_capacity(13);
                        for (at, n) in [(1usize, 5usize), (14, 6), (28, 2)] {
                            for k in 0..n {
                                units.push(le16(e, at + 2 * k));
                            }
                        }
                        *slot = Some(units);
                    }
                }
            }
            continue;
        }
        let long = lfn.take().and_then(|(sum, parts)| {
            if sum != lfn_checksum(e) {
                return None;
            }
            let mut units = Vec::new();
            for p in parts {
                units.extend(p?);
            }
            let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
            let s: String = char::decode_utf16(units.into_iter().take(end))
                .map(|c| c.unwrap_or('_'))
                .filter(|c| !c.is_control() && *c != '/' && *c != '\\')
                .collect();
            (!s.is_empty()).then_some(s)
        });
        if attr & 0x08 != 0 {
            if attr & 0x10 == 0 && label.is_none() {
                label = Some(clean_bytes(slice(e, 0, 11), MAX_NAME_CHARS));
            }
            continue;
        }
        let short = short_name(e);
        if short == "." || short == ".." || short.is_empty() {
            continue;
        }
        let cluster = (u32::from(le16(e, 20)) << 16) | u32::from(le16(e, 26));
        let (name, alt) = match long {
            Some(l) if !l.eq_ignore_ascii_case(&short) => (l, Some(short)),
            _ => (short, None),
        };
        out.push(DirEntry {
            name,
            alt,
            is_dir: attr & 0x10 != 0,
            size: u64::from(le32(e, 28)),
            loc: u64::from(cluster),
        });
    }
    (out, label)
}

/// The volume label from the root directory entry, if the root is readable and has one.
pub(crate) fn root_label(fs: &FatFs, r: &mut Reader<'_>) -> Option<String> {
    let data = if fs.kind == FatType::Fat32 {
        fs.read_chain(r, fs.root_cluster, None, 64 << 10)?
    } else {
        let off = fs.base.checked_add(fs.root_offset)?;
        r.vec_capped(off, fs.root_bytes.min(64 << 10), 64 << 10)?
    };
    parse_dir(&data).1.filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_names() {
        let mut d = vec![0u8; 96];
        // Long name "syslinux.cfg" for short "SYSLINUXCFG".
        let short = *b"SYSLINUXCFG";
        let sum = lfn_checksum(&short);
        let units: Vec<u16> = "syslinux.cfg".encode_utf16().chain([0, 0xFFFF]).collect();
        let e = &mut d[0..32];
        e[0] = 0x41;
        e[11] = 0x0F;
        e[13] = sum;
        let mut it = units.iter().copied().chain(std::iter::repeat(0xFFFF));
        for (at, n) in [(1usize, 5usize), (14, 6), (28, 2)] {
            for k in 0..n {
                let u = it.next().unwrap();
                e[at + 2 * k..at + 2 * k + 2].copy_from_slice(&u.to_le_bytes());
            }
        }
        d[32..43].copy_from_slice(&short);
        d[64..75].copy_from_slice(b"MYDISK     ");
        d[75] = 0x08;
        let (entries, label) = parse_dir(&d);
        assert_eq!(label.as_deref(), Some("MYDISK"));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, "SYSLINUX.CFG");
        assert!(entries[0].is_named("syslinux.cfg"));
    }
}
