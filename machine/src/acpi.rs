//! ACPI tables for direct Linux boot (with firmware, SeaBIOS builds its own).
//!
//! RSDP → RSDT → FADT (PIIX4 PM blocks, SCI 9, APM port for ACPI_ENABLE) with FACS and a DSDT
//! holding `\_S5` (sleep type 0 powers off), and a MADT listing every local APIC, the IOAPIC
//! and the SCI's level/active-high override. ISA IRQs map 1:1 to IOAPIC pins.

use crate::memory::PCI_HOLE_START;
use devices::ioapic::IOAPIC_BASE;
use devices::piix4_pm::{ACPI_DISABLE, ACPI_ENABLE, APM_CONTROL, PM_BASE, SCI_IRQ};

/// Where the tables go (BIOS area; the e820 map reserves it).
pub const TABLES_BASE: u64 = 0xe_0000;
const RSDT: u64 = TABLES_BASE + 0x40;
const FADT: u64 = TABLES_BASE + 0x100;
const FACS: u64 = TABLES_BASE + 0x200;
const DSDT: u64 = TABLES_BASE + 0x300;
const MADT: u64 = TABLES_BASE + 0x500;
/// Local APIC address.
const LAPIC_BASE: u32 = 0xfee0_0000;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// A table with its 36-byte header; the length and checksum are filled in by [`finish`].
fn header(signature: &[u8; 4], revision: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(256);
    t.extend_from_slice(signature);
    t.extend_from_slice(&[0; 4]); // length
    t.push(revision);
    t.push(0); // checksum
    t.extend_from_slice(b"TRRIUM");
    t.extend_from_slice(b"TERRARIU");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"TRRM");
    t.extend_from_slice(&1u32.to_le_bytes());
    t
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[9] = checksum(&t);
    t
}

fn put32(t: &mut Vec<u8>, v: u32) {
    t.extend_from_slice(&v.to_le_bytes());
}

fn fadt() -> Vec<u8> {
    let mut t = header(b"FACP", 1);
    put32(&mut t, FACS as u32);
    put32(&mut t, DSDT as u32);
    t.push(0); // INT_MODEL
    t.push(0); // preferred PM profile
    t.extend_from_slice(&(SCI_IRQ as u16).to_le_bytes());
    put32(&mut t, u32::from(APM_CONTROL)); // SMI_CMD
    t.push(ACPI_ENABLE);
    t.push(ACPI_DISABLE);
    t.push(0); // S4BIOS_REQ
    t.push(0); // PSTATE_CNT
    put32(&mut t, u32::from(PM_BASE)); // PM1a_EVT_BLK
    put32(&mut t, 0); // PM1b_EVT_BLK
    put32(&mut t, u32::from(PM_BASE) + 4); // PM1a_CNT_BLK
    put32(&mut t, 0); // PM1b_CNT_BLK
    put32(&mut t, 0); // PM2_CNT_BLK
    put32(&mut t, u32::from(PM_BASE) + 8); // PM_TMR_BLK
    put32(&mut t, 0); // GPE0_BLK
    put32(&mut t, 0); // GPE1_BLK
    t.extend_from_slice(&[4, 2, 0, 4, 0, 0, 0, 0]); // lengths, GPE1 base, CST_CNT
    t.extend_from_slice(&0x65u16.to_le_bytes()); // no C2
    t.extend_from_slice(&0x3e9u16.to_le_bytes()); // no C3
    t.extend_from_slice(&[0; 4]); // flush size/stride
    t.extend_from_slice(&[0, 0, 0, 0, 0x32]); // duty offset/width, alarms, CMOS century index
    t.extend_from_slice(&[0, 0, 0]); // IAPC_BOOT_ARCH, reserved
                                     // WBINVD, C1 supported, no fixed sleep button.
    put32(&mut t, (1 << 0) | (1 << 2) | (1 << 5));
    finish(t)
}

fn facs() -> Vec<u8> {
    let mut t = Vec::with_capacity(64);
    t.extend_from_slice(b"FACS");
    put32(&mut t, 64);
    t.resize(64, 0);
    t
}

/// The DSDT: `\_S5` (sleep type 0 powers off) and the PCI host bridge `\_SB.PCI0`, whose
/// `_CRS` gives the bus range and the I/O and memory windows Linux places BARs in (the PCI hole
/// up to the IOAPIC). Built with the `acpi_tables` AML encoder.
fn dsdt() -> Vec<u8> {
    use acpi_tables::aml::{
        AddressSpace, AddressSpaceCacheable, Device, EISAName, Name, Package, ResourceTemplate, IO,
        ZERO,
    };
    use acpi_tables::Aml;
    let mut t = header(b"DSDT", 1);
    Name::new(
        "_S5_".into(),
        &Package::new(vec![&ZERO, &ZERO, &ZERO, &ZERO]),
    )
    .to_aml_bytes(&mut t);
    let config_ports = IO::new(0xcf8, 0xcf8, 1, 8);
    let buses = AddressSpace::new_bus_number(0u16, 0xffu16);
    let io_low = AddressSpace::new_io(0u16, 0xcf7u16, None);
    let io_high = AddressSpace::new_io(0xd00u16, 0xffffu16, None);
    let vga = AddressSpace::new_memory(
        AddressSpaceCacheable::Cacheable,
        true,
        0xa_0000u32,
        0xb_ffffu32,
        None,
    );
    let hole = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_HOLE_START as u32,
        (IOAPIC_BASE - 1) as u32,
        None,
    );
    let crs = ResourceTemplate::new(vec![&buses, &config_ports, &io_low, &io_high, &vga, &hole]);
    let hid = EISAName::new("PNP0A03");
    Device::new(
        "_SB_.PCI0".into(),
        vec![
            &Name::new("_HID".into(), &hid),
            &Name::new("_ADR".into(), &ZERO),
            &Name::new("_BBN".into(), &ZERO),
            &Name::new("_UID".into(), &ZERO),
            &Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(&mut t);
    finish(t)
}

fn madt(cpus: u32) -> Vec<u8> {
    let mut t = header(b"APIC", 1);
    put32(&mut t, LAPIC_BASE);
    put32(&mut t, 1); // PCAT_COMPAT: 8259s present
    for id in 0..cpus.min(255) {
        t.extend_from_slice(&[0, 8, id as u8, id as u8]);
        put32(&mut t, 1); // enabled
    }
    t.extend_from_slice(&[1, 12, 0, 0]); // IOAPIC id 0
    put32(&mut t, IOAPIC_BASE as u32);
    put32(&mut t, 0); // GSI base
                      // SCI: ISA IRQ 9 → GSI 9, level-triggered, active high.
    t.extend_from_slice(&[2, 10, 0, SCI_IRQ as u8]);
    put32(&mut t, SCI_IRQ);
    t.extend_from_slice(&0x000du16.to_le_bytes());
    // LINT1 of every processor is NMI.
    t.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    finish(t)
}

/// The tables as (guest address, bytes); the RSDP is at [`TABLES_BASE`].
pub fn tables(cpus: u32) -> Vec<(u64, Vec<u8>)> {
    let mut rsdt = header(b"RSDT", 1);
    put32(&mut rsdt, FADT as u32);
    put32(&mut rsdt, MADT as u32);
    let mut rsdp = Vec::with_capacity(20);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0);
    rsdp.extend_from_slice(b"TRRIUM");
    rsdp.push(0); // ACPI 1.0 RSDP
    put32(&mut rsdp, RSDT as u32);
    rsdp[8] = checksum(&rsdp);
    vec![
        (TABLES_BASE, rsdp),
        (RSDT, finish(rsdt)),
        (FADT, fadt()),
        (FACS, facs()),
        (DSDT, dsdt()),
        (MADT, madt(cpus)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_sums_to_zero_and_fits_its_slot() {
        let t = tables(4);
        for (i, (addr, bytes)) in t.iter().enumerate() {
            if &bytes[..4] != b"FACS" {
                let n = if i == 0 { 20 } else { bytes.len() };
                assert_eq!(
                    bytes[..n].iter().fold(0u8, |a, b| a.wrapping_add(*b)),
                    0,
                    "table at {addr:#x}"
                );
            }
            if let Some((next, _)) = t.get(i + 1) {
                assert!(
                    addr + bytes.len() as u64 <= *next,
                    "table at {addr:#x} overlaps the next"
                );
            }
        }
        let fadt = &t[2].1;
        assert_eq!(fadt.len(), 116);
        assert_eq!(
            u32::from_le_bytes(fadt[64..68].try_into().unwrap()),
            0xb004,
            "PM1a_CNT"
        );
        let madt = &t[5].1;
        assert_eq!(madt.iter().filter(|_| true).count(), madt.len());
        assert_eq!(madt[44], 0, "first entry is a local APIC");
        assert_eq!(&t[4].1[36..41], &[0x08, b'_', b'S', b'5', b'_']);
    }
}
