//! Intel 440FX host bridge (PCI 00:00.0, 8086:1237 rev 02), with QEMU's subsystem IDs so
//! SeaBIOS recognises a QEMU-compatible board. The PAM registers (0x59-0x5F) and SMRAM
//! control (0x72) are stored and read back; guest RAM behind 0xC0000-0xFFFFF stays RAM.

use crate::pci::ConfigSpace;
use crate::saved_state::{RestoreError, SaveRestore, SavedState};
use crate::{Device, PciFunction};

/// First PAM register.
pub const PAM0: usize = 0x59;
/// Number of PAM registers.
pub const PAM_COUNT: usize = 7;
/// SMRAM control register.
pub const SMRAM: usize = 0x72;

/// The host bridge.
#[derive(Debug, Clone)]
pub struct I440fx {
    config: ConfigSpace,
}

impl Default for I440fx {
    fn default() -> Self {
        Self::new()
    }
}

impl I440fx {
    /// The bridge in its reset state.
    pub fn new() -> Self {
        let mut config = ConfigSpace::new(0x8086, 0x1237, 0x06, 0x00, 0x00, 0x02);
        config.set_subsystem(0x1AF4, 0x1100);
        config.set_u16(crate::pci::reg::COMMAND, 0x0006);
        config.set_u16(crate::pci::reg::STATUS, 0x0280);
        // PAM0 has only the BIOS-area nibble; PAM1-6 cover two 16 KiB segments each.
        config.set_writable(PAM0, &[0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        // PMCCFG, DETURBO, DBC, DRT, DRAMC, DRAMT: stored.
        config.set_writable(0x50, &[0xFF; 9]);
        // DRAM row boundaries.
        config.set_writable(0x60, &[0xFF; 8]);
        for i in 0..8 {
            config.set_u8(0x60 + i, 0x02);
        }
        // SMRAM: bits 0-2 fixed at 010 (C-SEG), D_OPEN/D_CLS/D_LCK/G_SMRAME writable.
        config.set_u8(SMRAM, 0x02);
        config.set_writable(SMRAM, &[0x78]);
        Self { config }
    }

    /// The PAM registers 0x59..=0x5F.
    pub fn pam(&self) -> [u8; PAM_COUNT] {
        let mut pam = [0u8; PAM_COUNT];
        for (i, p) in pam.iter_mut().enumerate() {
            *p = self.config.u8(PAM0 + i);
        }
        pam
    }

    /// The SMRAM control register.
    pub fn smram(&self) -> u8 {
        self.config.u8(SMRAM)
    }

    /// The configuration space.
    pub fn config(&self) -> &ConfigSpace {
        &self.config
    }
}

impl Device for I440fx {
    fn name(&self) -> &str {
        "i440fx"
    }
    fn pci(&mut self) -> Option<&mut dyn PciFunction> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        *self = Self::new();
    }
}

/// Saved state of the host bridge (separate from the runtime type).
mod save {
    use crate::pci::ConfigSpaceState;
    use serde::{Deserialize, Serialize};

    /// Version of [`I440fxStateV1`].
    pub const VERSION: u32 = 1;

    /// The host bridge's saved state, version 1: its configuration space (PAM, SMRAM and
    /// DRAM registers included).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct I440fxStateV1 {
        /// PCI configuration space.
        pub config: ConfigSpaceState,
    }
}

impl SaveRestore for I440fx {
    fn save(&mut self) -> SavedState {
        let state = save::I440fxStateV1 {
            config: self.config.saved(),
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let s: save::I440fxStateV1 = crate::saved_state::decode(state, "i440fx", save::VERSION)?;
        self.config.restore_saved(&s.config, "i440fx")
    }
}

impl PciFunction for I440fx {
    fn config_read(&mut self, offset: u8, data: &mut [u8]) {
        self.config.read(usize::from(offset), data);
    }
    fn config_write(&mut self, offset: u8, data: &[u8]) {
        // SMRAM with D_LCK set: D_OPEN and D_LCK can no longer be changed.
        let smram_locked = self.config.u8(SMRAM) & 0x10 != 0;
        let before = self.config.u8(SMRAM);
        self.config.write(usize::from(offset), data);
        if smram_locked {
            let after = self.config.u8(SMRAM);
            self.config.set_u8(SMRAM, (after & !0x50) | (before & 0x50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(d: &mut I440fx, offset: u8) -> u32 {
        let mut b = [0u8; 4];
        d.config_read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identity() {
        let mut d = I440fx::new();
        assert_eq!(read32(&mut d, 0x00), 0x1237_8086);
        assert_eq!(read32(&mut d, 0x08), 0x0600_0002);
        assert_eq!(read32(&mut d, 0x2C), 0x1100_1AF4);
        assert_eq!(read32(&mut d, 0x0C) >> 16 & 0xFF, 0x00);
    }

    #[test]
    fn pam_store_and_readback() {
        let mut d = I440fx::new();
        assert_eq!(d.pam(), [0; 7]);
        // SeaBIOS unlocks for writing, copies, then locks read-only.
        d.config_write(0x59, &[0x30]);
        d.config_write(0x5A, &[0x33, 0x33]);
        d.config_write(0x5C, &0x3333_3333u32.to_le_bytes());
        d.config_write(0x59, &[0xFF]);
        assert_eq!(d.pam(), [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        d.config_write(0x5A, &[0x11]);
        d.config_write(0x59, &[0x10]);
        let mut b = [0u8; 4];
        d.config_read(0x58, &mut b);
        assert_eq!(b, [0x00, 0x10, 0x11, 0x33]);
        let mut w = [0u8; 2];
        d.config_read(0x5E, &mut w);
        assert_eq!(w, [0x33, 0x33]);
    }

    #[test]
    fn smram_stored_with_fixed_bits_and_lock() {
        let mut d = I440fx::new();
        assert_eq!(d.smram(), 0x02);
        d.config_write(0x72, &[0x4F]);
        assert_eq!(d.smram(), 0x4A);
        d.config_write(0x72, &[0x1A]); // lock (closes D_OPEN)
        assert_eq!(d.smram(), 0x1A);
        d.config_write(0x72, &[0x42]);
        assert_eq!(d.smram(), 0x12);
    }

    fn config_bytes(d: &mut I440fx) -> Vec<u8> {
        (0..=255u8)
            .map(|o| {
                let mut b = [0u8];
                d.config_read(o, &mut b);
                b[0]
            })
            .collect()
    }

    #[test]
    fn save_restore_round_trip() {
        let mut a = I440fx::new();
        a.config_write(0x59, &[0x30, 0x11, 0x33, 0x22, 0x33, 0x33, 0x10]);
        a.config_write(0x50, &[0x0C, 0, 0x20]);
        a.config_write(0x60, &[0x04; 8]);
        a.config_write(0x72, &[0x4A]); // D_OPEN, G_SMRAME
        a.config_write(0x72, &[0x1A]); // lock
        let saved = a.save();
        assert_eq!(saved.device, "i440fx");
        let mut b = I440fx::new();
        b.restore(&saved).unwrap();
        assert_eq!(b.save(), saved);
        assert_eq!(config_bytes(&mut b), config_bytes(&mut a));
        assert_eq!(b.pam(), a.pam());
        // The lock still holds on the restored bridge.
        for d in [&mut a, &mut b] {
            d.config_write(0x72, &[0x42]);
            d.config_write(0x5A, &[0x33]);
        }
        assert_eq!(b.smram(), 0x12);
        assert_eq!(config_bytes(&mut b), config_bytes(&mut a));
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let mut a = I440fx::new();
        a.config_write(0x59, &[0x30]);
        let saved = a.save();
        let mut b = I440fx::new();
        b.config_write(0x5A, &[0x11]);
        check_refusals(&mut b, &saved);
        // SMRAM bits 0-2 are fixed at 010.
        let bad = edited(&saved, |s: &mut save::I440fxStateV1| {
            s.config.data[SMRAM] = 0x07
        });
        check_corrupt(&mut b, &bad);
        let bad = edited(&saved, |s: &mut save::I440fxStateV1| {
            s.config.data.push(0);
        });
        check_corrupt(&mut b, &bad);
        assert_eq!(b.pam()[1], 0x11, "still works");
    }
}
