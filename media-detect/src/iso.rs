//! ISO 9660 (with Rock Ridge names) and El Torito boot catalogs.

use crate::findings::{clean_bytes, MAX_NAME_CHARS};
use crate::fs::{DirEntry, FileSystem, MAX_DIR_BYTES, MAX_DIR_ENTRIES};
use crate::source::{byte, le16, le32, slice, Reader};

/// ISO 9660 sector size; the volume descriptors start at sector 16.
pub(crate) const SECTOR: u64 = 2048;
/// Byte offset of the first volume descriptor.
pub(crate) const VD_START: u64 = 16 * SECTOR;
/// Most volume descriptors looked at.
const MAX_DESCRIPTORS: u64 = 32;

/// What the volume descriptors say.
#[derive(Debug, Default)]
pub(crate) struct IsoVolume {
    /// The file system of the primary volume descriptor.
    pub(crate) fs: Option<IsoFs>,
    /// Volume identifier, trimmed.
    pub(crate) label: Option<String>,
    /// Sector of the El Torito boot catalog, from the boot record.
    pub(crate) boot_catalog: Option<u32>,
    /// A UDF volume recognition sequence is present.
    pub(crate) udf: bool,
}

/// Whether `sector16` (the 2048 bytes at byte 32768) is an ISO 9660 primary volume descriptor.
pub(crate) fn is_iso9660(sector16: &[u8]) -> bool {
    sector16.starts_with(b"\x01CD001")
}

/// Whether `sector16` starts a UDF volume recognition sequence.
pub(crate) fn is_udf(sector16: &[u8]) -> bool {
    slice(sector16, 1, 5) == b"BEA01"
}

/// Reads the volume descriptors of an ISO image at `base`.
pub(crate) fn read_volume(r: &mut Reader<'_>, base: u64) -> IsoVolume {
    let mut vol = IsoVolume::default();
    let mut sec = [0u8; SECTOR as usize];
    for i in 0..MAX_DESCRIPTORS {
        let Some(off) = base.checked_add(VD_START + i * SECTOR) else {
            break;
        };
        if r.read(off, &mut sec).is_none() {
            break;
        }
        let id = slice(&sec, 1, 5);
        if id == b"NSR02" || id == b"NSR03" {
            vol.udf = true;
            continue;
        }
        if id != b"CD001" {
            if id == b"BEA01" || id == b"TEA01" {
                continue;
            }
            break;
        }
        match sec[0] {
            0 if slice(&sec, 7, 23) == b"EL TORITO SPECIFICATION" => {
                vol.boot_catalog = Some(le32(&sec, 71));
            }
            1 if vol.fs.is_none() => {
                let l = clean_bytes(slice(&sec, 40, 32), MAX_NAME_CHARS);
                if !l.is_empty() {
                    vol.label = Some(l);
                }
                vol.fs = IsoFs::from_pvd(&sec, base);
            }
            255 => break,
            _ => {}
        }
    }
    vol
}

/// An ISO 9660 file system.
#[derive(Debug, Clone)]
pub(crate) struct IsoFs {
    base: u64,
    block: u64,
    root: DirEntry,
}

impl IsoFs {
    fn from_pvd(pvd: &[u8], base: u64) -> Option<Self> {
        let block = u64::from(le16(pvd, 128));
        if !(block.is_power_of_two() && (512..=SECTOR).contains(&block)) {
            return None;
        }
        let rec = slice(pvd, 156, 34);
        if byte(rec, 0) < 34 {
            return None;
        }
        let root = DirEntry {
            name: String::new(),
            alt: None,
            is_dir: true,
            size: u64::from(le32(rec, 10)),
            loc: u64::from(le32(rec, 2)) + u64::from(byte(rec, 1)),
        };
        Some(Self { base, block, root })
    }

    fn offset(&self, loc: u64) -> Option<u64> {
        self.base.checked_add(loc.checked_mul(self.block)?)
    }
}

impl FileSystem for IsoFs {
    fn root(&self) -> DirEntry {
        self.root.clone()
    }

    fn read_dir(&self, r: &mut Reader<'_>, dir: &DirEntry) -> Option<Vec<DirEntry>> {
        let data = r.vec_capped(self.offset(dir.loc)?, dir.size, MAX_DIR_BYTES)?;
        Some(parse_dir(&data))
    }

    fn read_file(&self, r: &mut Reader<'_>, file: &DirEntry, cap: usize) -> Option<Vec<u8>> {
        r.vec_capped(self.offset(file.loc)?, file.size, cap)
    }
}

/// The entries of a directory's bytes (records never cross a 2048-byte sector).
pub(crate) fn parse_dir(data: &[u8]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() && out.len() < MAX_DIR_ENTRIES {
        let len = usize::from(byte(data, pos));
        if len == 0 {
            // Padding up to the next sector.
            pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
            continue;
        }
        let Some(rec) = data.get(pos..pos + len) else {
            break;
        };
        pos += len;
        let name_len = usize::from(byte(rec, 32));
        let Some(raw_name) = rec.get(33..33 + name_len) else {
            continue;
        };
        if len < 34 || raw_name.is_empty() || raw_name == [0] || raw_name == [1] {
            continue;
        }
        let flags = byte(rec, 25);
        if flags & 0x04 != 0 {
            continue; // associated file
        }
        let iso_name = iso_name(raw_name);
        let su_start = 33 + name_len + usize::from(name_len.is_multiple_of(2));
        let rr = rock_ridge_name(rec.get(su_start..).unwrap_or(&[]));
        let (name, alt) = match rr {
            Some(n) if !n.is_empty() && n != iso_name => (n, Some(iso_name)),
            _ => (iso_name, None),
        };
        if name.is_empty() {
            continue;
        }
        out.push(DirEntry {
            name,
            alt,
            is_dir: flags & 0x02 != 0,
            size: u64::from(le32(rec, 10)),
            loc: u64::from(le32(rec, 2)) + u64::from(byte(rec, 1)),
        });
    }
    out
}

/// An ISO 9660 file identifier without its `;1` version and trailing dot.
fn iso_name(raw: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let s = match s.rfind(';') {
        Some(i) => &s[..i],
        None => &s[..],
    };
    s.strip_suffix('.').unwrap_or(s).to_string()
}

/// The Rock Ridge `NM` name in a system use area, if any.
fn rock_ridge_name(su: &[u8]) -> Option<String> {
    let mut name = Vec::new();
    let mut found = false;
    let mut i = 0usize;
    while i + 4 <= su.len() {
        let len = usize::from(byte(su, i + 2));
        if len < 4 || i + len > su.len() {
            break;
        }
        let sig = slice(su, i, 2);
        if sig == b"NM" {
            let flags = byte(su, i + 4);
            if flags & 0x06 == 0 {
                name.extend_from_slice(su.get(i + 5..i + len).unwrap_or(&[]));
                found = true;
            }
        } else if sig == b"ST" {
            break;
        }
        if name.len() > 255 {
            break;
        }
        i += len;
    }
    found.then(|| {
        String::from_utf8_lossy(&name)
            .chars()
            .filter(|c| !c.is_control() && *c != '/')
            .collect()
    })
}

/// One El Torito boot entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BootEntry {
    /// Platform id: 0 x86 BIOS, 0xEF EFI.
    pub(crate) platform: u8,
    /// Boot indicator was 0x88.
    pub(crate) bootable: bool,
    /// Emulation: 0 none, 1-3 floppy (1.2M, 1.44M, 2.88M), 4 hard disk.
    pub(crate) media: u8,
    /// First 2048-byte sector of the boot image.
    pub(crate) rba: u32,
}

/// Parses an El Torito boot catalog sector; `Err` says what is wrong.
pub(crate) fn parse_catalog(cat: &[u8]) -> Result<Vec<BootEntry>, &'static str> {
    let validation = slice(cat, 0, 32);
    if validation.len() < 32 || validation[0] != 1 {
        return Err("no validation entry");
    }
    if validation[30] != 0x55 || validation[31] != 0xAA {
        return Err("bad key bytes");
    }
    let sum = (0..16).fold(0u16, |acc, i| acc.wrapping_add(le16(validation, i * 2)));
    if sum != 0 {
        return Err("bad checksum");
    }
    let mut platform = validation[1];
    let mut out = Vec::new();
    let entry = |e: &[u8], platform: u8| BootEntry {
        platform,
        bootable: byte(e, 0) == 0x88,
        media: byte(e, 1) & 0x0F,
        rba: le32(e, 8),
    };
    out.push(entry(slice(cat, 32, 32), platform));
    let mut pos = 64usize;
    let mut last = false;
    while out.len() < 64 {
        let e = slice(cat, pos, 32);
        if e.len() < 32 {
            break;
        }
        match e[0] {
            0x90 | 0x91 if !last => {
                last = e[0] == 0x91;
                platform = e[1];
                let n = usize::from(le16(e, 2));
                pos += 32;
                for _ in 0..n.min(64) {
                    let s = slice(cat, pos, 32);
                    if s.len() < 32 {
                        break;
                    }
                    if s[0] == 0x44 {
                        // Section entry extension.
                        pos += 32;
                        continue;
                    }
                    out.push(entry(s, platform));
                    pos += 32;
                }
            }
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_names_lose_versions() {
        assert_eq!(iso_name(b"ISOLINUX.CFG;1"), "ISOLINUX.CFG");
        assert_eq!(iso_name(b"INFO.;1"), "INFO");
        assert_eq!(iso_name(b"BOOT"), "BOOT");
    }

    #[test]
    fn rock_ridge_name_is_read() {
        let mut su = b"PX\x08\x01\0\0\0\0".to_vec();
        su.extend_from_slice(b"NM\x0a\x01\0.disk");
        assert_eq!(rock_ridge_name(&su).as_deref(), Some(".disk"));
        assert_eq!(rock_ridge_name(b"NM\x03"), None);
    }

    #[test]
    fn catalog_checksum_is_checked() {
        let mut cat = vec![0u8; 2048];
        cat[0] = 1;
        cat[30] = 0x55;
        cat[31] = 0xAA;
        let sum = (0..16).fold(0u16, |a, i| a.wrapping_add(le16(&cat, i * 2)));
        cat[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        cat[32] = 0x88;
        cat[40] = 23;
        let e = parse_catalog(&cat).unwrap();
        assert_eq!(e[0].rba, 23);
        assert!(e[0].bootable);
        cat[5] ^= 1;
        assert_eq!(parse_catalog(&cat), Err("bad checksum"));
    }
}
