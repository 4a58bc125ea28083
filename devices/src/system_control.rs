//! Small chipset ports: port 0x92 (system control port A: A20 and fast reset), port 0xCF9
//! (PIIX reset control register) and port 0x80 (POST code / unused DMA page register).
//!
//! 0xCF9 lies inside the PCI configuration ports 0xCF8-0xCFF. Only dword accesses at 0xCF8
//! reach CONFIG_ADDRESS, so the machine registers [`crate::pci::PciRoot`] at 0xCF8 (1 port),
//! 0xCFA (2) and 0xCFC (4), and this device at 0xCF9 (1): the bus dispatches by the first
//! port of an access, so a dword at 0xCF8 still goes to the PCI root.
//!
//! A20 gating is not emulated (the address line is always enabled); bit 1 of port 0x92 only
//! reads back.

use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::{Device, PortIo};
use std::sync::Arc;

/// Port ranges this device answers: `(first port, count)`.
pub const SYSTEM_CONTROL_PORT_RANGES: [(u16, u16); 3] = [(0x80, 1), (0x92, 1), (0xCF9, 1)];

/// What the guest asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    /// Port 0x92 bit 0: processor-only fast reset.
    Fast,
    /// 0xCF9 with SYS_RST clear: processor INIT-style soft reset.
    Soft,
    /// 0xCF9 with SYS_RST set: platform hard reset.
    Hard,
    /// 0xCF9 with FULL_RST set: power cycle.
    Full,
    /// Power off (produced by power-management devices, not by this one).
    PowerOff,
}

/// Receives reset and power-off requests; called with the device locked, so it must only
/// signal (stop vCPUs), never lock devices.
pub type ResetRequest = Arc<dyn Fn(ResetKind) + Send + Sync>;

/// Ports 0x80, 0x92 and 0xCF9.
pub struct SystemControl {
    request: ResetRequest,
    port92: u8,
    reset_control: u8,
    post_code: u8,
}

impl std::fmt::Debug for SystemControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemControl")
            .field("port92", &self.port92)
            .field("reset_control", &self.reset_control)
            .field("post_code", &self.post_code)
            .finish()
    }
}

impl SystemControl {
    /// The ports in their reset state, sending requests to `request`.
    pub fn new(request: ResetRequest) -> Self {
        Self {
            request,
            port92: 0x02,
            reset_control: 0,
            post_code: 0,
        }
    }

    /// Last value written to port 0x80.
    pub fn post_code(&self) -> u8 {
        self.post_code
    }

    /// Port 0x92 bit 1.
    pub fn a20_enabled(&self) -> bool {
        self.port92 & 0x02 != 0
    }

    fn read_port(&self, port: u16) -> u8 {
        match port {
            0x80 => self.post_code,
            0x92 => self.port92,
            0xCF9 => self.reset_control,
            _ => {
                tracing::warn!(port, "system control: read of unowned port");
                0xFF
            }
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        match port {
            0x80 => {
                tracing::trace!(code = value, "POST code");
                self.post_code = value;
            }
            0x92 => {
                let old = self.port92;
                self.port92 = value & 0x03;
                if value & 1 != 0 && old & 1 == 0 {
                    (self.request)(ResetKind::Fast);
                }
            }
            0xCF9 => {
                self.reset_control = value & 0x0A;
                if value & 0x04 != 0 {
                    let kind = if value & 0x08 != 0 {
                        ResetKind::Full
                    } else if value & 0x02 != 0 {
                        ResetKind::Hard
                    } else {
                        ResetKind::Soft
                    };
                    (self.request)(kind);
                }
            }
            _ => tracing::warn!(port, value, "system control: write to unowned port"),
        }
    }
}

impl Device for SystemControl {
    fn name(&self) -> &str {
        "system-control"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.port92 &= 0x02;
        self.reset_control = 0;
    }
}

/// Saved state of the system control ports (separate from the runtime type).
mod save {
    use serde::{Deserialize, Serialize};

    /// Version of [`SystemControlStateV1`].
    pub const VERSION: u32 = 1;

    /// The ports' saved state, version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SystemControlStateV1 {
        /// Port 0x92 bits 0-1.
        pub port92: u8,
        /// Port 0xCF9 bits 1 and 3.
        pub reset_control: u8,
        /// Last POST code written to port 0x80.
        pub post_code: u8,
    }
}

impl SaveRestore for SystemControl {
    fn save(&mut self) -> SavedState {
        let state = save::SystemControlStateV1 {
            port92: self.port92,
            reset_control: self.reset_control,
            post_code: self.post_code,
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores the three registers; no reset request is made, even with port 0x92 bit 0 set.
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let dev = "system-control";
        let s: save::SystemControlStateV1 = crate::saved_state::decode(state, dev, save::VERSION)?;
        ensure(
            s.port92 & !0x03 == 0,
            dev,
            format!("port 0x92 {:#04x}", s.port92),
        )?;
        ensure(
            s.reset_control & !0x0A == 0,
            dev,
            format!("port 0xCF9 {:#04x}", s.reset_control),
        )?;
        self.port92 = s.port92;
        self.reset_control = s.reset_control;
        self.post_code = s.post_code;
        Ok(())
    }
}

impl PortIo for SystemControl {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        crate::read_bytewise(port, data, |p| self.read_port(p));
    }
    fn io_write(&mut self, port: u16, data: &[u8]) {
        crate::write_bytewise(port, data, |p, v| self.write_port(p, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn setup() -> (Arc<Mutex<Vec<ResetKind>>>, SystemControl) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (
            seen,
            SystemControl::new(Arc::new(move |k| s.lock().unwrap().push(k))),
        )
    }

    fn inb(d: &mut SystemControl, port: u16) -> u8 {
        let mut b = [0];
        d.io_read(port, &mut b);
        b[0]
    }

    #[test]
    fn port92_a20_and_fast_reset() {
        let (seen, mut d) = setup();
        assert_eq!(inb(&mut d, 0x92), 0x02);
        d.io_write(0x92, &[0x00]);
        assert!(!d.a20_enabled());
        d.io_write(0x92, &[0x03]);
        assert_eq!(inb(&mut d, 0x92), 0x03);
        d.io_write(0x92, &[0x03]); // no new edge
        assert_eq!(*seen.lock().unwrap(), vec![ResetKind::Fast]);
    }

    #[test]
    fn cf9_reset_control() {
        let (seen, mut d) = setup();
        d.io_write(0xCF9, &[0x02]);
        assert_eq!(inb(&mut d, 0xCF9), 0x02);
        assert!(seen.lock().unwrap().is_empty());
        d.io_write(0xCF9, &[0x06]);
        d.io_write(0xCF9, &[0x0E]);
        d.io_write(0xCF9, &[0x04]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![ResetKind::Hard, ResetKind::Full, ResetKind::Soft]
        );
        let mut b = [0u8; 2];
        d.io_read(0xCF9, &mut b);
        assert_eq!(b, [0x00, 0xFF]);
    }

    #[test]
    fn post_code_reads_back() {
        let (_, mut d) = setup();
        assert_eq!(inb(&mut d, 0x80), 0x00);
        d.io_write(0x80, &[0x55]);
        assert_eq!(inb(&mut d, 0x80), 0x55);
        assert_eq!(d.post_code(), 0x55);
    }

    fn reads(d: &mut SystemControl) -> Vec<u8> {
        [0x80, 0x92, 0xCF9].into_iter().map(|p| inb(d, p)).collect()
    }

    #[test]
    fn save_restore_round_trip() {
        let (seen_a, mut a) = setup();
        a.io_write(0x80, &[0x42]);
        a.io_write(0x92, &[0x01]); // A20 off, fast reset bit set
        a.io_write(0xCF9, &[0x0A]);
        let saved = a.save();
        assert_eq!(saved.device, "system-control");
        assert_eq!(*seen_a.lock().unwrap(), vec![ResetKind::Fast]);
        seen_a.lock().unwrap().clear();
        let (seen_b, mut b) = setup();
        b.restore(&saved).unwrap();
        assert_eq!(b.save(), saved);
        assert!(seen_b.lock().unwrap().is_empty(), "no reset on restore");
        assert_eq!(reads(&mut b), reads(&mut a));
        assert!(!b.a20_enabled());
        // Bit 0 is already set: rewriting it is no new edge on either.
        for d in [&mut a, &mut b] {
            d.io_write(0x92, &[0x03]);
            d.io_write(0x92, &[0x02]);
            d.io_write(0x92, &[0x03]);
        }
        assert_eq!(*seen_b.lock().unwrap(), *seen_a.lock().unwrap());
        assert_eq!(reads(&mut b), reads(&mut a));
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let (_, mut a) = setup();
        a.io_write(0x80, &[0x42]);
        let saved = a.save();
        let (_, mut b) = setup();
        b.io_write(0x80, &[0x99]);
        check_refusals(&mut b, &saved);
        let bad = edited(&saved, |s: &mut save::SystemControlStateV1| s.port92 = 0x07);
        check_corrupt(&mut b, &bad);
        let bad = edited(&saved, |s: &mut save::SystemControlStateV1| {
            s.reset_control = 0x04
        });
        check_corrupt(&mut b, &bad);
        assert_eq!(inb(&mut b, 0x80), 0x99, "still works");
    }
}
