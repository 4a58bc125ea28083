//! Partition tables: MBR (with extended partitions) and GPT.

use crate::source::{byte, le16, le32, le64, slice, Reader};
use crate::OsFamily;

/// Bytes per sector assumed for MBR disks.
pub(crate) const SECTOR: u64 = 512;
/// Most logical partitions followed in an extended partition.
const MAX_LOGICAL: usize = 16;
/// Most GPT entries read.
const MAX_GPT_ENTRIES: u64 = 256;

/// What a partition table entry says the partition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartType {
    /// MBR type byte.
    Mbr(u8),
    /// GPT type GUID, as text.
    Gpt(String),
}

/// A partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partition {
    /// 1-based number as tools show it (logical MBR partitions count from 5).
    pub(crate) number: usize,
    /// First byte, relative to the disk.
    pub(crate) start: u64,
    /// Length in bytes.
    pub(crate) len: u64,
    /// MBR active flag.
    pub(crate) active: bool,
    /// Type.
    pub(crate) kind: PartType,
}

/// Whether the 512 bytes end in the 0x55 0xAA boot signature.
pub(crate) fn has_boot_signature(sector: &[u8]) -> bool {
    slice(sector, 510, 2) == [0x55, 0xAA]
}

/// The four primary entries of an MBR, or `None` if `sector0` is not a partition table
/// (no signature, a status byte other than 0x00/0x80, an entry starting at sector 0, or no
/// entries at all).
pub(crate) fn mbr_primary(sector0: &[u8]) -> Option<Vec<(bool, u8, u32, u32)>> {
    if !has_boot_signature(sector0) {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..4 {
        let e = slice(sector0, 446 + 16 * i, 16);
        let status = byte(e, 0);
        if status != 0 && status != 0x80 {
            return None;
        }
        let ty = byte(e, 4);
        let lba = le32(e, 8);
        let count = le32(e, 12);
        if ty == 0 && lba == 0 && count == 0 {
            continue;
        }
        if ty == 0 || count == 0 || lba == 0 {
            return None;
        }
        out.push((status == 0x80, ty, lba, count));
    }
    (!out.is_empty()).then_some(out)
}

fn is_extended(ty: u8) -> bool {
    matches!(ty, 0x05 | 0x0F | 0x85)
}

/// The partitions of an MBR disk at `base` (primary ones, then logical ones).
pub(crate) fn mbr_partitions(r: &mut Reader<'_>, base: u64, sector0: &[u8]) -> Vec<Partition> {
    let mut out = Vec::new();
    let Some(primary) = mbr_primary(sector0) else {
        return out;
    };
    let mut extended = None;
    for (i, &(active, ty, lba, count)) in primary.iter().enumerate() {
        if is_extended(ty) {
            extended.get_or_insert(u64::from(lba));
        }
        out.push(Partition {
            number: i + 1,
            start: u64::from(lba) * SECTOR,
            len: u64::from(count) * SECTOR,
            active,
            kind: PartType::Mbr(ty),
        });
    }
    if let Some(ext) = extended {
        let mut next = 0u64;
        let mut seen = Vec::new();
        for n in 0..MAX_LOGICAL {
            let ebr_lba = ext + next;
            if seen.contains(&ebr_lba) {
                break;
            }
            seen.push(ebr_lba);
            let Some(off) = (ebr_lba * SECTOR).checked_add(base) else {
                break;
            };
            let Some(ebr) = r.array::<512>(off) else {
                break;
            };
            if !has_boot_signature(&ebr) {
                break;
            }
            let e0 = slice(&ebr, 446, 16);
            let (ty, lba, count) = (byte(e0, 4), le32(e0, 8), le32(e0, 12));
            if ty != 0 && count != 0 {
                out.push(Partition {
                    number: 5 + n,
                    start: (ebr_lba + u64::from(lba)) * SECTOR,
                    len: u64::from(count) * SECTOR,
                    active: byte(e0, 0) == 0x80,
                    kind: PartType::Mbr(ty),
                });
            }
            let e1 = slice(&ebr, 462, 16);
            if !is_extended(byte(e1, 4)) || le32(e1, 8) == 0 {
                break;
            }
            next = u64::from(le32(e1, 8));
        }
    }
    out
}

/// Formats a GPT GUID (mixed-endian on disk) as text.
pub(crate) fn guid_text(b: &[u8]) -> String {
    if b.len() < 16 {
        return String::new();
    }
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<String>()
    )
}

/// The partitions of a GPT disk at `base` (`None` if there is no valid GPT header), and the
/// sector size it uses.
pub(crate) fn gpt_partitions(r: &mut Reader<'_>, base: u64) -> Option<Vec<Partition>> {
    for sector in [512u64, 4096] {
        let Some(hdr) = base.checked_add(sector).and_then(|o| r.array::<512>(o)) else {
            continue;
        };
        if slice(&hdr, 0, 8) != b"EFI PART" {
            continue;
        }
        let hsize = u64::from(le32(&hdr, 12));
        let entries_lba = le64(&hdr, 72);
        let count = u64::from(le32(&hdr, 80));
        let esize = u64::from(le32(&hdr, 84));
        if !(92..=sector).contains(&hsize)
            || entries_lba < 2
            || !(128..=1024).contains(&esize)
            || !esize.is_multiple_of(8)
        {
            return None;
        }
        let count = count.min(MAX_GPT_ENTRIES);
        let off = base.checked_add(entries_lba.checked_mul(sector)?)?;
        let table = r.vec_capped(off, count * esize, 1 << 20)?;
        let mut out = Vec::new();
        for (i, e) in table.chunks_exact(esize as usize).enumerate() {
            let ty = slice(e, 0, 16);
            if ty.iter().all(|&b| b == 0) {
                continue;
            }
            let first = le64(e, 32);
            let last = le64(e, 40);
            if last < first {
                continue;
            }
            let (Some(start), Some(len)) = (
                first.checked_mul(sector),
                (last - first)
                    .checked_add(1)
                    .and_then(|n| n.checked_mul(sector)),
            ) else {
                continue;
            };
            out.push(Partition {
                number: i + 1,
                start,
                len,
                active: false,
                kind: PartType::Gpt(guid_text(ty)),
            });
        }
        return Some(out);
    }
    None
}

/// An OS family, its weight and an OS name, as a partition type suggests them.
pub(crate) type PartHint = (OsFamily, u32, Option<&'static str>);

/// What a partition type says: a description and, when it points at an OS family, the hint.
pub(crate) fn describe(kind: &PartType) -> (String, Option<PartHint>) {
    use OsFamily::*;
    match kind {
        PartType::Mbr(t) => {
            let (desc, hint) = match t {
                0x01 => ("FAT12", Some((Dos, 10, None))),
                0x04 | 0x06 => ("FAT16", Some((Dos, 10, None))),
                0x0E => ("FAT16 LBA", Some((Dos, 10, None))),
                0x0B => ("FAT32", Some((Dos, 10, None))),
                0x0C => ("FAT32 LBA", Some((Dos, 10, None))),
                0x07 => ("NTFS/exFAT", Some((Windows, 40, None))),
                0x11 | 0x14 | 0x16 | 0x1B | 0x1C | 0x1E => ("hidden FAT", None),
                0x17 => ("hidden NTFS", Some((Windows, 20, None))),
                0x27 => ("Windows recovery", Some((Windows, 20, None))),
                0x05 | 0x0F | 0x85 => ("extended", None),
                0x82 => ("Linux swap", Some((Linux, 30, None))),
                0x83 => ("Linux", Some((Linux, 50, None))),
                0x8E => ("Linux LVM", Some((Linux, 40, None))),
                0xFD => ("Linux RAID", Some((Linux, 30, None))),
                0xA5 => ("FreeBSD", Some((Bsd, 60, Some("FreeBSD")))),
                0xA6 => ("OpenBSD", Some((Bsd, 60, Some("OpenBSD")))),
                0xA9 => ("NetBSD", Some((Bsd, 60, Some("NetBSD")))),
                0xEE => ("GPT protective", None),
                0xEF => ("EFI system", None),
                _ => ("unknown", None),
            };
            (format!("type 0x{t:02X} ({desc})"), hint)
        }
        PartType::Gpt(g) => {
            let (desc, hint) = match g.as_str() {
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => {
                    ("Linux filesystem", Some((Linux, 50, None)))
                }
                "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" | "44479540-F297-41B2-9AF7-D131D5F0458A" => {
                    ("Linux root", Some((Linux, 50, None)))
                }
                "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => ("Linux swap", Some((Linux, 30, None))),
                "E6D6D379-F507-44C2-A23C-238F2A3DF928" => ("Linux LVM", Some((Linux, 40, None))),
                "A19D880F-05FC-4D3B-A006-743F0F84911E" => ("Linux RAID", Some((Linux, 30, None))),
                "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => ("Linux home", Some((Linux, 40, None))),
                "BC13C2FF-59E6-4262-A352-B275FD6F7172" => ("Linux boot", Some((Linux, 40, None))),
                "21686148-6449-6E6F-744E-656564454649" => ("BIOS boot", Some((Linux, 10, None))),
                "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => {
                    ("Microsoft basic data", Some((Windows, 30, None)))
                }
                "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => {
                    ("Microsoft reserved", Some((Windows, 60, None)))
                }
                "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => {
                    ("Windows recovery", Some((Windows, 40, None)))
                }
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => ("EFI system", None),
                "516E7CB4-6ECF-11D6-8FF8-00022D09712B" => {
                    ("FreeBSD", Some((Bsd, 50, Some("FreeBSD"))))
                }
                "83BD6B9D-7F41-11DC-BE0B-001560B84F0F" => {
                    ("FreeBSD boot", Some((Bsd, 40, Some("FreeBSD"))))
                }
                "516E7CB5-6ECF-11D6-8FF8-00022D09712B" => {
                    ("FreeBSD swap", Some((Bsd, 40, Some("FreeBSD"))))
                }
                "516E7CB6-6ECF-11D6-8FF8-00022D09712B" => {
                    ("FreeBSD UFS", Some((Bsd, 60, Some("FreeBSD"))))
                }
                "516E7CBA-6ECF-11D6-8FF8-00022D09712B" => {
                    ("FreeBSD ZFS", Some((Bsd, 50, Some("FreeBSD"))))
                }
                "824CC7A0-36A8-11E3-890A-952519AD3F61" => {
                    ("OpenBSD", Some((Bsd, 60, Some("OpenBSD"))))
                }
                "49F48D5A-B10E-11DC-B99B-0019D1879648" => {
                    ("NetBSD FFS", Some((Bsd, 60, Some("NetBSD"))))
                }
                "48465300-0000-11AA-AA11-00306543ECAC" => ("Apple HFS+", None),
                _ => ("unknown type", None),
            };
            (desc.to_string(), hint)
        }
    }
}

/// Whether a partition of this type holds the EFI system partition.
pub(crate) fn is_esp(kind: &PartType) -> bool {
    match kind {
        PartType::Mbr(t) => *t == 0xEF,
        PartType::Gpt(g) => g == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    }
}

/// Whether a partition of this type is the GRUB BIOS boot partition.
pub(crate) fn is_bios_boot(kind: &PartType) -> bool {
    matches!(kind, PartType::Gpt(g) if g == "21686148-6449-6E6F-744E-656564454649")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_mixed_endian() {
        let b = [
            0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
            0x7D, 0xE4,
        ];
        assert_eq!(guid_text(&b), "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    }

    #[test]
    fn mbr_needs_valid_status_bytes() {
        let mut s = [0u8; 512];
        s[510] = 0x55;
        s[511] = 0xAA;
        assert_eq!(mbr_primary(&s), None);
        s[446] = 0x80;
        s[446 + 4] = 0x83;
        s[446 + 8] = 1;
        s[446 + 12] = 9;
        assert_eq!(mbr_primary(&s), Some(vec![(true, 0x83, 1, 9)]));
        s[446] = 0x12;
        assert_eq!(mbr_primary(&s), None);
    }
}
