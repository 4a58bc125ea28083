//! Intel PIIX3 PCI-to-ISA bridge (PCI 00:01.0, 8086:7000), function 0 of a multi-function
//! device. Holds the PIRQ route registers 0x60-0x63 that map PCI INTA#-INTD# lines to ISA
//! IRQs. The ELCR lives in [`crate::pic`].

use crate::pci::ConfigSpace;
use crate::saved_state::{RestoreError, SaveRestore, SavedState};
use crate::{Device, PciFunction};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// First PIRQ route register.
pub const PIRQ_ROUTE: usize = 0x60;

/// ISA IRQs a PIRQ may be routed to.
fn routable(irq: u8) -> bool {
    matches!(irq, 3..=7 | 9..=12 | 14 | 15)
}

/// Lock-free view of the four PIRQ route registers, shared with the interrupt routing code
/// so a PCI INTx can be routed without locking the bridge.
#[derive(Debug, Clone)]
pub struct PirqRoutes(Arc<[AtomicU8; 4]>);

impl PirqRoutes {
    fn new() -> Self {
        Self(Arc::new([const { AtomicU8::new(0x80) }; 4]))
    }

    /// The ISA IRQ PIRQ `n` (0 = PIRQA .. 3 = PIRQD) is routed to, or `None` when routing is
    /// disabled (bit 7) or the IRQ is not routable.
    pub fn irq(&self, n: usize) -> Option<u8> {
        let v = self.0.get(n)?.load(Ordering::Acquire);
        let irq = v & 0x0F;
        (v & 0x80 == 0 && routable(irq)).then_some(irq)
    }

    fn store(&self, n: usize, v: u8) {
        if let Some(r) = self.0.get(n) {
            r.store(v, Ordering::Release);
        }
    }
}

/// The ISA bridge.
#[derive(Debug, Clone)]
pub struct Piix3 {
    config: ConfigSpace,
    routes: PirqRoutes,
}

impl Default for Piix3 {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3 {
    /// The bridge in its reset state (every PIRQ disabled).
    pub fn new() -> Self {
        let mut bridge = Self {
            config: Self::reset_config(),
            routes: PirqRoutes::new(),
        };
        bridge.sync_routes();
        bridge
    }

    fn reset_config() -> ConfigSpace {
        let mut c = ConfigSpace::new(0x8086, 0x7000, 0x06, 0x01, 0x00, 0x00);
        c.set_header_type(0x80);
        c.set_u16(crate::pci::reg::COMMAND, 0x0007);
        c.set_u16(crate::pci::reg::STATUS, 0x0200);
        // IORT (ISA I/O recovery timer) and XBCS (X-bus chip select).
        c.set_u8(0x4C, 0x4D);
        c.set_u16(0x4E, 0x0003);
        c.set_writable(0x4C, &[0xFF, 0x00, 0xFF, 0x03]);
        // PIRQ route control.
        for i in 0..4 {
            c.set_u8(PIRQ_ROUTE + i, 0x80);
        }
        c.set_writable(PIRQ_ROUTE, &[0x8F; 4]);
        // TOM, MSTAT, motherboard IRQ routes, MBDMA, APIC base, DLC, SMI/SMI enable.
        c.set_u8(0x69, 0x02);
        c.set_writable(0x69, &[0xFE, 0xFF, 0xFF]);
        c.set_u8(0x70, 0x80);
        c.set_u8(0x71, 0x80);
        c.set_writable(0x70, &[0xCF, 0xCF]);
        c.set_u8(0x76, 0x0C);
        c.set_u8(0x77, 0x0C);
        c.set_writable(0x76, &[0x8F, 0x8F]);
        c.set_writable(0x78, &[0xFF, 0xFF]);
        c.set_writable(0x80, &[0x7F]);
        c.set_writable(0x82, &[0x0F]);
        c.set_u8(0xA8, 0x0F);
        c.set_writable(0xA0, &[0xFF; 9]);
        c
    }

    fn sync_routes(&mut self) {
        for n in 0..4 {
            self.routes.store(n, self.config.u8(PIRQ_ROUTE + n));
        }
    }

    /// The ISA IRQ that PIRQ `n` (0..4) is routed to, if enabled.
    pub fn pirq_to_irq(&self, n: usize) -> Option<u8> {
        self.routes.irq(n)
    }

    /// A shared, lock-free view of the PIRQ routes.
    pub fn pirq_routes(&self) -> PirqRoutes {
        self.routes.clone()
    }

    /// The configuration space.
    pub fn config(&self) -> &ConfigSpace {
        &self.config
    }
}

impl Device for Piix3 {
    fn name(&self) -> &str {
        "piix3"
    }
    fn pci(&mut self) -> Option<&mut dyn PciFunction> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.config = Self::reset_config();
        self.sync_routes();
    }
}

/// Saved state of the ISA bridge (separate from the runtime type).
mod save {
    use crate::pci::ConfigSpaceState;
    use serde::{Deserialize, Serialize};

    /// Version of [`Piix3StateV1`].
    pub const VERSION: u32 = 1;

    /// The ISA bridge's saved state, version 1: its configuration space (PIRQ routes
    /// included).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Piix3StateV1 {
        /// PCI configuration space.
        pub config: ConfigSpaceState,
    }
}

impl SaveRestore for Piix3 {
    fn save(&mut self) -> SavedState {
        let state = save::Piix3StateV1 {
            config: self.config.saved(),
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores the configuration space and publishes its PIRQ routes to the shared view.
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let s: save::Piix3StateV1 = crate::saved_state::decode(state, "piix3", save::VERSION)?;
        self.config.restore_saved(&s.config, "piix3")?;
        self.sync_routes();
        Ok(())
    }
}

impl PciFunction for Piix3 {
    fn config_read(&mut self, offset: u8, data: &mut [u8]) {
        self.config.read(usize::from(offset), data);
    }
    fn config_write(&mut self, offset: u8, data: &[u8]) {
        self.config.write(usize::from(offset), data);
        let start = usize::from(offset);
        if start < PIRQ_ROUTE + 4 && start + data.len() > PIRQ_ROUTE {
            self.sync_routes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_multifunction_header() {
        let mut d = Piix3::new();
        let mut b = [0u8; 4];
        d.config_read(0x00, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x7000_8086);
        d.config_read(0x08, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x0601_0000);
        d.config_read(0x0C, &mut b);
        assert_eq!(b[2], 0x80);
    }

    #[test]
    fn pirq_routes() {
        let mut d = Piix3::new();
        let routes = d.pirq_routes();
        let mut b = [0u8; 4];
        d.config_read(0x60, &mut b);
        assert_eq!(b, [0x80; 4]);
        assert_eq!(d.pirq_to_irq(0), None);
        // SeaBIOS: 10, 10, 11, 11.
        d.config_write(0x60, &[10, 10, 11, 11]);
        assert_eq!(
            (0..4).map(|n| d.pirq_to_irq(n)).collect::<Vec<_>>(),
            [Some(10), Some(10), Some(11), Some(11)]
        );
        d.config_write(0x62, &[0x8B]);
        assert_eq!(routes.irq(2), None);
        d.config_write(0x63, &[0x72]); // reserved bits dropped; IRQ2 is not routable
        d.config_read(0x60, &mut b);
        assert_eq!(b, [10, 10, 0x8B, 0x02]);
        assert_eq!(routes.irq(3), None);
        assert_eq!(routes.irq(4), None);
        d.reset();
        assert_eq!(routes.irq(0), None);
    }

    fn config_bytes(d: &mut Piix3) -> Vec<u8> {
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
        let mut a = Piix3::new();
        a.config_write(0x60, &[10, 10, 11, 0x8B]);
        a.config_write(0x4C, &[0x4D, 0x00, 0x03, 0x00]);
        a.config_write(0x69, &[0x02, 0x00, 0x00]);
        a.config_write(0x80, &[0x01]);
        let saved = a.save();
        assert_eq!(saved.device, "piix3");
        let mut b = Piix3::new();
        let routes = b.pirq_routes();
        b.restore(&saved).unwrap();
        assert_eq!(b.save(), saved);
        assert_eq!(config_bytes(&mut b), config_bytes(&mut a));
        assert_eq!(
            (0..4).map(|n| routes.irq(n)).collect::<Vec<_>>(),
            [Some(10), Some(10), Some(11), None],
            "the shared routes follow the restore"
        );
        for d in [&mut a, &mut b] {
            d.config_write(0x63, &[0x05]);
        }
        assert_eq!(b.pirq_to_irq(3), a.pirq_to_irq(3));
        assert_eq!(config_bytes(&mut b), config_bytes(&mut a));
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let mut a = Piix3::new();
        a.config_write(0x60, &[10, 10, 11, 11]);
        let saved = a.save();
        let mut b = Piix3::new();
        b.config_write(0x60, &[5]);
        check_refusals(&mut b, &saved);
        // Reserved bits 4-6 of a PIRQ route register.
        let bad = edited(&saved, |s: &mut save::Piix3StateV1| {
            s.config.data[PIRQ_ROUTE] = 0x7A
        });
        check_corrupt(&mut b, &bad);
        // The host bridge's space.
        let bad = edited(&saved, |s: &mut save::Piix3StateV1| {
            s.config = crate::i440fx::I440fx::new().config().saved()
        });
        check_corrupt(&mut b, &bad);
        assert_eq!(b.pirq_to_irq(0), Some(5), "still works");
    }
}
