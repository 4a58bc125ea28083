//! The [`hv`] traits on Linux KVM.
//!
//! Two interrupt controller placements ([`hv::IrqChipMode`]):
//! - **Split** (default): local APICs in the kernel, PIC/IOAPIC/PIT in user space. PIC vectors
//!   are injected with `KVM_INTERRUPT` when the processor can take them (else an interrupt
//!   window is requested); the IOAPIC delivers with `KVM_SIGNAL_MSI`; IOAPIC pin routes are
//!   mirrored into the GSI routing table so EOIs of level-triggered vectors exit.
//! - **InKernel**: `KVM_CREATE_IRQCHIP` + `KVM_CREATE_PIT2`; lines are driven with
//!   `KVM_IRQ_LINE`.
//!
//! Every vCPU runs on its own thread. Other threads stop or wake it through its
//! [`hv::StopHandle`]: a real-time signal whose handler sets `immediate_exit` in that thread's
//! `kvm_run`, so a kick can never be lost between the check and `KVM_RUN`.
#![cfg(target_os = "linux")]

mod kick;
mod state;

use hv::{
    CpuIo, HvError, IrqChipMode, MsiMessage, Partition, PartitionConfig, StopHandle, StopReason,
    VirtualProcessor, VpState,
};
use kvm_bindings::{
    kvm_enable_cap, kvm_irq_routing_entry, kvm_msi, kvm_pit_config, kvm_userspace_memory_region,
    CpuId, KvmIrqRouting, KVM_IRQ_ROUTING_MSI, KVM_MAX_CPUID_ENTRIES, KVM_MEM_READONLY,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use vm_memory::{GuestMemoryRegion, MemoryRegionAddress};

/// Identity-map page for Intel real-mode emulation (below the 4 GiB BIOS window).
pub const IDENTITY_MAP_ADDRESS: u64 = 0xfeff_c000;
/// Three-page TSS area for Intel real-mode emulation.
pub const TSS_ADDRESS: u64 = 0xfeff_d000;
/// IOAPIC pins reserved in split mode.
pub const IOAPIC_PINS: usize = 24;

fn call_err(call: &'static str, e: kvm_ioctls::Error) -> HvError {
    HvError::Call {
        call,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// The KVM system handle (`/dev/kvm`).
pub struct KvmHypervisor {
    kvm: Kvm,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm`, explaining how to fix the usual failures.
    pub fn open() -> hv::Result<Self> {
        match Kvm::new() {
            Ok(kvm) => Ok(Self { kvm }),
            Err(e) => Err(match e.errno() {
                libc::ENOENT | libc::ENODEV | libc::ENXIO => HvError::Unavailable(
                    "/dev/kvm does not exist: enable virtualization (VT-x/AMD-V) in the firmware \
                     setup and load the kvm_intel or kvm_amd module, or use --backend emu"
                        .into(),
                ),
                libc::EACCES | libc::EPERM => HvError::PermissionDenied(
                    "no permission to open /dev/kvm: add your user to the kvm group \
                     (sudo usermod -aG kvm $USER, then log in again), or use --backend emu"
                        .into(),
                ),
                _ => HvError::Unavailable(format!(
                    "cannot open /dev/kvm: {}; use --backend emu",
                    std::io::Error::from_raw_os_error(e.errno())
                )),
            }),
        }
    }

    /// Creates a VM with `config.vcpu_count` processors to come.
    pub fn create_partition(&self, config: &PartitionConfig) -> hv::Result<KvmPartition> {
        let max = self.kvm.get_max_vcpus() as u32;
        if config.vcpu_count == 0 || config.vcpu_count > max {
            return Err(HvError::InvalidArgument(format!(
                "{} vCPUs requested; KVM on this host allows 1 to {max}",
                config.vcpu_count
            )));
        }
        let vm = self
            .kvm
            .create_vm()
            .map_err(|e| call_err("KVM_CREATE_VM", e))?;
        vm.set_identity_map_address(IDENTITY_MAP_ADDRESS)
            .map_err(|e| call_err("KVM_SET_IDENTITY_MAP_ADDR", e))?;
        vm.set_tss_address(TSS_ADDRESS as usize)
            .map_err(|e| call_err("KVM_SET_TSS_ADDR", e))?;
        match config.irqchip {
            IrqChipMode::Split => {
                if !vm.check_extension(Cap::SplitIrqchip) {
                    return Err(HvError::Unsupported("KVM_CAP_SPLIT_IRQCHIP"));
                }
                let mut cap = kvm_enable_cap {
                    cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
                    ..Default::default()
                };
                cap.args[0] = IOAPIC_PINS as u64;
                vm.enable_cap(&cap)
                    .map_err(|e| call_err("KVM_ENABLE_CAP(SPLIT_IRQCHIP)", e))?;
            }
            IrqChipMode::InKernel => {
                vm.create_irq_chip()
                    .map_err(|e| call_err("KVM_CREATE_IRQCHIP", e))?;
                vm.create_pit2(kvm_pit_config::default())
                    .map_err(|e| call_err("KVM_CREATE_PIT2", e))?;
            }
        }
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| call_err("KVM_GET_SUPPORTED_CPUID", e))?;
        let msr_list = self
            .kvm
            .get_msr_index_list()
            .map_err(|e| call_err("KVM_GET_MSR_INDEX_LIST", e))?;
        let msrs = state::saved_msrs(msr_list.as_slice());
        kick::install_signal_handler()?;
        Ok(KvmPartition {
            vm: Arc::new(vm),
            config: config.clone(),
            cpuid,
            msrs,
            routes: Mutex::new([None; IOAPIC_PINS]),
            slots: Mutex::new(HashMap::new()),
        })
    }
}

/// A KVM VM.
pub struct KvmPartition {
    vm: Arc<VmFd>,
    config: PartitionConfig,
    cpuid: CpuId,
    msrs: Vec<u32>,
    routes: Mutex<[Option<MsiMessage>; IOAPIC_PINS]>,
    slots: Mutex<HashMap<u32, Arc<hv::GuestRegionMmap>>>,
}

impl KvmPartition {
    fn lock_routes(&self) -> std::sync::MutexGuard<'_, [Option<MsiMessage>; IOAPIC_PINS]> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_slot(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        host: u64,
        read_only: bool,
    ) -> hv::Result<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: if read_only { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: `host..host+size` is a live mapping owned by an `Arc<GuestRegionMmap>` that
        // `self.slots` keeps alive until the slot is removed (size 0) again.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| call_err("KVM_SET_USER_MEMORY_REGION", e))
    }
}

impl Partition for KvmPartition {
    fn backend_name(&self) -> &'static str {
        "kvm"
    }

    fn irqchip_mode(&self) -> IrqChipMode {
        self.config.irqchip
    }

    fn map_memory(
        &self,
        slot: u32,
        region: Arc<hv::GuestRegionMmap>,
        read_only: bool,
    ) -> hv::Result<()> {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| HvError::InvalidArgument(format!("memory region: {e}")))?;
        self.set_slot(
            slot,
            region.start_addr().0,
            region.len(),
            host as u64,
            read_only,
        )?;
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot, region);
        Ok(())
    }

    fn unmap_memory(&self, slot: u32) -> hv::Result<()> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Some(region) = slots.get(&slot) else {
            return Err(HvError::InvalidArgument(format!(
                "memory slot {slot} is not mapped"
            )));
        };
        self.set_slot(slot, region.start_addr().0, 0, 0, false)?;
        slots.remove(&slot);
        Ok(())
    }

    fn create_vp(&self, index: u32) -> hv::Result<Box<dyn VirtualProcessor>> {
        if index >= self.config.vcpu_count {
            return Err(HvError::InvalidArgument(format!(
                "vCPU {index} beyond the configured count"
            )));
        }
        let fd = self
            .vm
            .create_vcpu(u64::from(index))
            .map_err(|e| call_err("KVM_CREATE_VCPU", e))?;
        let cpuid = state::cpuid_for_vp(&self.cpuid, index, self.config.vcpu_count);
        fd.set_cpuid2(&cpuid)
            .map_err(|e| call_err("KVM_SET_CPUID2", e))?;
        let thread = kick::VcpuThread::new();
        let t = thread.clone();
        let stop = Arc::new(StopHandle::new(move || t.kick()));
        let mut vp = KvmVp {
            fd,
            index,
            split: self.config.irqchip == IrqChipMode::Split,
            stop,
            thread,
            msrs: self.msrs.clone(),
            power_on: VpState::default(),
            io_pending: false,
        };
        vp.power_on = vp.state()?;
        Ok(Box::new(vp))
    }

    fn request_msi(&self, msi: MsiMessage) -> hv::Result<()> {
        let m = kvm_msi {
            address_lo: msi.address as u32,
            address_hi: (msi.address >> 32) as u32,
            data: msi.data,
            ..Default::default()
        };
        self.vm
            .signal_msi(m)
            .map(|_| ())
            .map_err(|e| call_err("KVM_SIGNAL_MSI", e))
    }

    fn set_ioapic_route(&self, pin: u8, msi: Option<MsiMessage>) -> hv::Result<()> {
        if self.config.irqchip != IrqChipMode::Split {
            return Ok(());
        }
        let mut routes = self.lock_routes();
        let Some(r) = routes.get_mut(usize::from(pin)) else {
            return Err(HvError::InvalidArgument(format!("IOAPIC pin {pin}")));
        };
        if *r == msi {
            return Ok(());
        }
        *r = msi;
        let mut table =
            KvmIrqRouting::new(0).map_err(|e| HvError::InvalidArgument(e.to_string()))?;
        for (gsi, m) in routes.iter().enumerate() {
            let Some(m) = m else { continue };
            let mut e = kvm_irq_routing_entry {
                gsi: gsi as u32,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi.address_lo = m.address as u32;
            e.u.msi.address_hi = (m.address >> 32) as u32;
            e.u.msi.data = m.data;
            table
                .push(e)
                .map_err(|e| HvError::InvalidArgument(e.to_string()))?;
        }
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| call_err("KVM_SET_GSI_ROUTING", e))
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> hv::Result<()> {
        if self.config.irqchip != IrqChipMode::InKernel {
            return Err(HvError::Unsupported(
                "interrupt lines need the in-kernel irqchip",
            ));
        }
        self.vm
            .set_irq_line(gsi, level)
            .map_err(|e| call_err("KVM_IRQ_LINE", e))
    }
}

vmm_sys_util::ioctl_iow_nr!(
    KVM_INTERRUPT,
    kvm_bindings::KVMIO,
    0x86,
    kvm_bindings::kvm_interrupt
);

/// One KVM virtual processor.
pub struct KvmVp {
    fd: VcpuFd,
    index: u32,
    split: bool,
    stop: Arc<StopHandle>,
    thread: Arc<kick::VcpuThread>,
    msrs: Vec<u32>,
    power_on: VpState,
    /// The last exit was port I/O or MMIO, completed only by the next `KVM_RUN`.
    io_pending: bool,
}

impl KvmVp {
    /// Injects a PIC vector or asks for an interrupt window (split irqchip only).
    fn prepare_pic_injection(&mut self, io: &dyn CpuIo) -> hv::Result<()> {
        let pending = io.pic_interrupt_pending(self.index);
        let run = self.fd.get_kvm_run();
        let ready = run.ready_for_interrupt_injection != 0 && run.if_flag != 0;
        if pending && ready {
            if let Some(vector) = io.pic_acknowledge(self.index) {
                let irq = kvm_bindings::kvm_interrupt {
                    irq: u32::from(vector),
                };
                // SAFETY: KVM_INTERRUPT reads one `kvm_interrupt` from the pointer, which
                // refers to a live local; the fd is a vCPU fd.
                let r =
                    unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
                if r < 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(HvError::Call {
                        call: "KVM_INTERRUPT",
                        source: e,
                    });
                }
            }
        }
        // Keep asking for a window while the PIC has more to deliver.
        let more = pending && io.pic_interrupt_pending(self.index);
        self.fd.get_kvm_run().request_interrupt_window = u8::from(more);
        Ok(())
    }

    /// Lets KVM finish a pending I/O instruction without running further guest code.
    fn complete_pending_io(&mut self) -> hv::Result<()> {
        if !self.io_pending {
            return Ok(());
        }
        self.fd.set_kvm_immediate_exit(1);
        let r = self.fd.run();
        let ok = match r {
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(()),
            Err(e) => Err(call_err("KVM_RUN", e)),
            Ok(_) => Ok(()),
        };
        self.fd.set_kvm_immediate_exit(0);
        self.io_pending = false;
        ok
    }

    fn emulation_failure(&mut self) -> hv::Result<StopReason> {
        let regs = self
            .fd
            .get_regs()
            .map_err(|e| call_err("KVM_GET_REGS", e))?;
        let sregs = self
            .fd
            .get_sregs()
            .map_err(|e| call_err("KVM_GET_SREGS", e))?;
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so the `internal` member of the
        // union is the one KVM filled in.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        tracing::debug!(
            vp = self.index,
            suberror = internal.suberror,
            rip = regs.rip,
            cs_base = sregs.cs.base,
            "KVM internal error"
        );
        Ok(StopReason::EmulationFailure {
            address: sregs.cs.base.wrapping_add(regs.rip),
            bytes: Vec::new(),
        })
    }
}

impl VirtualProcessor for KvmVp {
    fn index(&self) -> u32 {
        self.index
    }

    fn run(&mut self, io: &dyn CpuIo) -> hv::Result<StopReason> {
        self.thread.enter(self.fd.get_kvm_run());
        let result = self.run_loop(io);
        self.thread.leave();
        result
    }

    fn stop_handle(&self) -> Arc<StopHandle> {
        self.stop.clone()
    }

    fn state(&mut self) -> hv::Result<VpState> {
        self.complete_pending_io()?;
        state::get(&self.fd, &self.msrs)
    }

    fn set_state(&mut self, s: &VpState) -> hv::Result<()> {
        self.complete_pending_io()?;
        state::set(&self.fd, s)
    }

    fn reset(&mut self) -> hv::Result<()> {
        let s = self.power_on.clone();
        self.set_state(&s)
    }
}

impl KvmVp {
    fn run_loop(&mut self, io: &dyn CpuIo) -> hv::Result<StopReason> {
        loop {
            if self.stop.stop_pending() {
                self.complete_pending_io()?;
                if let Some(reason) = self.stop.take_stop() {
                    return Ok(reason);
                }
            }
            if self.split {
                self.prepare_pic_injection(io)?;
            }
            let run_ptr: *const kvm_bindings::kvm_run = self.fd.get_kvm_run();
            self.io_pending = false;
            match self.fd.run() {
                Ok(VcpuExit::IoIn(port, data)) => {
                    // SAFETY: exit reason is KVM_EXIT_IO, so `io` is the valid union member;
                    // `run_ptr` points at this vCPU's live kvm_run mapping.
                    let size = usize::from(unsafe { (*run_ptr).__bindgen_anon_1.io.size }).max(1);
                    for chunk in data.chunks_mut(size) {
                        io.io_read(self.index, port, chunk);
                    }
                    self.io_pending = true;
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    // SAFETY: as above.
                    let size = usize::from(unsafe { (*run_ptr).__bindgen_anon_1.io.size }).max(1);
                    for chunk in data.chunks(size) {
                        io.io_write(self.index, port, chunk);
                    }
                    self.io_pending = true;
                }
                Ok(VcpuExit::MmioRead(address, data)) => {
                    io.mmio_read(self.index, address, data);
                    self.io_pending = true;
                }
                Ok(VcpuExit::MmioWrite(address, data)) => {
                    io.mmio_write(self.index, address, data);
                    self.io_pending = true;
                }
                Ok(VcpuExit::IoapicEoi(vector)) => io.eoi(self.index, vector),
                Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) | Ok(VcpuExit::Hlt) => {}
                Ok(VcpuExit::Shutdown) => return Ok(StopReason::TripleFault),
                Ok(VcpuExit::SystemEvent(kind, _)) => {
                    return Ok(match kind {
                        kvm_bindings::KVM_SYSTEM_EVENT_RESET => StopReason::Reset,
                        _ => StopReason::PowerOff,
                    })
                }
                Ok(VcpuExit::InternalError) => return self.emulation_failure(),
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    return Err(HvError::Unavailable(format!(
                    "KVM could not enter the guest (hardware reason {reason:#x}, host CPU {cpu})"
                )))
                }
                Ok(other) => {
                    tracing::warn!(vp = self.index, exit = ?other, "unexpected KVM exit ignored");
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                }
                Err(e) => return Err(call_err("KVM_RUN", e)),
            }
        }
    }
}
