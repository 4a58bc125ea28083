//! The [`hv`] traits on a software CPU ([`x86emu`]): whole guests without hardware
//! virtualization.
//!
//! Each virtual processor is an [`x86emu::Cpu`] plus a user-space local APIC. The run loop
//! delivers pending NMIs, INIT/SIPI and interrupts (LAPIC first, then the PIC through LINT0),
//! executes instructions in batches, and sleeps on a condition variable while halted until an
//! interrupt, a kick or the APIC timer wakes it. Guest memory is the partition's slots; every
//! other physical address goes to [`hv::CpuIo`] as MMIO (the APIC page excepted). The CPU reads
//! and writes the slots' host memory directly ([`x86emu::Bus::ram`]), as atomics because
//! devices and other processors access it concurrently.
#![deny(unsafe_code)]

mod lapic;
#[cfg(all(target_arch = "x86_64", unix))]
mod native_code;
#[cfg(all(target_arch = "x86_64", unix))]
pub use native_code::ExecMemory;

use hv::{
    CpuIo, HvError, IrqChipMode, MsiMessage, Partition, PartitionConfig, StopHandle, StopReason,
    VirtualProcessor, VpState,
};
use lapic::{Ipi, Lapic};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress, VolatileMemory};
use x86emu::{Cpu, RamRegion, Step};

/// Instructions executed between looks at the local APIC. Within a batch the CPU asks its stop
/// condition every few thousand instructions (see [`Cpu::run`]): a request from
/// another thread, an interrupt waiting for the processor to enable interrupts, the APIC timer's
/// deadline, or a write to the processor's own APIC end the batch early.
const BATCH: u32 = 65536;
/// The TSC-deadline MSR of the local APIC timer.
const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// Physical addresses below this may hold cached decoded code (64 GiB).
const CODE_TRACKED: u64 = 1 << 36;
/// Largest vCPU count.
pub const MAX_VCPUS: u32 = 64;

/// Gives the CPU executable memory for native blocks where the host allows it (x86-64 Unix
/// hosts), unless `TERRARIUM_EMU_NATIVE=0` asks for the interpreter alone.
fn enable_native_code(cpu: &mut Cpu) {
    if std::env::var_os("TERRARIUM_EMU_NATIVE").is_some_and(|v| v == "0") {
        return;
    }
    #[cfg(all(target_arch = "x86_64", unix))]
    if let Some(mem) = native_code::ExecMemory::new() {
        cpu.set_native_code(Box::new(mem), native_code::THRESHOLD);
    }
    #[cfg(not(all(target_arch = "x86_64", unix)))]
    let _ = cpu;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct Slot {
    id: u32,
    start: u64,
    end: u64,
    region: Arc<GuestRegionMmap>,
    read_only: bool,
}

/// Per-processor state other threads touch: the APIC and the wake-up signal.
struct VpShared {
    lapic: Mutex<Lapic>,
    wake: Mutex<bool>,
    cv: Condvar,
    attention: AtomicBool,
}

impl VpShared {
    fn kick(&self) {
        self.attention.store(true, Ordering::SeqCst);
        *lock(&self.wake) = true;
        self.cv.notify_all();
    }
}

/// One interrupt message on its way to the local APICs.
struct Delivery {
    /// Delivery mode (0 fixed, 1 lowest priority, 4 NMI, 5 INIT, 6 SIPI).
    mode: u32,
    vector: u8,
    /// Level-triggered (recorded in the TMR so the EOI reaches the IOAPIC).
    level: bool,
    dest: u8,
    logical: bool,
    /// ICR destination shorthand (0 none, 1 self, 2 all, 3 all but self).
    shorthand: u32,
    /// Sending APIC, for IPIs.
    source: Option<u8>,
}

struct Inner {
    config: PartitionConfig,
    code: Arc<x86emu::CodeTracker>,
    slots: RwLock<Arc<Vec<Slot>>>,
    vps: RwLock<Vec<Option<Arc<VpShared>>>>,
    origin: Instant,
}

impl Inner {
    /// The current memory slots.
    fn slots(&self) -> Arc<Vec<Slot>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn targets(&self) -> Vec<Arc<VpShared>> {
        self.vps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Delivers an interrupt message to the APICs it names.
    fn deliver(&self, m: Delivery) {
        let Delivery {
            mode,
            vector,
            level,
            dest,
            logical,
            shorthand,
            source,
        } = m;
        let mut delivered = false;
        for vp in self.targets() {
            let mut l = lock(&vp.lapic);
            let id = l.id();
            let hit = match shorthand {
                1 => Some(id) == source,
                2 => true,
                3 => Some(id) != source,
                _ => l.matches(dest, logical),
            };
            if !hit || (mode == 1 && delivered) {
                continue;
            }
            match mode {
                0 | 1 => l.set_irr(vector, level),
                4 => l.nmi_pending = true,
                5 => l.init_pending = true,
                6 => l.sipi_pending = Some(vector),
                _ => continue,
            }
            delivered = true;
            drop(l);
            vp.kick();
        }
    }

    fn send_ipi(&self, ipi: Ipi) {
        let lo = ipi.icr_lo;
        let mode = (lo >> 8) & 7;
        let level_assert = lo & (1 << 14) != 0;
        let trigger_level = lo & (1 << 15) != 0;
        // INIT de-assert: level-triggered with the level bit clear.
        if mode == 5 && trigger_level && !level_assert {
            return;
        }
        self.deliver(Delivery {
            mode,
            vector: lo as u8,
            level: trigger_level && mode == 0,
            dest: ipi.dest,
            logical: lo & (1 << 11) != 0,
            shorthand: (lo >> 18) & 3,
            source: Some(ipi.source),
        });
    }
}

/// Creates software-CPU partitions.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmuHypervisor;

impl EmuHypervisor {
    /// Creates a VM. Only the split interrupt-controller placement exists here.
    pub fn create_partition(&self, config: &PartitionConfig) -> hv::Result<EmuPartition> {
        if config.irqchip != IrqChipMode::Split {
            return Err(HvError::Unsupported(
                "the software CPU has no in-kernel irqchip; use split",
            ));
        }
        if config.vcpu_count == 0 || config.vcpu_count > MAX_VCPUS {
            return Err(HvError::InvalidArgument(format!(
                "{} vCPUs requested; the software CPU allows 1 to {MAX_VCPUS}",
                config.vcpu_count
            )));
        }
        Ok(EmuPartition {
            inner: Arc::new(Inner {
                config: config.clone(),
                code: Arc::new(x86emu::CodeTracker::new(CODE_TRACKED)),
                slots: RwLock::new(Arc::new(Vec::new())),
                vps: RwLock::new(vec![None; config.vcpu_count as usize]),
                origin: Instant::now(),
            }),
        })
    }
}

/// A software-CPU VM.
pub struct EmuPartition {
    inner: Arc<Inner>,
}

impl Partition for EmuPartition {
    fn backend_name(&self) -> &'static str {
        "emu"
    }

    fn guest_memory_written(&self, address: u64, len: usize) {
        self.inner.code.note_write(address, len);
    }

    fn irqchip_mode(&self) -> IrqChipMode {
        IrqChipMode::Split
    }

    fn map_memory(
        &self,
        slot: u32,
        region: Arc<GuestRegionMmap>,
        read_only: bool,
    ) -> hv::Result<()> {
        let start = region.start_addr().0;
        let end = start + region.len();
        let mut slots = self.inner.slots.write().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Slot> = slots.iter().filter(|s| s.id != slot).cloned().collect();
        if v.iter().any(|s| s.start < end && start < s.end) {
            return Err(HvError::InvalidArgument(format!(
                "memory slot {slot} overlaps another slot"
            )));
        }
        v.push(Slot {
            id: slot,
            start,
            end,
            region,
            read_only,
        });
        v.sort_by_key(|s| s.start);
        *slots = Arc::new(v);
        Ok(())
    }

    fn unmap_memory(&self, slot: u32) -> hv::Result<()> {
        let mut slots = self.inner.slots.write().unwrap_or_else(|e| e.into_inner());
        if !slots.iter().any(|s| s.id == slot) {
            return Err(HvError::InvalidArgument(format!(
                "memory slot {slot} is not mapped"
            )));
        }
        *slots = Arc::new(slots.iter().filter(|s| s.id != slot).cloned().collect());
        Ok(())
    }

    fn create_vp(&self, index: u32) -> hv::Result<Box<dyn VirtualProcessor>> {
        let mut vps = self.inner.vps.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = vps.get_mut(index as usize) else {
            return Err(HvError::InvalidArgument(format!(
                "vCPU {index} beyond the configured count"
            )));
        };
        if entry.is_some() {
            return Err(HvError::InvalidArgument(format!(
                "vCPU {index} already exists"
            )));
        }
        let shared = Arc::new(VpShared {
            lapic: Mutex::new(Lapic::new(index as u8)),
            wake: Mutex::new(false),
            cv: Condvar::new(),
            attention: AtomicBool::new(false),
        });
        *entry = Some(shared.clone());
        let s = shared.clone();
        let stop = Arc::new(StopHandle::new(move || s.kick()));
        let mut cpu = Cpu::new(index == 0);
        cpu.apic_id = index;
        cpu.cpu_count = self.inner.config.vcpu_count;
        cpu.set_code_tracker(self.inner.code.clone());
        enable_native_code(&mut cpu);
        Ok(Box::new(EmuVp {
            index,
            cpu,
            shared,
            stop,
            part: self.inner.clone(),
        }))
    }

    fn request_msi(&self, msi: MsiMessage) -> hv::Result<()> {
        let dest = ((msi.address >> 12) & 0xff) as u8;
        let logical = msi.address & (1 << 2) != 0;
        let mode = (msi.data >> 8) & 7;
        self.inner.deliver(Delivery {
            mode,
            vector: msi.vector(),
            level: msi.level_triggered(),
            dest,
            logical,
            shorthand: 0,
            source: None,
        });
        Ok(())
    }

    fn set_ioapic_route(&self, _pin: u8, _msi: Option<MsiMessage>) -> hv::Result<()> {
        // Level-triggered vectors are recorded in the APIC's TMR when delivered.
        Ok(())
    }

    fn set_irq_line(&self, _gsi: u32, _level: bool) -> hv::Result<()> {
        Err(HvError::Unsupported(
            "interrupt lines need the in-kernel irqchip",
        ))
    }
}

/// One software virtual processor.
pub struct EmuVp {
    index: u32,
    cpu: Cpu,
    shared: Arc<VpShared>,
    stop: Arc<StopHandle>,
    part: Arc<Inner>,
}

/// The host memory of a slot as atomics, for the CPU's direct access.
#[allow(unsafe_code)]
fn host_ram(region: &GuestRegionMmap) -> &[AtomicU8] {
    let len = region.len() as usize;
    match region.get_host_address(MemoryRegionAddress(0)) {
        // SAFETY: the mapping is `len` bytes at `ptr`, readable and writable, and stays mapped
        // while `region` is alive, which the returned borrow guarantees. `AtomicU8` has the
        // size and alignment of `u8`, and atomics may be accessed concurrently by other
        // threads (devices, other processors) without data races on this side.
        Ok(ptr) if len > 0 => unsafe { std::slice::from_raw_parts(ptr as *const AtomicU8, len) },
        _ => &[],
    }
}

/// Direct-access RAM regions of the slots.
fn ram_regions(slots: &[Slot]) -> Vec<RamRegion<'_>> {
    slots
        .iter()
        .map(|s| RamRegion {
            start: s.start,
            bytes: host_ram(&s.region),
            writable: !s.read_only,
        })
        .filter(|r| !r.bytes.is_empty())
        .collect()
}

/// The CPU's view of the machine during a batch.
struct EmuBus<'a> {
    vp: u32,
    slots: Arc<Vec<Slot>>,
    /// Direct-access RAM (the slots' memory); unused while the APIC page lies inside it.
    ram: &'a [RamRegion<'a>],
    ram_usable: bool,
    io: &'a dyn CpuIo,
    shared: &'a VpShared,
    part: &'a Inner,
    apic_page: Option<u64>,
}

impl<'a> EmuBus<'a> {
    /// A bus for processor `vp` with the current memory slots; `apic_base` is the APIC base MSR.
    /// `slots` is the partition's current slot list and `ram` its direct-access regions (may
    /// be empty).
    fn new(
        vp: u32,
        part: &'a Inner,
        shared: &'a VpShared,
        io: &'a dyn CpuIo,
        apic_base: u64,
        slots: Arc<Vec<Slot>>,
        ram: &'a [RamRegion<'a>],
    ) -> Self {
        let mut bus = Self {
            vp,
            slots,
            ram,
            ram_usable: false,
            io,
            shared,
            part,
            apic_page: None,
        };
        bus.set_apic_page((apic_base & (1 << 11) != 0).then_some(apic_base & 0xf_ffff_f000));
        bus
    }

    fn set_apic_page(&mut self, page: Option<u64>) {
        self.apic_page = page;
        self.ram_usable = page.is_none_or(|p| {
            !self
                .ram
                .iter()
                .any(|r| p.wrapping_sub(r.start) < r.bytes.len() as u64)
        });
    }

    fn slot(&self, addr: u64) -> Option<&Slot> {
        let i = self.slots.partition_point(|s| s.start <= addr);
        let s = self.slots.get(i.checked_sub(1)?)?;
        (addr < s.end).then_some(s)
    }

    fn apic_offset(&self, addr: u64, len: usize) -> Option<usize> {
        let base = self.apic_page?;
        (addr >= base && addr + len as u64 <= base + 0x1000).then(|| (addr - base) as usize)
    }
}

impl x86emu::Bus for EmuBus<'_> {
    fn read(&mut self, address: u64, data: &mut [u8]) {
        if let Some(off) = self.apic_offset(address, data.len()) {
            let v = lock(&self.shared.lapic).read(off & !3, self.part.now_ns());
            let bytes = v.to_le_bytes();
            for (i, d) in data.iter_mut().enumerate() {
                *d = bytes.get((off & 3) + i).copied().unwrap_or(0);
            }
            return;
        }
        match self.slot(address) {
            Some(s) => {
                let n = ((s.end - address) as usize).min(data.len());
                if s.region
                    .read_slice(&mut data[..n], MemoryRegionAddress(address - s.start))
                    .is_err()
                {
                    data[..n].fill(0xff);
                }
                if n < data.len() {
                    self.read(address + n as u64, &mut data[n..]);
                }
            }
            None => {
                // MMIO up to the next slot.
                let next = self
                    .slots
                    .iter()
                    .find(|s| s.start > address)
                    .map_or(u64::MAX, |s| s.start);
                let n = ((next - address).min(data.len() as u64)) as usize;
                self.io.mmio_read(self.vp, address, &mut data[..n]);
                if n < data.len() {
                    self.read(address + n as u64, &mut data[n..]);
                }
            }
        }
    }

    fn write(&mut self, address: u64, data: &[u8]) {
        if let Some(off) = self.apic_offset(address, data.len()) {
            let mut b = [0u8; 4];
            for (i, d) in data.iter().enumerate().take(4) {
                b[i] = *d;
            }
            let now = self.part.now_ns();
            let (ipi, eoi) = lock(&self.shared.lapic).write(off & !3, u32::from_le_bytes(b), now);
            // The timer or what is deliverable may have changed: the run loop looks again.
            self.shared.attention.store(true, Ordering::Relaxed);
            if let Some(v) = eoi {
                self.io.eoi(self.vp, v);
            }
            if let Some(ipi) = ipi {
                self.part.send_ipi(ipi);
            }
            return;
        }
        match self.slot(address) {
            Some(s) => {
                let n = ((s.end - address) as usize).min(data.len());
                if s.read_only {
                    self.io.mmio_write(self.vp, address, &data[..n]);
                } else {
                    let _ = s
                        .region
                        .write_slice(&data[..n], MemoryRegionAddress(address - s.start));
                    self.part.code.note_write(address, n);
                }
                if n < data.len() {
                    self.write(address + n as u64, &data[n..]);
                }
            }
            None => {
                let next = self
                    .slots
                    .iter()
                    .find(|s| s.start > address)
                    .map_or(u64::MAX, |s| s.start);
                let n = ((next - address).min(data.len() as u64)) as usize;
                self.io.mmio_write(self.vp, address, &data[..n]);
                if n < data.len() {
                    self.write(address + n as u64, &data[n..]);
                }
            }
        }
    }

    fn io_in(&mut self, port: u16, data: &mut [u8]) {
        self.io.io_read(self.vp, port, data);
    }

    fn io_out(&mut self, port: u16, data: &[u8]) {
        self.io.io_write(self.vp, port, data);
    }

    fn tsc(&mut self) -> u64 {
        self.part.now_ns()
    }

    fn ram(&self) -> &[RamRegion<'_>] {
        if self.ram_usable {
            self.ram
        } else {
            &[]
        }
    }

    fn compare_exchange(&mut self, address: u64, size: usize, current: u64, new: u64) -> bool {
        if let Some(s) = self.slot(address) {
            if !s.read_only && address + size as u64 <= s.end {
                let off = (address - s.start) as usize;
                let r = &*s.region;
                let done = match size {
                    1 => atomic_cas::<AtomicU8>(r, off, current as u8, new as u8),
                    2 => atomic_cas::<AtomicU16>(r, off, current as u16, new as u16),
                    4 => atomic_cas::<AtomicU32>(r, off, current as u32, new as u32),
                    8 => atomic_cas::<AtomicU64>(r, off, current, new),
                    _ => None,
                };
                if let Some(ok) = done {
                    if ok {
                        self.part.code.note_write(address, size);
                    }
                    return ok;
                }
            }
        }
        // MMIO or an unaligned location: no other processor can race on it atomically anyway.
        let mut b = [0u8; 8];
        self.read(address, &mut b[..size]);
        if u64::from_le_bytes(b) != current {
            return false;
        }
        self.write(address, &new.to_le_bytes()[..size]);
        true
    }

    fn rdmsr(&mut self, index: u32) -> Option<u64> {
        (index == IA32_TSC_DEADLINE).then(|| lock(&self.shared.lapic).tsc_deadline())
    }

    fn wrmsr(&mut self, index: u32, value: u64) -> bool {
        if index == IA32_TSC_DEADLINE {
            lock(&self.shared.lapic).write_tsc_deadline(value);
            self.shared.attention.store(true, Ordering::Relaxed);
            return true;
        }
        if index == 0x1b {
            self.set_apic_page((value & (1 << 11) != 0).then_some(value & 0xf_ffff_f000));
            return true;
        }
        false
    }
}

/// Host atomic compare-exchange on guest RAM; `None` when the location is not aligned.
fn atomic_cas<A: HostAtomic>(
    region: &GuestRegionMmap,
    off: usize,
    current: A::Value,
    new: A::Value,
) -> Option<bool> {
    let a: &A = region.get_atomic_ref(off).ok()?;
    Some(a.cas(current, new))
}

/// The host atomic types used for guest LOCK operations.
trait HostAtomic: vm_memory::AtomicInteger {
    type Value: Copy;
    fn cas(&self, current: Self::Value, new: Self::Value) -> bool;
}

macro_rules! host_atomic {
    ($($a:ty => $v:ty),*) => {$(
        impl HostAtomic for $a {
            type Value = $v;
            fn cas(&self, current: $v, new: $v) -> bool {
                self.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            }
        }
    )*};
}
host_atomic!(AtomicU8 => u8, AtomicU16 => u16, AtomicU32 => u32, AtomicU64 => u64);

impl EmuVp {
    /// Delivers whatever is pending and deliverable. Returns `None` on triple fault, else
    /// whether an interrupt is still waiting for the processor to enable interrupts (then the
    /// run loop must come back as soon as it does: `sti; hlt`-free wait loops open the window
    /// for a single instruction) and the APIC timer's next deadline.
    fn service(&mut self, io: &dyn CpuIo) -> Option<(bool, Option<u64>)> {
        let now = self.part.now_ns();
        let mut l = lock(&self.shared.lapic);
        let deadline = l.poll_timer(now);
        if std::mem::take(&mut l.init_pending) {
            self.cpu.init();
        }
        if let Some(v) = l.sipi_pending.take() {
            self.cpu.sipi(v);
        }
        let nmi = std::mem::take(&mut l.nmi_pending);
        let vector = if self.cpu.interrupts_enabled() {
            l.deliverable()
        } else {
            None
        };
        if let Some(v) = vector {
            l.accept(v);
        }
        let pic = vector.is_none() && self.cpu.interrupts_enabled() && l.accepts_pic();
        let masked = !self.cpu.interrupts_enabled()
            && (l.deliverable().is_some()
                || (l.accepts_pic() && io.pic_interrupt_pending(self.index)));
        drop(l);
        let mut step = Step::Executed;
        let mut bus = EmuBus::new(
            self.index,
            &self.part,
            &self.shared,
            io,
            self.cpu.state.apic_base,
            self.part.slots(),
            &[],
        );
        if nmi {
            step = self.cpu.inject_nmi(&mut bus);
        }
        if step != Step::TripleFault {
            if let Some(v) = vector {
                step = self.cpu.inject_interrupt(v, &mut bus);
            } else if pic && io.pic_interrupt_pending(self.index) {
                if let Some(v) = io.pic_acknowledge(self.index) {
                    step = self.cpu.inject_interrupt(v, &mut bus);
                }
            }
        }
        (step != Step::TripleFault).then_some((masked, deadline))
    }

    /// True when something can wake a halted processor now.
    fn wake_ready(&self, io: &dyn CpuIo) -> bool {
        let l = lock(&self.shared.lapic);
        if l.nmi_pending || l.init_pending || l.sipi_pending.is_some() {
            return true;
        }
        if !self.cpu.interrupts_enabled() && !self.cpu.state.wait_for_sipi {
            return false;
        }
        if self.cpu.state.wait_for_sipi {
            return false;
        }
        l.deliverable().is_some() || (l.accepts_pic() && io.pic_interrupt_pending(self.index))
    }

    fn sleep(&self, io: &dyn CpuIo) {
        let deadline = lock(&self.shared.lapic).poll_timer(self.part.now_ns());
        let mut wake = lock(&self.shared.wake);
        while !*wake && !self.stop.stop_pending() {
            drop(wake);
            if self.wake_ready(io) {
                return;
            }
            wake = lock(&self.shared.wake);
            if *wake {
                break;
            }
            let timeout = deadline.map_or(Duration::from_millis(50), |d| {
                Duration::from_nanos(d.saturating_sub(self.part.now_ns()))
                    .min(Duration::from_millis(50))
            });
            let (w, t) = self
                .shared
                .cv
                .wait_timeout(wake, timeout)
                .unwrap_or_else(|e| e.into_inner());
            wake = w;
            if t.timed_out() {
                break;
            }
        }
        *wake = false;
    }
}

impl VirtualProcessor for EmuVp {
    fn index(&self) -> u32 {
        self.index
    }

    fn run(&mut self, io: &dyn CpuIo) -> hv::Result<StopReason> {
        loop {
            if let Some(r) = self.stop.take_stop() {
                let s = &self.cpu.state;
                tracing::debug!(
                    vp = self.index,
                    cs = s.seg[1].selector,
                    rip = format_args!("{:#x}", s.rip),
                    cr0 = format_args!("{:#x}", s.cr0),
                    halted = s.halted,
                    "software CPU stopped"
                );
                return Ok(r);
            }
            self.shared.attention.store(false, Ordering::SeqCst);
            let Some((waiting, deadline)) = self.service(io) else {
                return Ok(StopReason::TripleFault);
            };
            if self.cpu.state.halted || self.cpu.state.wait_for_sipi {
                if !self.wake_ready(io) {
                    self.sleep(io);
                }
                continue;
            }
            let slots = self.part.slots();
            let ram = ram_regions(&slots);
            let mut bus = EmuBus::new(
                self.index,
                &self.part,
                &self.shared,
                io,
                self.cpu.state.apic_base,
                slots.clone(),
                &ram,
            );
            let attention = &self.shared.attention;
            let part = &self.part;
            let mut stop = |cpu: &Cpu| {
                attention.load(Ordering::Relaxed)
                    || (waiting && cpu.interrupts_enabled())
                    || deadline.is_some_and(|d| part.now_ns() >= d)
            };
            if self.cpu.run(&mut bus, BATCH, &mut stop) == Step::TripleFault {
                return Ok(StopReason::TripleFault);
            }
        }
    }

    fn stop_handle(&self) -> Arc<StopHandle> {
        self.stop.clone()
    }

    fn state(&mut self) -> hv::Result<VpState> {
        let mut s = self.cpu.state.to_vp_state();
        s.lapic = lock(&self.shared.lapic).page();
        Ok(s)
    }

    fn set_state(&mut self, s: &VpState) -> hv::Result<()> {
        self.cpu.state = x86emu::CpuState::from_vp_state(s);
        self.cpu.flush_caches();
        if s.lapic.len() == hv::LAPIC_STATE_SIZE {
            lock(&self.shared.lapic).load_page(&s.lapic);
        }
        Ok(())
    }

    fn reset(&mut self) -> hv::Result<()> {
        self.cpu.state = x86emu::CpuState::power_on(self.index == 0);
        self.cpu.flush_caches();
        lock(&self.shared.lapic).reset(self.index as u8);
        Ok(())
    }
}
