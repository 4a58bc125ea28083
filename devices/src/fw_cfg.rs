//! QEMU-compatible firmware configuration interface (fw_cfg), traditional port I/O form:
//! selector at 0x510 (16-bit write), data at 0x511 (byte reads, sequential). SeaBIOS uses it
//! for boot settings such as `etc/show-boot-menu`. The DMA interface is not offered (ID bit 1
//! clear), so the DMA ports stay unclaimed.

use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::{Device, PortIo};
use std::collections::BTreeMap;

/// Selector port; the data port follows it.
pub const FW_CFG_PORT: u16 = 0x510;
/// Port ranges the device decodes.
pub const FW_CFG_PORT_RANGES: [(u16, u16); 1] = [(FW_CFG_PORT, 2)];

const SIGNATURE: u16 = 0x0000;
const ID: u16 = 0x0001;
const NB_CPUS: u16 = 0x0005;
const FILE_DIR: u16 = 0x0019;
const FILE_FIRST: u16 = 0x0020;
/// Longest file name, including the terminating NUL.
const NAME_LEN: usize = 56;

/// The fw_cfg device: numbered items and named files.
#[derive(Debug, Clone)]
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<(String, u16)>,
    selector: u16,
    offset: usize,
}

impl FwCfg {
    /// A device announcing `cpus` processors and no files yet.
    pub fn new(cpus: u16) -> Self {
        let mut items = BTreeMap::new();
        items.insert(SIGNATURE, b"QEMU".to_vec());
        items.insert(ID, 1u32.to_le_bytes().to_vec());
        items.insert(NB_CPUS, cpus.to_le_bytes().to_vec());
        let mut d = Self {
            items,
            files: Vec::new(),
            selector: 0,
            offset: 0,
        };
        d.rebuild_directory();
        d
    }

    /// Adds (or replaces) a named file. Names longer than 55 bytes are refused.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), String> {
        if name.len() >= NAME_LEN {
            return Err(format!("fw_cfg file name too long: {name}"));
        }
        let select = match self.files.iter().find(|(n, _)| n == name) {
            Some(&(_, s)) => s,
            None => {
                let s = FILE_FIRST + self.files.len() as u16;
                self.files.push((name.to_string(), s));
                s
            }
        };
        self.items.insert(select, data);
        self.rebuild_directory();
        Ok(())
    }

    fn rebuild_directory(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, select) in &self.files {
            let size = self.items.get(select).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&select.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut n = [0u8; NAME_LEN];
            n[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&n);
        }
        self.items.insert(FILE_DIR, dir);
    }

    /// Length of the selected item (0 for an unknown selector).
    fn selected_len(&self) -> usize {
        self.items.get(&self.selector).map_or(0, Vec::len)
    }

    /// The next byte of the selected item; past its end, 0 (the offset stays at the end).
    fn next_byte(&mut self) -> u8 {
        let b = self
            .items
            .get(&self.selector)
            .and_then(|v| v.get(self.offset))
            .copied()
            .unwrap_or(0);
        self.offset = (self.offset + 1).min(self.selected_len());
        b
    }
}

impl Device for FwCfg {
    fn name(&self) -> &str {
        "fw_cfg"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.selector = 0;
        self.offset = 0;
    }
}

/// Saved state of fw_cfg (separate from the runtime type). The items and files are the
/// machine's configuration, built again by the machine, and not saved.
mod save {
    use serde::{Deserialize, Serialize};

    /// Version of [`FwCfgStateV1`].
    pub const VERSION: u32 = 1;

    /// The fw_cfg device's saved state, version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct FwCfgStateV1 {
        /// Selected item.
        pub selector: u16,
        /// Read position in the selected item (at most its length).
        pub offset: u64,
    }
}

impl SaveRestore for FwCfg {
    fn save(&mut self) -> SavedState {
        let state = save::FwCfgStateV1 {
            selector: self.selector,
            offset: self.offset as u64,
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores the selection and read position; refuses a position beyond the end of the
    /// selected item as this device holds it (a machine built with other files).
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let dev = "fw_cfg";
        let s: save::FwCfgStateV1 = crate::saved_state::decode(state, dev, save::VERSION)?;
        let len = self.items.get(&s.selector).map_or(0, Vec::len);
        let offset = usize::try_from(s.offset).unwrap_or(usize::MAX);
        ensure(
            offset <= len,
            dev,
            format!(
                "offset {} beyond the {len} bytes of item {:#06x}",
                s.offset, s.selector
            ),
        )?;
        self.selector = s.selector;
        self.offset = offset;
        Ok(())
    }
}

impl PortIo for FwCfg {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        if port == FW_CFG_PORT + 1 {
            for b in data.iter_mut() {
                *b = self.next_byte();
            }
        } else {
            data.fill(0);
        }
    }

    fn io_write(&mut self, port: u16, data: &[u8]) {
        if port == FW_CFG_PORT && data.len() >= 2 {
            self.selector = u16::from_le_bytes([data[0], data[1]]);
            self.offset = 0;
        }
        // Writes to the data port are ignored (read-only items).
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(d: &mut FwCfg, key: u16) {
        d.io_write(FW_CFG_PORT, &key.to_le_bytes());
    }

    fn read(d: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                d.io_read(FW_CFG_PORT + 1, &mut b);
                b[0]
            })
            .collect()
    }

    #[test]
    fn signature_cpus_and_files_read_as_seabios_expects() {
        let mut d = FwCfg::new(2);
        d.add_file("etc/show-boot-menu", 0u16.to_le_bytes().to_vec())
            .unwrap();
        select(&mut d, SIGNATURE);
        assert_eq!(read(&mut d, 4), b"QEMU");
        select(&mut d, ID);
        assert_eq!(read(&mut d, 4), [1, 0, 0, 0]);
        select(&mut d, NB_CPUS);
        assert_eq!(read(&mut d, 2), [2, 0]);
        select(&mut d, FILE_DIR);
        let dir = read(&mut d, 4 + 64);
        assert_eq!(&dir[..4], &[0, 0, 0, 1]);
        assert_eq!(&dir[4..8], &[0, 0, 0, 2], "size, big-endian");
        assert_eq!(&dir[8..10], &FILE_FIRST.to_be_bytes());
        assert_eq!(&dir[12..30], b"etc/show-boot-menu");
        select(&mut d, FILE_FIRST);
        assert_eq!(read(&mut d, 3), [0, 0, 0], "past the end reads 0");
        select(&mut d, 0x7777);
        assert_eq!(read(&mut d, 2), [0, 0], "unknown item reads 0");
        assert!(d.add_file(&"x".repeat(60), vec![]).is_err());
    }

    fn machine() -> FwCfg {
        let mut d = FwCfg::new(4);
        d.add_file("etc/show-boot-menu", 1u16.to_le_bytes().to_vec())
            .unwrap();
        d.add_file("bootorder", b"/pci@i0cf8/ide@1,1/drive@0/disk@0\n".to_vec())
            .unwrap();
        d
    }

    #[test]
    fn save_restore_round_trip() {
        let mut a = machine();
        select(&mut a, FILE_FIRST + 1);
        assert_eq!(read(&mut a, 5), b"/pci@");
        let saved = a.save();
        assert_eq!(saved.device, "fw_cfg");
        let mut b = machine();
        b.restore(&saved).unwrap();
        assert_eq!(b.save(), saved);
        // The rest of the file, then zeros past its end, on both.
        assert_eq!(read(&mut b, 40), read(&mut a, 40));
        assert_eq!(b.save(), a.save());
        for d in [&mut a, &mut b] {
            select(d, FILE_DIR);
        }
        assert_eq!(read(&mut b, 4 + 2 * 64), read(&mut a, 4 + 2 * 64));
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let mut a = machine();
        select(&mut a, FILE_FIRST);
        read(&mut a, 1);
        let saved = a.save();
        let mut b = machine();
        select(&mut b, SIGNATURE);
        read(&mut b, 1);
        check_refusals(&mut b, &saved);
        // Beyond the end of the 2-byte file.
        let bad = edited(&saved, |s: &mut save::FwCfgStateV1| s.offset = 3);
        check_corrupt(&mut b, &bad);
        let bad = edited(&saved, |s: &mut save::FwCfgStateV1| s.offset = u64::MAX);
        check_corrupt(&mut b, &bad);
        // A machine without that file.
        let mut bare = FwCfg::new(4);
        check_corrupt(&mut bare, &saved);
        assert_eq!(read(&mut b, 3), b"EMU", "still works");
    }
}
