//! Hypervisor conformance suite.
//!
//! Tiny guests, assembled at test time with iced-x86, exercise every exit path a backend must
//! finish: port I/O of 1/2/4 bytes, `rep outsb`/`rep insb`, MMIO reads and writes, HLT, a
//! PIC-delivered interrupt, reset, power-off and triple fault — in real mode, 32-bit protected
//! mode and 64-bit long mode (the guest enters the latter two itself). Every case asserts exact
//! results. Each backend runs the same bodies with [`backend_tests!`].
#![forbid(unsafe_code)]

pub mod firmware;
mod guest;
mod harness;

pub use guest::Mode;
pub use harness::{Harness, IoEvent, RunResult};

use hv::{ActivityState, Partition, StopReason};
use std::sync::Arc;

/// Creates partitions on the backend under test.
pub trait BackendFactory {
    /// A partition with `vcpus` processors.
    fn create(&self, vcpus: u32) -> hv::Result<Arc<dyn Partition>>;
}

impl<F: Fn(u32) -> hv::Result<Arc<dyn Partition>>> BackendFactory for F {
    fn create(&self, vcpus: u32) -> hv::Result<Arc<dyn Partition>> {
        self(vcpus)
    }
}

/// Port I/O of 1, 2 and 4 bytes in both directions.
pub fn port_io(f: &dyn BackendFactory, mode: Mode) {
    let h = Harness::new(f, mode, guest::port_io(mode));
    let r = h.run();
    assert_eq!(r.reason, StopReason::PowerOff, "{mode:?}: {r:?}");
    assert_eq!(
        r.events,
        vec![
            IoEvent::Out {
                port: 0x10,
                size: 1,
                value: 0x11
            },
            IoEvent::Out {
                port: 0x10,
                size: 2,
                value: 0x2233
            },
            IoEvent::Out {
                port: 0x10,
                size: 4,
                value: 0x4455_6677
            },
        ],
        "{mode:?}"
    );
    // IN AL / AX / EAX from port 0x16 (reads 0xDEADBEEF truncated), stored by the guest.
    assert_eq!(h.read_u32(guest::RESULTS), 0xEF, "{mode:?}: in al");
    assert_eq!(h.read_u32(guest::RESULTS + 4), 0xBEEF, "{mode:?}: in ax");
    assert_eq!(
        h.read_u32(guest::RESULTS + 8),
        0xDEAD_BEEF,
        "{mode:?}: in eax"
    );
}

/// `rep outsb` and `rep insb` with the direction flag clear.
pub fn string_io(f: &dyn BackendFactory, mode: Mode) {
    let h = Harness::new(f, mode, guest::string_io(mode));
    h.write(guest::OUT_BUFFER, b"Hello");
    let r = h.run();
    assert_eq!(r.reason, StopReason::PowerOff, "{mode:?}: {r:?}");
    let outs: Vec<u8> = r
        .events
        .iter()
        .map(|e| match *e {
            IoEvent::Out {
                port: 0x11,
                size: 1,
                value,
            } => value as u8,
            ref other => panic!("{mode:?}: unexpected {other:?}"),
        })
        .collect();
    assert_eq!(outs, b"Hello", "{mode:?}");
    assert_eq!(
        h.read(guest::IN_BUFFER, 6),
        vec![0x40, 0x41, 0x42, 0x43, 0x44, 0x00],
        "{mode:?}"
    );
    // Guest stored ECX, ESI, EDI after the string instructions.
    assert_eq!(h.read_u32(guest::RESULTS), 0, "{mode:?}: ecx");
    assert_eq!(
        h.read_u32(guest::RESULTS + 4),
        guest::OUT_BUFFER as u32 + 5,
        "{mode:?}: esi"
    );
    assert_eq!(
        h.read_u32(guest::RESULTS + 8),
        guest::IN_BUFFER as u32 + 5,
        "{mode:?}: edi"
    );
}

/// MMIO writes and reads of 1, 2 and 4 bytes outside RAM.
pub fn mmio(f: &dyn BackendFactory, mode: Mode) {
    let h = Harness::new(f, mode, guest::mmio(mode));
    let r = h.run();
    assert_eq!(r.reason, StopReason::PowerOff, "{mode:?}: {r:?}");
    let b = guest::MMIO_BASE;
    assert_eq!(
        r.events,
        vec![
            IoEvent::MmioWrite {
                address: b + 4,
                size: 4,
                value: 0xCAFE_BABE
            },
            IoEvent::MmioWrite {
                address: b + 2,
                size: 2,
                value: 0x1234
            },
            IoEvent::MmioWrite {
                address: b + 1,
                size: 1,
                value: 0x56
            },
        ],
        "{mode:?}"
    );
    assert_eq!(
        h.read_u32(guest::RESULTS),
        0x1234_5678,
        "{mode:?}: dword read"
    );
    assert_eq!(
        h.read_u32(guest::RESULTS + 4),
        0x5678,
        "{mode:?}: word read"
    );
    assert_eq!(h.read_u32(guest::RESULTS + 8), 0x78, "{mode:?}: byte read");
    // Unclaimed MMIO reads all-ones.
    assert_eq!(
        h.read_u32(guest::RESULTS + 12),
        0xFFFF_FFFF,
        "{mode:?}: unclaimed read"
    );
}

/// HLT with interrupts disabled leaves the processor halted after the instruction; a stop
/// request returns from `run` with the halt visible in the state.
pub fn hlt(f: &dyn BackendFactory, mode: Mode) {
    let h = Harness::new(f, mode, guest::hlt(mode));
    let (r, state) = h.run_until_halted();
    assert_eq!(r.reason, StopReason::Stopped, "{mode:?}: {r:?}");
    assert_eq!(state.activity, ActivityState::Halted, "{mode:?}");
    let hlt_end = h.symbol("after_hlt");
    assert_eq!(
        state.sregs.cs.base + state.regs.rip,
        hlt_end,
        "{mode:?}: rip after hlt"
    );
}

/// An interrupt from the PIC (ExtINT via LINT0) wakes a halted processor and runs its handler
/// through the IVT/IDT.
pub fn pic_interrupt(f: &dyn BackendFactory, mode: Mode) {
    let h = Harness::new(f, mode, guest::pic_interrupt(mode));
    let r = h.run_with_interrupt(guest::PIC_IRQ);
    assert_eq!(r.reason, StopReason::PowerOff, "{mode:?}: {r:?}");
    assert_eq!(
        r.events,
        vec![IoEvent::Out {
            port: 0x13,
            size: 1,
            value: u32::from(guest::PIC_VECTOR)
        }],
        "{mode:?}"
    );
}

/// A write of 6 to port 0xCF9 makes `run` return [`StopReason::Reset`]; after
/// `VirtualProcessor::reset` the processor executes from F000:FFF0.
pub fn reset(f: &dyn BackendFactory) {
    let h = Harness::new(f, Mode::Real, guest::reset());
    let r = h.run();
    assert_eq!(r.reason, StopReason::Reset, "{r:?}");
    let s = h.reset_vp();
    assert_eq!(s.regs.rip, 0xfff0);
    assert_eq!(s.sregs.cs.selector, 0xf000);
    assert_eq!(s.sregs.cs.base, 0xffff_0000);
    assert_eq!(s.sregs.cr0 & 1, 0, "real mode after reset");
    assert_eq!(s.activity, ActivityState::Running);
    // The reset vector (in a read-only ROM slot) runs and powers off.
    let r = h.run();
    assert_eq!(r.reason, StopReason::PowerOff, "{r:?}");
    assert_eq!(
        r.events,
        vec![IoEvent::Out {
            port: 0x14,
            size: 1,
            value: 0x5a
        }]
    );
}

/// A write to the power-off port stops the processor with [`StopReason::PowerOff`] and the
/// instruction completed.
pub fn power_off(f: &dyn BackendFactory, mode: Mode) {
    let h = Harness::new(f, mode, guest::power_off(mode));
    let r = h.run();
    assert_eq!(r.reason, StopReason::PowerOff, "{mode:?}: {r:?}");
    let s = h.state();
    assert_eq!(
        s.sregs.cs.base + s.regs.rip,
        h.symbol("after_power_off"),
        "{mode:?}"
    );
    assert_eq!(
        s.regs.rax & 0xff,
        0x99,
        "{mode:?}: instruction before it ran"
    );
}

/// An exception with no usable IVT/IDT escalates to a triple fault.
pub fn triple_fault(f: &dyn BackendFactory) {
    let h = Harness::new(f, Mode::Protected32, guest::triple_fault());
    let r = h.run();
    assert_eq!(r.reason, StopReason::TripleFault, "{r:?}");
}

/// Generates one `#[test]` per conformance case for a backend. `$factory` is an expression
/// implementing [`BackendFactory`].
#[macro_export]
macro_rules! backend_tests {
    ($factory:expr) => {
        mod conformance_cases {
            use super::*;
            use $crate::Mode;
            #[test]
            fn port_io_real() {
                $crate::port_io(&$factory, Mode::Real)
            }
            #[test]
            fn port_io_protected32() {
                $crate::port_io(&$factory, Mode::Protected32)
            }
            #[test]
            fn port_io_long64() {
                $crate::port_io(&$factory, Mode::Long64)
            }
            #[test]
            fn string_io_real() {
                $crate::string_io(&$factory, Mode::Real)
            }
            #[test]
            fn string_io_protected32() {
                $crate::string_io(&$factory, Mode::Protected32)
            }
            #[test]
            fn string_io_long64() {
                $crate::string_io(&$factory, Mode::Long64)
            }
            #[test]
            fn mmio_real() {
                $crate::mmio(&$factory, Mode::Real)
            }
            #[test]
            fn mmio_protected32() {
                $crate::mmio(&$factory, Mode::Protected32)
            }
            #[test]
            fn mmio_long64() {
                $crate::mmio(&$factory, Mode::Long64)
            }
            #[test]
            fn hlt_real() {
                $crate::hlt(&$factory, Mode::Real)
            }
            #[test]
            fn hlt_protected32() {
                $crate::hlt(&$factory, Mode::Protected32)
            }
            #[test]
            fn hlt_long64() {
                $crate::hlt(&$factory, Mode::Long64)
            }
            #[test]
            fn pic_interrupt_real() {
                $crate::pic_interrupt(&$factory, Mode::Real)
            }
            #[test]
            fn pic_interrupt_protected32() {
                $crate::pic_interrupt(&$factory, Mode::Protected32)
            }
            #[test]
            fn pic_interrupt_long64() {
                $crate::pic_interrupt(&$factory, Mode::Long64)
            }
            #[test]
            fn power_off_real() {
                $crate::power_off(&$factory, Mode::Real)
            }
            #[test]
            fn power_off_long64() {
                $crate::power_off(&$factory, Mode::Long64)
            }
            #[test]
            fn reset() {
                $crate::reset(&$factory)
            }
            #[test]
            fn triple_fault() {
                $crate::triple_fault(&$factory)
            }
        }
    };
}
