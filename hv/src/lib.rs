//! Backend-neutral hypervisor interface.
//!
//! A [`Partition`] is one VM: guest memory slots, interrupt delivery and its virtual processors.
//! A [`VirtualProcessor`] runs guest code until it must stop; along the way it calls the
//! [`CpuIo`] callbacks for port I/O and MMIO and completes each instruction itself, so the
//! machine never sees raw exit structures. Stop reasons are few ([`StopReason`]).
//!
//! Backends: `backend-kvm` (Linux KVM), `backend-whp` (Windows Hypervisor Platform) and
//! `backend-emu` (software CPU) implement these traits.
#![forbid(unsafe_code)]

mod state;
mod stop;

pub use state::*;
pub use stop::*;

use std::sync::Arc;

pub use vm_memory::{GuestMemoryMmap, GuestRegionMmap};

/// Errors reported by a hypervisor backend.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    /// The hypervisor is not present on this host.
    #[error("{0}")]
    Unavailable(String),
    /// The hypervisor exists but this user may not open it.
    #[error("{0}")]
    PermissionDenied(String),
    /// The backend does not offer the requested feature.
    #[error("not supported by this backend: {0}")]
    Unsupported(&'static str),
    /// A hypervisor call failed.
    #[error("{call} failed: {source}")]
    Call {
        /// The operation that failed, e.g. `KVM_SET_REGS`.
        call: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// An argument was out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, HvError>;

/// Where the interrupt controllers live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IrqChipMode {
    /// Local APICs in the hypervisor; PIC, IOAPIC and PIT emulated in user space by the
    /// machine's devices. Works on every backend.
    #[default]
    Split,
    /// PIC, IOAPIC, PIT and LAPICs all inside the hypervisor (KVM only). Interrupt lines are
    /// driven with [`Partition::set_irq_line`].
    InKernel,
}

/// How a partition is created.
#[derive(Debug, Clone)]
pub struct PartitionConfig {
    /// Number of virtual processors (1..=backend maximum).
    pub vcpu_count: u32,
    /// Interrupt controller placement.
    pub irqchip: IrqChipMode,
}

/// A message-signalled interrupt as written by a device or the IOAPIC (x86 MSI format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    /// Address (0xFEExxxxx: destination APIC ID in bits 19:12, destination mode bit 2).
    pub address: u64,
    /// Data (vector in bits 7:0, delivery mode 10:8, level 14, trigger mode 15).
    pub data: u32,
}

impl MsiMessage {
    /// The interrupt vector.
    pub fn vector(&self) -> u8 {
        self.data as u8
    }
    /// True when the trigger mode bit says level-triggered.
    pub fn level_triggered(&self) -> bool {
        self.data & (1 << 15) != 0
    }
}

/// One VM on a hypervisor.
///
/// Shared between threads: the machine keeps it while each vCPU thread owns its
/// [`VirtualProcessor`].
pub trait Partition: Send + Sync {
    /// Short backend name for status lines ("kvm", "whp", "emu").
    fn backend_name(&self) -> &'static str;

    /// Interrupt controller placement chosen at creation.
    fn irqchip_mode(&self) -> IrqChipMode;

    /// Maps a region of guest memory at its guest address. Read-only slots turn guest writes
    /// into MMIO writes through [`CpuIo::mmio_write`]. `slot` numbers are chosen by the caller.
    fn map_memory(&self, slot: u32, region: Arc<GuestRegionMmap>, read_only: bool) -> Result<()>;

    /// Removes a slot mapped with [`Partition::map_memory`].
    fn unmap_memory(&self, slot: u32) -> Result<()>;

    /// Creates virtual processor `index` (0 is the bootstrap processor). Each index once.
    fn create_vp(&self, index: u32) -> Result<Box<dyn VirtualProcessor>>;

    /// Delivers an MSI to the local APICs (IOAPIC and PCI MSI delivery in split mode).
    fn request_msi(&self, msi: MsiMessage) -> Result<()>;

    /// Tells the hypervisor which MSI an IOAPIC pin currently produces (`None`: masked), so
    /// that EOIs of level-triggered vectors come back through [`CpuIo::eoi`]. Split mode only.
    fn set_ioapic_route(&self, pin: u8, msi: Option<MsiMessage>) -> Result<()>;

    /// Drives an interrupt line of the in-hypervisor PIC/IOAPIC (in-kernel mode only).
    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<()>;

    /// Tells the backend that something other than a virtual processor (device DMA, a loader)
    /// wrote `len` bytes of guest RAM at `address`, so that caches of decoded guest code drop
    /// what they hold for it. Hardware backends need nothing and keep the default.
    fn guest_memory_written(&self, _address: u64, _len: usize) {}
}

/// The machine side of a running virtual processor: device access and interrupt sources.
///
/// All methods are called on the vCPU's own thread while it is inside
/// [`VirtualProcessor::run`]. `data` lengths are 1, 2, 4 or 8 bytes.
pub trait CpuIo {
    /// Port read; fill `data` (unclaimed ports read all-ones).
    fn io_read(&self, vp: u32, port: u16, data: &mut [u8]);
    /// Port write.
    fn io_write(&self, vp: u32, port: u16, data: &[u8]);
    /// MMIO read outside RAM; fill `data` (unclaimed addresses read all-ones).
    fn mmio_read(&self, vp: u32, address: u64, data: &mut [u8]);
    /// MMIO write outside RAM (or into a read-only slot).
    fn mmio_write(&self, vp: u32, address: u64, data: &[u8]);
    /// End of interrupt for a level-triggered vector delivered through the IOAPIC.
    fn eoi(&self, _vp: u32, _vector: u8) {}
    /// True when the user-space PIC has an interrupt for this processor's LINT0 (ExtINT).
    fn pic_interrupt_pending(&self, _vp: u32) -> bool {
        false
    }
    /// Acknowledges the PIC's interrupt (the INTA cycle) and returns its vector.
    fn pic_acknowledge(&self, _vp: u32) -> Option<u8> {
        None
    }
}

/// A virtual processor owned by one thread.
pub trait VirtualProcessor: Send {
    /// Index given to [`Partition::create_vp`].
    fn index(&self) -> u32;

    /// Runs guest code until a stop is requested through [`VirtualProcessor::stop_handle`],
    /// the guest triple-faults, or the hypervisor cannot continue.
    fn run(&mut self, io: &dyn CpuIo) -> Result<StopReason>;

    /// A handle other threads use to stop this processor or wake it to look for interrupts.
    fn stop_handle(&self) -> Arc<StopHandle>;

    /// Reads the complete architectural state.
    fn state(&mut self) -> Result<VpState>;

    /// Writes the complete architectural state.
    fn set_state(&mut self, state: &VpState) -> Result<()>;

    /// Puts the processor into its power-on state (BSP: F000:FFF0; AP: waiting for SIPI).
    fn reset(&mut self) -> Result<()>;
}
