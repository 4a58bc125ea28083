//! The [`hv`] traits on the Windows Hypervisor Platform (WHP).
//!
//! WHP runs guest code in hardware and emulates the local APICs; it leaves to user space
//! every instruction that touches MMIO or ports, and has no PIC or IOAPIC. This crate
//! finishes those exits itself, so the machine sees only [`hv::CpuIo`] callbacks:
//!
//! - [`exit`] decodes `WHV_RUN_VP_EXIT_CONTEXT` into Rust data;
//! - [`emulate`] completes MMIO and string/REP port I/O by running the instruction through
//!   [`x86emu`] against guest RAM ([`memory`]) and the machine, and plain IN/OUT straight
//!   from the exit context; a guest fault becomes an exception to inject;
//! - [`interrupts`] decides when the user-space PIC's vectors are injected and when an
//!   interrupt window is requested, turns MSIs into `WHvRequestInterrupt` requests and
//!   routes EOIs of level-triggered vectors back to the IOAPIC;
//! - [`intercepts`] answers the CPUID and MSR exits;
//! - [`regs`] converts between [`hv::VpState`] and WHP register lists.
//!
//! Those modules are plain code, built and tested on every host. The calls into
//! `winhvplatform.dll` live in a Windows-only module (`WhpPartition`, `WhpVp`); the DLL
//! is loaded at run time, so a build runs on Windows without the optional feature enabled
//! and reports the backend as unavailable there. Elsewhere [`create_partition`] reports
//! [`hv::HvError::Unavailable`].
#![cfg_attr(not(windows), forbid(unsafe_code))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod emulate;
pub mod exit;
pub mod intercepts;
pub mod interrupts;
pub mod memory;
pub mod regs;

#[cfg(test)]
mod testutil;

#[cfg(windows)]
mod windows;

#[cfg(windows)]
pub use windows::{WhpHypervisor, WhpPartition, WhpVp};

use std::sync::Arc;

/// Largest number of virtual processors a partition is created with.
pub const MAX_VCPUS: u32 = 64;

/// Creates a WHP partition with `config.vcpu_count` processors to come (split interrupt
/// controllers only: the PIC and IOAPIC are the machine's).
#[cfg(windows)]
pub fn create_partition(config: &hv::PartitionConfig) -> hv::Result<Arc<dyn hv::Partition>> {
    let whp = WhpHypervisor::open()?;
    Ok(Arc::new(whp.create_partition(config)?))
}

/// Creates a WHP partition; on this host it reports that WHP exists only on Windows.
#[cfg(not(windows))]
pub fn create_partition(config: &hv::PartitionConfig) -> hv::Result<Arc<dyn hv::Partition>> {
    let _ = config;
    Err(hv::HvError::Unavailable(
        "the Windows Hypervisor Platform exists only on Windows".into(),
    ))
}

#[cfg(all(test, not(windows)))]
mod tests {
    #[test]
    fn unavailable_off_windows() {
        let e = super::create_partition(&hv::PartitionConfig {
            vcpu_count: 1,
            irqchip: hv::IrqChipMode::Split,
        })
        .err()
        .expect("no WHP here");
        assert!(matches!(e, hv::HvError::Unavailable(ref m) if m.contains("only on Windows")));
    }
}
