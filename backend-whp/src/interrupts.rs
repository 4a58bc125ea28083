//! Interrupt delivery decisions for the user-space interrupt controllers.
//!
//! WHP emulates the local APICs but has no PIC or IOAPIC; the machine's devices provide
//! those. This module decides, as plain code:
//! - when a PIC vector (ExtINT through LINT0) is injected through the pending-interruption
//!   register and when an interrupt-window notification is requested instead
//!   ([`PicDelivery`]);
//! - how an MSI (from the IOAPIC or a PCI device) becomes a `WHvRequestInterrupt` request
//!   ([`InterruptRequest`]);
//! - which EOIs go back to the IOAPIC ([`EoiFilter`], fed by the IOAPIC routes and the
//!   level-triggered MSIs delivered).

use hv::{CpuIo, MsiMessage};

/// What decides whether an external interrupt can be injected now, as the last exit reported
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interruptibility {
    /// RFLAGS.IF.
    pub interrupts_enabled: bool,
    /// Interrupts blocked for one instruction (after STI or MOV SS).
    pub interrupt_shadow: bool,
    /// An event is already being injected.
    pub event_pending: bool,
}

impl Interruptibility {
    /// True when an external interrupt injected now is delivered before the next instruction.
    pub fn can_take_interrupt(&self) -> bool {
        self.interrupts_enabled && !self.interrupt_shadow && !self.event_pending
    }
}

/// What to do before the next run about the PIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PicActions {
    /// Inject this vector (already acknowledged at the PIC) through the pending-interruption
    /// register; a halted processor must also be woken.
    pub inject: Option<u8>,
    /// Write the deliverability-notification register: `Some(true)` asks for an exit when
    /// interrupts can be delivered.
    pub window: Option<bool>,
}

/// Delivery of the user-space PIC's interrupts to one processor.
#[derive(Debug, Clone, Default)]
pub struct PicDelivery {
    window_requested: bool,
}

impl PicDelivery {
    /// A processor with no window requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while an interrupt-window notification is armed.
    pub fn window_requested(&self) -> bool {
        self.window_requested
    }

    /// Decides before a run. `cpu` is the interruptibility the last exit reported, `None`
    /// when unknown (first run, state just replaced): then a window is requested rather than
    /// injecting blindly.
    pub fn prepare(
        &mut self,
        io: &dyn CpuIo,
        vp: u32,
        cpu: Option<Interruptibility>,
    ) -> PicActions {
        if !io.pic_interrupt_pending(vp) {
            return PicActions::default();
        }
        let mut actions = PicActions::default();
        if cpu.is_some_and(|c| c.can_take_interrupt()) {
            actions.inject = io.pic_acknowledge(vp);
        }
        // The next vector (or this one, when the processor could not take it) waits for the
        // window; the register is written once until the window exit disarms it.
        let waiting = actions.inject.is_none() || io.pic_interrupt_pending(vp);
        if waiting && !self.window_requested {
            self.window_requested = true;
            actions.window = Some(true);
        }
        actions
    }

    /// The interrupt-window exit came; the run loop disarms the notification register.
    pub fn window_opened(&mut self) {
        self.window_requested = false;
    }

    /// The notification register was reset with the rest of the state.
    pub fn reset(&mut self) {
        self.window_requested = false;
    }
}

/// `WHV_INTERRUPT_TYPE` values.
pub mod interrupt_type {
    /// Fixed.
    pub const FIXED: u32 = 0;
    /// Lowest priority.
    pub const LOWEST_PRIORITY: u32 = 1;
    /// NMI.
    pub const NMI: u32 = 4;
    /// INIT.
    pub const INIT: u32 = 5;
    /// Startup IPI.
    pub const SIPI: u32 = 6;
}

/// A `WHV_INTERRUPT_CONTROL` for `WHvRequestInterrupt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterruptRequest {
    /// [`interrupt_type`] value.
    pub kind: u32,
    /// Logical destination mode (else physical).
    pub logical: bool,
    /// Level-triggered (its EOI exits as `WHvRunVpExitReasonX64ApicEoi`).
    pub level: bool,
    /// Destination APIC ID or logical mask.
    pub destination: u32,
    /// Vector.
    pub vector: u32,
}

/// The memory layout of `WHV_INTERRUPT_CONTROL` (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct RawInterruptControl {
    /// Type 7:0, destination mode 11:8, trigger mode 15:12.
    pub control: u64,
    /// Destination.
    pub destination: u32,
    /// Vector.
    pub vector: u32,
}

impl InterruptRequest {
    /// The request an MSI makes, or `None` for what WHP cannot deliver this way (SMI,
    /// ExtINT, reserved modes) and for the de-assert half of a level-triggered message.
    pub fn from_msi(msi: MsiMessage) -> Option<Self> {
        let mode = (msi.data >> 8) & 7;
        let kind = match mode {
            0 => interrupt_type::FIXED,
            1 => interrupt_type::LOWEST_PRIORITY,
            4 => interrupt_type::NMI,
            5 => interrupt_type::INIT,
            6 => interrupt_type::SIPI,
            _ => {
                tracing::debug!(
                    address = format_args!("{:#x}", msi.address),
                    data = format_args!("{:#x}", msi.data),
                    "MSI delivery mode not supported by WHP; dropped"
                );
                return None;
            }
        };
        let level = msi.level_triggered() && matches!(mode, 0 | 1);
        if msi.level_triggered() && msi.data & (1 << 14) == 0 {
            // Level de-assert: nothing to deliver.
            return None;
        }
        Some(Self {
            kind,
            logical: msi.address & (1 << 2) != 0,
            level,
            destination: ((msi.address >> 12) & 0xff) as u32,
            vector: u32::from(msi.vector()),
        })
    }

    /// The request as `WHV_INTERRUPT_CONTROL` lays it out.
    pub fn to_raw(self) -> RawInterruptControl {
        RawInterruptControl {
            control: u64::from(self.kind & 0xff)
                | u64::from(self.logical) << 8
                | u64::from(self.level) << 12,
            destination: self.destination,
            vector: self.vector,
        }
    }
}

/// IOAPIC pins tracked (the machine's IOAPIC has 24).
pub const IOAPIC_PINS: usize = 24;

/// Which EOIs the IOAPIC must see: vectors of level-triggered IOAPIC routes and of
/// level-triggered MSIs delivered.
#[derive(Debug, Clone)]
pub struct EoiFilter {
    routes: [Option<MsiMessage>; IOAPIC_PINS],
    delivered_level: [u64; 4],
}

impl Default for EoiFilter {
    fn default() -> Self {
        Self {
            routes: [None; IOAPIC_PINS],
            delivered_level: [0; 4],
        }
    }
}

impl EoiFilter {
    /// No routes, nothing delivered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the MSI IOAPIC `pin` produces (`None`: masked).
    pub fn set_route(&mut self, pin: u8, msi: Option<MsiMessage>) -> hv::Result<()> {
        let Some(r) = self.routes.get_mut(usize::from(pin)) else {
            return Err(hv::HvError::InvalidArgument(format!("IOAPIC pin {pin}")));
        };
        *r = msi;
        Ok(())
    }

    /// The route of `pin`.
    pub fn route(&self, pin: u8) -> Option<MsiMessage> {
        self.routes.get(usize::from(pin)).copied().flatten()
    }

    /// Notes an interrupt delivered through `WHvRequestInterrupt`.
    pub fn delivered(&mut self, r: &InterruptRequest) {
        if r.level {
            let v = r.vector as usize & 0xff;
            self.delivered_level[v / 64] |= 1 << (v % 64);
        }
    }

    /// True when an EOI of `vector` goes to the IOAPIC.
    pub fn forwards(&self, vector: u8) -> bool {
        let v = usize::from(vector);
        self.delivered_level[v / 64] & (1 << (v % 64)) != 0
            || self
                .routes
                .iter()
                .flatten()
                .any(|m| m.vector() == vector && m.level_triggered())
    }

    /// Handles an EOI exit: tells the machine when the vector is one the IOAPIC tracks.
    pub fn eoi(&self, io: &dyn CpuIo, vp: u32, vector: u8) {
        if self.forwards(vector) {
            io.eoi(vp, vector);
        } else {
            tracing::trace!(vp, vector, "EOI of a vector no IOAPIC route uses");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Recorder;

    const OPEN: Interruptibility = Interruptibility {
        interrupts_enabled: true,
        interrupt_shadow: false,
        event_pending: false,
    };

    #[test]
    fn pic_vector_injected_when_the_processor_can_take_it() {
        let io = Recorder::default();
        let mut pic = PicDelivery::new();
        assert_eq!(pic.prepare(&io, 0, Some(OPEN)), PicActions::default());
        io.raise_pic(0x08);
        let a = pic.prepare(&io, 0, Some(OPEN));
        assert_eq!(a.inject, Some(0x08));
        assert_eq!(a.window, None, "nothing else waits");
        assert!(!io.pic_interrupt_pending(0), "acknowledged at the PIC");
    }

    #[test]
    fn blocked_processor_gets_a_window_request_once() {
        for blocked in [
            Interruptibility {
                interrupts_enabled: false,
                ..OPEN
            },
            Interruptibility {
                interrupt_shadow: true,
                ..OPEN
            },
            Interruptibility {
                event_pending: true,
                ..OPEN
            },
        ] {
            let io = Recorder::default();
            io.raise_pic(0x09);
            let mut pic = PicDelivery::new();
            let a = pic.prepare(&io, 0, Some(blocked));
            assert_eq!(a.inject, None, "{blocked:?}");
            assert_eq!(a.window, Some(true));
            assert!(io.pic_interrupt_pending(0), "not acknowledged");
            // Still blocked: the armed window is not written again.
            assert_eq!(pic.prepare(&io, 0, Some(blocked)), PicActions::default());
            // The window exit disarms it; now the vector goes in.
            pic.window_opened();
            assert_eq!(pic.prepare(&io, 0, Some(OPEN)).inject, Some(0x09));
        }
    }

    #[test]
    fn unknown_interruptibility_waits_for_the_window() {
        let io = Recorder::default();
        io.raise_pic(0x20);
        let mut pic = PicDelivery::new();
        let a = pic.prepare(&io, 0, None);
        assert_eq!((a.inject, a.window), (None, Some(true)));
        pic.reset();
        assert!(!pic.window_requested());
    }

    #[test]
    fn second_vector_waits_behind_the_first() {
        let io = Recorder::default();
        io.raise_pic(0x20);
        io.raise_pic(0x21);
        let mut pic = PicDelivery::new();
        let a = pic.prepare(&io, 0, Some(OPEN));
        assert_eq!((a.inject, a.window), (Some(0x20), Some(true)));
        pic.window_opened();
        let a = pic.prepare(&io, 0, Some(OPEN));
        assert_eq!((a.inject, a.window), (Some(0x21), None));
    }

    #[test]
    fn msi_becomes_an_interrupt_request() {
        // Fixed, physical destination 1, vector 0x31, edge.
        let r = InterruptRequest::from_msi(MsiMessage {
            address: 0xfee0_1000,
            data: 0x31,
        })
        .unwrap();
        assert_eq!(
            r,
            InterruptRequest {
                kind: interrupt_type::FIXED,
                logical: false,
                level: false,
                destination: 1,
                vector: 0x31
            }
        );
        assert_eq!(
            r.to_raw(),
            RawInterruptControl {
                control: 0,
                destination: 1,
                vector: 0x31
            }
        );
        // Lowest priority, logical, level asserted.
        let r = InterruptRequest::from_msi(MsiMessage {
            address: 0xfee0_3004,
            data: 0xc000 | 0x100 | 0x41,
        })
        .unwrap();
        assert_eq!(r.kind, interrupt_type::LOWEST_PRIORITY);
        assert!(r.logical && r.level);
        assert_eq!(r.destination, 3);
        assert_eq!(r.to_raw().control, 1 | 1 << 8 | 1 << 12);
        // NMI: never level.
        let r = InterruptRequest::from_msi(MsiMessage {
            address: 0xfee0_0000,
            data: 0x400 | 0xc000,
        })
        .unwrap();
        assert_eq!(r.kind, interrupt_type::NMI);
        assert!(!r.level);
        // Level de-assert, SMI and ExtINT deliver nothing.
        for data in [0x8000 | 0x41, 0x200, 0x700] {
            assert_eq!(
                InterruptRequest::from_msi(MsiMessage {
                    address: 0xfee0_0000,
                    data
                }),
                None,
                "{data:#x}"
            );
        }
    }

    #[test]
    fn eois_reach_the_ioapic_for_level_vectors_only() {
        let io = Recorder::default();
        let mut f = EoiFilter::new();
        let level = MsiMessage {
            address: 0xfee0_0000,
            data: 0xc000 | 0x39,
        };
        f.set_route(9, Some(level)).unwrap();
        f.set_route(
            4,
            Some(MsiMessage {
                address: 0xfee0_0000,
                data: 0x34,
            }),
        )
        .unwrap();
        assert!(f.set_route(24, None).is_err());
        f.eoi(&io, 0, 0x39);
        f.eoi(&io, 0, 0x34);
        assert_eq!(io.eois(), vec![0x39]);
        // A level-triggered MSI delivered directly is tracked too.
        let msi = InterruptRequest::from_msi(MsiMessage {
            address: 0xfee0_0000,
            data: 0xc000 | 0x50,
        })
        .unwrap();
        f.delivered(&msi);
        assert!(f.forwards(0x50));
        // A masked pin forgets its vector.
        f.set_route(9, None).unwrap();
        assert!(!f.forwards(0x39));
        assert_eq!(f.route(4).map(|m| m.vector()), Some(0x34));
    }
}
