//! The WHP calls: partition, memory, virtual processors and their run loop.
//!
//! `winhvplatform.dll` exists only when the Windows feature "Windows Hypervisor Platform" is
//! turned on, so it is loaded at run time ([`Api`]) rather than linked: without it the program
//! still starts and this backend reports itself unavailable.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use hv::{
    CpuIo, HvError, IrqChipMode, MsiMessage, Partition, PartitionConfig, StopHandle, StopReason,
    VirtualProcessor, VpState,
};
use vm_memory::{GuestMemoryRegion, MemoryRegionAddress};
use windows_sys::core::HRESULT;
use windows_sys::Win32::Foundation::HMODULE;
use windows_sys::Win32::System::Hypervisor as whp;
use windows_sys::Win32::System::LibraryLoader::{
    GetProcAddress, LoadLibraryExW, LOAD_LIBRARY_SEARCH_SYSTEM32,
};

use crate::emulate::{
    complete_port_io_fast, port_io_needs_emulation, Emulator, EMULATION_REGISTERS,
};
use crate::exit::{reason, ExitContextBuffer, ExitKind, RunExit, EXIT_CONTEXT_SIZE};
use crate::intercepts::{complete_cpuid, complete_msr, CPUID_EXIT_LEAVES};
use crate::interrupts::{
    EoiFilter, InterruptRequest, Interruptibility, PicDelivery, RawInterruptControl,
};
use crate::memory::{ExitBus, GuestRam};
use crate::regs::{
    deliverability_value, lapic_from_page, lapic_into_page, power_on_state, registers_from_state,
    state_from_registers, state_register_names, PendingInterruption, RegisterList, RegisterName,
    RegisterValue, APIC_PAGE_SIZE, HALT_SUSPEND, OPTIONAL_STATE_REGISTERS,
};
use crate::MAX_VCPUS;

// The plain-data mirrors in this crate must match the Windows structures they stand for.
const _: () = {
    assert!(size_of::<RegisterValue>() == size_of::<whp::WHV_REGISTER_VALUE>());
    assert!(size_of::<RegisterName>() == size_of::<whp::WHV_REGISTER_NAME>());
    assert!(size_of::<ExitContextBuffer>() == size_of::<whp::WHV_RUN_VP_EXIT_CONTEXT>());
    assert!(EXIT_CONTEXT_SIZE == 224);
    assert!(size_of::<RawInterruptControl>() == size_of::<whp::WHV_INTERRUPT_CONTROL>());
    assert!(offset_of!(whp::WHV_RUN_VP_EXIT_CONTEXT, VpContext) == 8);
    assert!(offset_of!(whp::WHV_RUN_VP_EXIT_CONTEXT, Anonymous) == 48);
    assert!(offset_of!(whp::WHV_VP_EXIT_CONTEXT, Cs) == 8);
    assert!(offset_of!(whp::WHV_VP_EXIT_CONTEXT, Rip) == 24);
    assert!(offset_of!(whp::WHV_VP_EXIT_CONTEXT, Rflags) == 32);
    assert!(offset_of!(whp::WHV_MEMORY_ACCESS_CONTEXT, InstructionBytes) == 4);
    assert!(offset_of!(whp::WHV_MEMORY_ACCESS_CONTEXT, AccessInfo) == 20);
    assert!(offset_of!(whp::WHV_MEMORY_ACCESS_CONTEXT, Gpa) == 24);
    assert!(offset_of!(whp::WHV_MEMORY_ACCESS_CONTEXT, Gva) == 32);
    assert!(offset_of!(whp::WHV_X64_IO_PORT_ACCESS_CONTEXT, AccessInfo) == 20);
    assert!(offset_of!(whp::WHV_X64_IO_PORT_ACCESS_CONTEXT, PortNumber) == 24);
    assert!(offset_of!(whp::WHV_X64_IO_PORT_ACCESS_CONTEXT, Rax) == 32);
    assert!(offset_of!(whp::WHV_X64_IO_PORT_ACCESS_CONTEXT, Rdi) == 56);
    assert!(offset_of!(whp::WHV_X64_IO_PORT_ACCESS_CONTEXT, Ds) == 64);
    assert!(offset_of!(whp::WHV_X64_IO_PORT_ACCESS_CONTEXT, Es) == 80);
    assert!(offset_of!(whp::WHV_X64_MSR_ACCESS_CONTEXT, MsrNumber) == 4);
    assert!(offset_of!(whp::WHV_X64_MSR_ACCESS_CONTEXT, Rdx) == 16);
    assert!(offset_of!(whp::WHV_X64_CPUID_ACCESS_CONTEXT, DefaultResultRax) == 32);
    assert!(offset_of!(whp::WHV_X64_CPUID_ACCESS_CONTEXT, DefaultResultRbx) == 56);
    assert!(offset_of!(whp::WHV_VP_EXCEPTION_CONTEXT, ExceptionType) == 24);
    assert!(offset_of!(whp::WHV_VP_EXCEPTION_CONTEXT, ErrorCode) == 28);
    assert!(offset_of!(whp::WHV_X64_SEGMENT_REGISTER, Limit) == 8);
    assert!(offset_of!(whp::WHV_X64_SEGMENT_REGISTER, Selector) == 12);
    assert!(offset_of!(whp::WHV_X64_SEGMENT_REGISTER, Anonymous) == 14);
    assert!(offset_of!(whp::WHV_X64_TABLE_REGISTER, Limit) == 6);
    assert!(offset_of!(whp::WHV_X64_TABLE_REGISTER, Base) == 8);
    assert!(offset_of!(whp::WHV_INTERRUPT_CONTROL, Destination) == 8);
    assert!(offset_of!(whp::WHV_INTERRUPT_CONTROL, Vector) == 12);

    assert!(reason::MEMORY_ACCESS == whp::WHvRunVpExitReasonMemoryAccess);
    assert!(reason::IO_PORT_ACCESS == whp::WHvRunVpExitReasonX64IoPortAccess);
    assert!(reason::UNRECOVERABLE_EXCEPTION == whp::WHvRunVpExitReasonUnrecoverableException);
    assert!(reason::INVALID_VP_REGISTER_VALUE == whp::WHvRunVpExitReasonInvalidVpRegisterValue);
    assert!(reason::UNSUPPORTED_FEATURE == whp::WHvRunVpExitReasonUnsupportedFeature);
    assert!(reason::INTERRUPT_WINDOW == whp::WHvRunVpExitReasonX64InterruptWindow);
    assert!(reason::HALT == whp::WHvRunVpExitReasonX64Halt);
    assert!(reason::APIC_EOI == whp::WHvRunVpExitReasonX64ApicEoi);
    assert!(reason::MSR_ACCESS == whp::WHvRunVpExitReasonX64MsrAccess);
    assert!(reason::CPUID == whp::WHvRunVpExitReasonX64Cpuid);
    assert!(reason::EXCEPTION == whp::WHvRunVpExitReasonException);
    assert!(reason::APIC_INIT_SIPI_TRAP == whp::WHvRunVpExitReasonX64ApicInitSipiTrap);
    assert!(reason::CANCELED == whp::WHvRunVpExitReasonCanceled);

    assert!(RegisterName::RAX.0 == whp::WHvX64RegisterRax);
    assert!(RegisterName::R15.0 == whp::WHvX64RegisterR15);
    assert!(RegisterName::RIP.0 == whp::WHvX64RegisterRip);
    assert!(RegisterName::RFLAGS.0 == whp::WHvX64RegisterRflags);
    assert!(RegisterName::ES.0 == whp::WHvX64RegisterEs);
    assert!(RegisterName::GS.0 == whp::WHvX64RegisterGs);
    assert!(RegisterName::LDTR.0 == whp::WHvX64RegisterLdtr);
    assert!(RegisterName::TR.0 == whp::WHvX64RegisterTr);
    assert!(RegisterName::IDTR.0 == whp::WHvX64RegisterIdtr);
    assert!(RegisterName::GDTR.0 == whp::WHvX64RegisterGdtr);
    assert!(RegisterName::CR0.0 == whp::WHvX64RegisterCr0);
    assert!(RegisterName::CR8.0 == whp::WHvX64RegisterCr8);
    assert!(RegisterName::XCR0.0 == whp::WHvX64RegisterXCr0);
    assert!(RegisterName::XMM0.0 == whp::WHvX64RegisterXmm0);
    assert!(RegisterName::xmm(15).0 == whp::WHvX64RegisterXmm15);
    assert!(RegisterName::FP_MMX0.0 == whp::WHvX64RegisterFpMmx0);
    assert!(RegisterName::fp(7).0 == whp::WHvX64RegisterFpMmx7);
    assert!(RegisterName::FP_CONTROL_STATUS.0 == whp::WHvX64RegisterFpControlStatus);
    assert!(RegisterName::XMM_CONTROL_STATUS.0 == whp::WHvX64RegisterXmmControlStatus);
    assert!(RegisterName::TSC.0 == whp::WHvX64RegisterTsc);
    assert!(RegisterName::EFER.0 == whp::WHvX64RegisterEfer);
    assert!(RegisterName::KERNEL_GS_BASE.0 == whp::WHvX64RegisterKernelGsBase);
    assert!(RegisterName::APIC_BASE.0 == whp::WHvX64RegisterApicBase);
    assert!(RegisterName::PAT.0 == whp::WHvX64RegisterPat);
    assert!(RegisterName::SYSENTER_CS.0 == whp::WHvX64RegisterSysenterCs);
    assert!(RegisterName::SYSENTER_EIP.0 == whp::WHvX64RegisterSysenterEip);
    assert!(RegisterName::SYSENTER_ESP.0 == whp::WHvX64RegisterSysenterEsp);
    assert!(RegisterName::STAR.0 == whp::WHvX64RegisterStar);
    assert!(RegisterName::LSTAR.0 == whp::WHvX64RegisterLstar);
    assert!(RegisterName::CSTAR.0 == whp::WHvX64RegisterCstar);
    assert!(RegisterName::SFMASK.0 == whp::WHvX64RegisterSfmask);
    assert!(RegisterName::MTRR_DEF_TYPE.0 == whp::WHvX64RegisterMsrMtrrDefType);
    assert!(RegisterName::MTRR_PHYS_BASE0.0 == whp::WHvX64RegisterMsrMtrrPhysBase0);
    assert!(RegisterName::MTRR_PHYS_BASE0.0 + 7 == whp::WHvX64RegisterMsrMtrrPhysBase7);
    assert!(RegisterName::MTRR_PHYS_MASK0.0 == whp::WHvX64RegisterMsrMtrrPhysMask0);
    assert!(RegisterName::MTRR_PHYS_MASK0.0 + 7 == whp::WHvX64RegisterMsrMtrrPhysMask7);
    assert!(RegisterName::MTRR_FIX64K_00000.0 == whp::WHvX64RegisterMsrMtrrFix64k00000);
    assert!(RegisterName::MTRR_FIX16K_80000.0 == whp::WHvX64RegisterMsrMtrrFix16k80000);
    assert!(RegisterName::MTRR_FIX16K_A0000.0 == whp::WHvX64RegisterMsrMtrrFix16kA0000);
    assert!(RegisterName::MTRR_FIX4K_C0000.0 == whp::WHvX64RegisterMsrMtrrFix4kC0000);
    assert!(RegisterName::MTRR_FIX4K_C0000.0 + 7 == whp::WHvX64RegisterMsrMtrrFix4kF8000);
    assert!(RegisterName::TSC_AUX.0 == whp::WHvX64RegisterTscAux);
    assert!(RegisterName::PENDING_INTERRUPTION.0 == whp::WHvRegisterPendingInterruption);
    assert!(RegisterName::INTERRUPT_STATE.0 == whp::WHvRegisterInterruptState);
    assert!(RegisterName::PENDING_EVENT.0 == whp::WHvRegisterPendingEvent);
    assert!(
        RegisterName::DELIVERABILITY_NOTIFICATIONS.0
            == whp::WHvX64RegisterDeliverabilityNotifications
    );
    assert!(RegisterName::INTERNAL_ACTIVITY_STATE.0 == whp::WHvRegisterInternalActivityState);
};

type Handle = whp::WHV_PARTITION_HANDLE;

macro_rules! whp_api {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        /// Entry points of `winhvplatform.dll`, with the signatures of WinHvPlatform.h.
        #[allow(non_snake_case)]
        struct Api {
            $($name: unsafe extern "system" fn($($ty),*) -> HRESULT,)*
        }

        // Each signature is the one windows-sys declares (checked without referencing the
        // import at run time).
        $(const _: () = {
            let _: unsafe extern "system" fn($($ty),*) -> HRESULT = whp::$name;
        };)*

        impl Api {
            /// Loads the DLL from the system directory and resolves every entry point.
            fn load() -> Result<Self, String> {
                let name: Vec<u16> = "winhvplatform.dll\0".encode_utf16().collect();
                // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call; no
                // file handle is passed (null), as the API requires.
                let module: HMODULE = unsafe {
                    LoadLibraryExW(name.as_ptr(), std::ptr::null_mut(), LOAD_LIBRARY_SEARCH_SYSTEM32)
                };
                if module.is_null() {
                    return Err(
                        "winhvplatform.dll is missing: turn on the Windows feature \
                         \"Windows Hypervisor Platform\" (optionalfeatures.exe) and restart"
                            .into(),
                    );
                }
                Ok(Self {
                    $($name: {
                        // SAFETY: `module` is a loaded module that is never unloaded; the name
                        // is a NUL-terminated ASCII string.
                        let f = unsafe {
                            GetProcAddress(module, concat!(stringify!($name), "\0").as_ptr())
                        };
                        let Some(f) = f else {
                            return Err(format!(
                                "winhvplatform.dll has no {}: Windows is too old for this backend",
                                stringify!($name)
                            ));
                        };
                        // SAFETY: the export named above has exactly this signature
                        // (WinHvPlatform.h); only the pointer type changes.
                        unsafe {
                            std::mem::transmute::<
                                unsafe extern "system" fn() -> isize,
                                unsafe extern "system" fn($($ty),*) -> HRESULT,
                            >(f)
                        }
                    },)*
                })
            }
        }
    };
}

whp_api! {
    WHvGetCapability(code: whp::WHV_CAPABILITY_CODE, buffer: *mut c_void, size: u32, written: *mut u32);
    WHvCreatePartition(partition: *mut Handle);
    WHvSetupPartition(partition: Handle);
    WHvDeletePartition(partition: Handle);
    WHvSetPartitionProperty(partition: Handle, code: whp::WHV_PARTITION_PROPERTY_CODE, buffer: *const c_void, size: u32);
    WHvMapGpaRange(partition: Handle, source: *const c_void, gpa: u64, size: u64, flags: whp::WHV_MAP_GPA_RANGE_FLAGS);
    WHvUnmapGpaRange(partition: Handle, gpa: u64, size: u64);
    WHvCreateVirtualProcessor(partition: Handle, index: u32, flags: u32);
    WHvDeleteVirtualProcessor(partition: Handle, index: u32);
    WHvRunVirtualProcessor(partition: Handle, index: u32, context: *mut c_void, size: u32);
    WHvCancelRunVirtualProcessor(partition: Handle, index: u32, flags: u32);
    WHvGetVirtualProcessorRegisters(partition: Handle, index: u32, names: *const whp::WHV_REGISTER_NAME, count: u32, values: *mut whp::WHV_REGISTER_VALUE);
    WHvSetVirtualProcessorRegisters(partition: Handle, index: u32, names: *const whp::WHV_REGISTER_NAME, count: u32, values: *const whp::WHV_REGISTER_VALUE);
    WHvRequestInterrupt(partition: Handle, interrupt: *const whp::WHV_INTERRUPT_CONTROL, size: u32);
    WHvGetVirtualProcessorInterruptControllerState2(partition: Handle, index: u32, state: *mut c_void, size: u32, written: *mut u32);
    WHvSetVirtualProcessorInterruptControllerState2(partition: Handle, index: u32, state: *const c_void, size: u32);
}

/// The loaded API, or why it could not be loaded.
fn api() -> hv::Result<&'static Api> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(Api::load)
        .as_ref()
        .map_err(|e| HvError::Unavailable(e.clone()))
}

fn check(call: &'static str, hr: HRESULT) -> hv::Result<()> {
    if hr >= 0 {
        Ok(())
    } else {
        Err(HvError::Call {
            call,
            source: std::io::Error::from_raw_os_error(hr),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens the Windows Hypervisor Platform.
pub struct WhpHypervisor {
    api: &'static Api,
}

impl WhpHypervisor {
    /// Loads `winhvplatform.dll` and checks that the hypervisor is running, explaining how
    /// to turn it on otherwise.
    pub fn open() -> hv::Result<Self> {
        let api = api()?;
        let mut present: i32 = 0;
        let mut written = 0u32;
        // SAFETY: the buffer is a live 4-byte BOOL, the size passed is its size.
        let hr = unsafe {
            (api.WHvGetCapability)(
                whp::WHvCapabilityCodeHypervisorPresent,
                (&mut present as *mut i32).cast(),
                size_of::<i32>() as u32,
                &mut written,
            )
        };
        check("WHvGetCapability(HypervisorPresent)", hr)?;
        if present == 0 {
            return Err(HvError::Unavailable(
                "the Windows hypervisor is not running: enable virtualization (VT-x/AMD-V) in \
                 the firmware setup and the Windows feature \"Windows Hypervisor Platform\", \
                 or use --backend emu"
                    .into(),
            ));
        }
        Ok(Self { api })
    }

    /// Creates a partition for `config.vcpu_count` processors with xAPIC emulation, CPUID and
    /// unhandled-MSR exits.
    pub fn create_partition(&self, config: &PartitionConfig) -> hv::Result<WhpPartition> {
        if config.irqchip != IrqChipMode::Split {
            return Err(HvError::Unsupported(
                "WHP has no in-hypervisor PIC/IOAPIC; use the split irqchip",
            ));
        }
        if config.vcpu_count == 0 || config.vcpu_count > MAX_VCPUS {
            return Err(HvError::InvalidArgument(format!(
                "{} vCPUs requested; the WHP backend allows 1 to {MAX_VCPUS}",
                config.vcpu_count
            )));
        }
        let api = self.api;
        let mut handle: Handle = 0;
        // SAFETY: `handle` is a live output location.
        check("WHvCreatePartition", unsafe {
            (api.WHvCreatePartition)(&mut handle)
        })?;
        let partition = PartitionHandle { api, handle };
        partition.set_property(
            "WHvSetPartitionProperty(ProcessorCount)",
            whp::WHvPartitionPropertyCodeProcessorCount,
            &config.vcpu_count.to_le_bytes(),
        )?;
        partition
            .set_property(
                "WHvSetPartitionProperty(LocalApicEmulationMode)",
                whp::WHvPartitionPropertyCodeLocalApicEmulationMode,
                &whp::WHvX64LocalApicEmulationModeXApic.to_le_bytes(),
            )
            .map_err(|e| {
                HvError::Unavailable(format!(
                    "WHP on this Windows has no local APIC emulation (Windows 10 1809 or later \
                     is needed): {e}"
                ))
            })?;
        // CPUID (bit 0) and MSR (bit 1) exits.
        let exits: u64 = 0b11;
        match partition.set_property(
            "WHvSetPartitionProperty(ExtendedVmExits)",
            whp::WHvPartitionPropertyCodeExtendedVmExits,
            &exits.to_le_bytes(),
        ) {
            Ok(()) => {
                let leaves: Vec<u8> = CPUID_EXIT_LEAVES
                    .iter()
                    .flat_map(|l| l.to_le_bytes())
                    .collect();
                partition.set_property(
                    "WHvSetPartitionProperty(CpuidExitList)",
                    whp::WHvPartitionPropertyCodeCpuidExitList,
                    &leaves,
                )?;
                // Only MSRs the hypervisor does not implement exit (UnhandledMsrs, bit 0).
                partition.set_property(
                    "WHvSetPartitionProperty(X64MsrExitBitmap)",
                    whp::WHvPartitionPropertyCodeX64MsrExitBitmap,
                    &1u64.to_le_bytes(),
                )?;
            }
            Err(e) => tracing::warn!("WHP: no CPUID/MSR exits on this host ({e}); continuing"),
        }
        // SAFETY: the handle is a partition created above and not yet set up.
        check("WHvSetupPartition", unsafe {
            (api.WHvSetupPartition)(partition.handle)
        })?;
        Ok(WhpPartition {
            inner: Arc::new(Inner {
                partition,
                config: config.clone(),
                slots: Mutex::new(BTreeMap::new()),
                ram: RwLock::new(Arc::new(GuestRam::empty())),
                eoi: Mutex::new(EoiFilter::new()),
                created: Mutex::new(vec![false; config.vcpu_count as usize]),
            }),
        })
    }
}

/// Owns a partition handle; deletes the partition when dropped.
struct PartitionHandle {
    api: &'static Api,
    handle: Handle,
}

impl PartitionHandle {
    fn set_property(
        &self,
        call: &'static str,
        code: whp::WHV_PARTITION_PROPERTY_CODE,
        value: &[u8],
    ) -> hv::Result<()> {
        // SAFETY: `value` is a live buffer of the size passed; WHP copies it.
        check(call, unsafe {
            (self.api.WHvSetPartitionProperty)(
                self.handle,
                code,
                value.as_ptr().cast(),
                value.len() as u32,
            )
        })
    }

    fn get_registers(&self, vp: u32, names: &[RegisterName]) -> hv::Result<RegisterList> {
        let mut list = RegisterList::for_names(names.to_vec());
        // SAFETY: `names` and `values` hold `len` elements each. `RegisterName` is a
        // transparent `WHV_REGISTER_NAME` and `RegisterValue` has the size of
        // `WHV_REGISTER_VALUE` with stricter alignment (checked at compile time above).
        check("WHvGetVirtualProcessorRegisters", unsafe {
            (self.api.WHvGetVirtualProcessorRegisters)(
                self.handle,
                vp,
                list.names.as_ptr().cast(),
                list.names.len() as u32,
                list.values.as_mut_ptr().cast(),
            )
        })?;
        Ok(list)
    }

    fn set_registers(&self, vp: u32, list: &RegisterList) -> hv::Result<()> {
        if list.is_empty() {
            return Ok(());
        }
        let n = list.names.len().min(list.values.len());
        // SAFETY: as in `get_registers`; both slices hold at least `n` elements.
        check("WHvSetVirtualProcessorRegisters", unsafe {
            (self.api.WHvSetVirtualProcessorRegisters)(
                self.handle,
                vp,
                list.names.as_ptr().cast(),
                n as u32,
                list.values.as_ptr().cast(),
            )
        })
    }

    fn cancel_run(&self, vp: u32) {
        // SAFETY: plain call on a live partition handle; failure (processor not created
        // yet) is harmless.
        let hr = unsafe { (self.api.WHvCancelRunVirtualProcessor)(self.handle, vp, 0) };
        if hr < 0 {
            tracing::trace!(vp, hr, "WHvCancelRunVirtualProcessor failed");
        }
    }

    fn apic_page(&self, vp: u32) -> hv::Result<Vec<u8>> {
        let mut page = vec![0u8; APIC_PAGE_SIZE];
        let mut written = 0u32;
        // SAFETY: `page` is a live buffer of the size passed.
        check("WHvGetVirtualProcessorInterruptControllerState2", unsafe {
            (self.api.WHvGetVirtualProcessorInterruptControllerState2)(
                self.handle,
                vp,
                page.as_mut_ptr().cast(),
                page.len() as u32,
                &mut written,
            )
        })?;
        Ok(page)
    }

    fn set_apic_page(&self, vp: u32, page: &[u8]) -> hv::Result<()> {
        // SAFETY: `page` is a live buffer of the size passed; WHP copies it.
        check("WHvSetVirtualProcessorInterruptControllerState2", unsafe {
            (self.api.WHvSetVirtualProcessorInterruptControllerState2)(
                self.handle,
                vp,
                page.as_ptr().cast(),
                page.len() as u32,
            )
        })
    }
}

impl Drop for PartitionHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from WHvCreatePartition and nothing uses it after this.
        let hr = unsafe { (self.api.WHvDeletePartition)(self.handle) };
        if hr < 0 {
            tracing::warn!(hr, "WHvDeletePartition failed");
        }
    }
}

struct Inner {
    partition: PartitionHandle,
    config: PartitionConfig,
    /// Mapped slots: region and read-only flag. The regions stay alive while mapped.
    slots: Mutex<BTreeMap<u32, (Arc<hv::GuestRegionMmap>, bool)>>,
    /// The same slots as the exit completion reads them.
    ram: RwLock<Arc<GuestRam>>,
    eoi: Mutex<EoiFilter>,
    created: Mutex<Vec<bool>>,
}

impl Inner {
    fn ram(&self) -> Arc<GuestRam> {
        self.ram.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn rebuild_ram(
        &self,
        slots: &BTreeMap<u32, (Arc<hv::GuestRegionMmap>, bool)>,
    ) -> hv::Result<()> {
        let list: Vec<(Arc<hv::GuestRegionMmap>, bool)> = slots.values().cloned().collect();
        let ram = GuestRam::from_slots(&list)?;
        *self.ram.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ram);
        Ok(())
    }

    fn unmap_range(&self, region: &hv::GuestRegionMmap) -> hv::Result<()> {
        // SAFETY: plain call; the range was mapped by `map_memory`.
        check("WHvUnmapGpaRange", unsafe {
            (self.partition.api.WHvUnmapGpaRange)(
                self.partition.handle,
                region.start_addr().0,
                region.len(),
            )
        })
    }
}

/// A WHP partition (one VM).
pub struct WhpPartition {
    inner: Arc<Inner>,
}

impl Partition for WhpPartition {
    fn backend_name(&self) -> &'static str {
        "whp"
    }

    fn irqchip_mode(&self) -> IrqChipMode {
        IrqChipMode::Split
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
        let mut slots = lock(&self.inner.slots);
        if let Some((old, _)) = slots.remove(&slot) {
            self.inner.unmap_range(&old)?;
        }
        let mut proposed = slots.clone();
        proposed.insert(slot, (region.clone(), read_only));
        // Refuse overlaps before telling the hypervisor.
        GuestRam::from_slots(&proposed.values().cloned().collect::<Vec<_>>())?;
        let flags = whp::WHvMapGpaRangeFlagRead
            | whp::WHvMapGpaRangeFlagExecute
            | if read_only {
                0
            } else {
                whp::WHvMapGpaRangeFlagWrite
            };
        // SAFETY: `host..host+len` is a live, page-aligned mapping owned by `region`, which
        // `slots` keeps alive until the range is unmapped again.
        check("WHvMapGpaRange", unsafe {
            (self.inner.partition.api.WHvMapGpaRange)(
                self.inner.partition.handle,
                host as *const c_void,
                region.start_addr().0,
                region.len(),
                flags,
            )
        })?;
        *slots = proposed;
        self.inner.rebuild_ram(&slots)
    }

    fn unmap_memory(&self, slot: u32) -> hv::Result<()> {
        let mut slots = lock(&self.inner.slots);
        let Some((region, _)) = slots.get(&slot).cloned() else {
            return Err(HvError::InvalidArgument(format!(
                "memory slot {slot} is not mapped"
            )));
        };
        self.inner.unmap_range(&region)?;
        slots.remove(&slot);
        self.inner.rebuild_ram(&slots)
    }

    fn create_vp(&self, index: u32) -> hv::Result<Box<dyn VirtualProcessor>> {
        {
            let mut created = lock(&self.inner.created);
            let Some(c) = created.get_mut(index as usize) else {
                return Err(HvError::InvalidArgument(format!(
                    "vCPU {index} beyond the configured count"
                )));
            };
            if *c {
                return Err(HvError::InvalidArgument(format!(
                    "vCPU {index} already exists"
                )));
            }
            let p = &self.inner.partition;
            // SAFETY: plain call on a set-up partition.
            check("WHvCreateVirtualProcessor", unsafe {
                (p.api.WHvCreateVirtualProcessor)(p.handle, index, 0)
            })?;
            *c = true;
        }
        let shared = Arc::new(VpShared {
            running: AtomicBool::new(false),
            attention: AtomicBool::new(false),
            wake: Mutex::new(()),
            cv: Condvar::new(),
        });
        let inner = self.inner.clone();
        let s = shared.clone();
        let stop = Arc::new(StopHandle::new(move || {
            s.attention.store(true, Ordering::SeqCst);
            s.cv.notify_all();
            if s.running.load(Ordering::SeqCst) {
                inner.partition.cancel_run(index);
            }
        }));
        let mut vp = WhpVp {
            index,
            inner: self.inner.clone(),
            shared,
            stop,
            emulator: Emulator::new(index, self.inner.config.vcpu_count),
            pic: PicDelivery::new(),
            interruptibility: None,
            exit: Box::default(),
        };
        vp.reset()?;
        Ok(Box::new(vp))
    }

    fn request_msi(&self, msi: MsiMessage) -> hv::Result<()> {
        let Some(request) = InterruptRequest::from_msi(msi) else {
            return Ok(());
        };
        let raw = request.to_raw();
        let p = &self.inner.partition;
        // SAFETY: `raw` is a live value laid out as WHV_INTERRUPT_CONTROL (size checked at
        // compile time), passed with its size.
        check("WHvRequestInterrupt", unsafe {
            (p.api.WHvRequestInterrupt)(
                p.handle,
                (&raw as *const RawInterruptControl).cast(),
                size_of::<RawInterruptControl>() as u32,
            )
        })?;
        lock(&self.inner.eoi).delivered(&request);
        Ok(())
    }

    fn set_ioapic_route(&self, pin: u8, msi: Option<MsiMessage>) -> hv::Result<()> {
        lock(&self.inner.eoi).set_route(pin, msi)
    }

    fn set_irq_line(&self, _gsi: u32, _level: bool) -> hv::Result<()> {
        Err(HvError::Unsupported(
            "interrupt lines need the in-kernel irqchip, which WHP does not have",
        ))
    }
}

/// What other threads share with a running processor.
struct VpShared {
    /// The thread is inside (or about to enter) `WHvRunVirtualProcessor`.
    running: AtomicBool,
    /// A kick arrived: look at interrupts and stop requests.
    attention: AtomicBool,
    wake: Mutex<()>,
    cv: Condvar,
}

/// One WHP virtual processor.
pub struct WhpVp {
    index: u32,
    inner: Arc<Inner>,
    shared: Arc<VpShared>,
    stop: Arc<StopHandle>,
    emulator: Emulator,
    pic: PicDelivery,
    /// Interruptibility reported by the last exit (`None`: unknown).
    interruptibility: Option<Interruptibility>,
    exit: Box<ExitContextBuffer>,
}

/// How long a processor that exited on HLT (older hosts) sleeps before looking again.
const HALT_POLL: Duration = Duration::from_millis(1);

impl WhpVp {
    fn get(&self, names: &[RegisterName]) -> hv::Result<RegisterList> {
        self.inner.partition.get_registers(self.index, names)
    }

    fn set(&self, list: &RegisterList) -> hv::Result<()> {
        self.inner.partition.set_registers(self.index, list)
    }

    /// Runs until the next exit.
    fn run_once(&mut self) -> hv::Result<RunExit> {
        let p = &self.inner.partition;
        // SAFETY: the buffer is a live, exclusively borrowed WHV_RUN_VP_EXIT_CONTEXT-sized
        // area (size checked at compile time) that WHP fills before returning.
        let hr = unsafe {
            (p.api.WHvRunVirtualProcessor)(
                p.handle,
                self.index,
                (&mut *self.exit as *mut ExitContextBuffer).cast(),
                size_of::<ExitContextBuffer>() as u32,
            )
        };
        check("WHvRunVirtualProcessor", hr)?;
        Ok(RunExit::parse(&self.exit))
    }

    /// Injects or asks for a window for the PIC before entering the guest.
    fn deliver_pic(&mut self, io: &dyn CpuIo) -> hv::Result<()> {
        let actions = self.pic.prepare(io, self.index, self.interruptibility);
        let mut regs = RegisterList::new();
        if let Some(v) = actions.inject {
            regs.push(
                RegisterName::PENDING_INTERRUPTION,
                PendingInterruption::interrupt(v).to_value(),
            );
        }
        if let Some(w) = actions.window {
            regs.push(
                RegisterName::DELIVERABILITY_NOTIFICATIONS,
                deliverability_value(false, w),
            );
        }
        self.set(&regs)?;
        if actions.inject.is_some() {
            self.interruptibility = Some(Interruptibility {
                event_pending: true,
                ..self.interruptibility.unwrap_or_default()
            });
            // A processor halted inside the hypervisor resumes to take the interrupt.
            if let Ok(a) = self.get(&[RegisterName::INTERNAL_ACTIVITY_STATE]) {
                let v = a.u64(RegisterName::INTERNAL_ACTIVITY_STATE);
                if v & HALT_SUSPEND != 0 {
                    let mut l = RegisterList::new();
                    l.push(
                        RegisterName::INTERNAL_ACTIVITY_STATE,
                        RegisterValue::from_u64(v & !HALT_SUSPEND),
                    );
                    self.set(&l)?;
                }
            }
        }
        Ok(())
    }

    /// Emulates the instruction of a memory or string-I/O exit and writes the result back.
    fn complete_with_emulator(&mut self, io: &dyn CpuIo, prefetched: &[u8]) -> hv::Result<()> {
        let regs = self.get(&EMULATION_REGISTERS)?;
        let ram = self.inner.ram();
        let mut bus = ExitBus {
            vp: self.index,
            ram: &ram,
            io,
            tsc: 0,
        };
        let done = self.emulator.emulate(&regs, prefetched, &mut bus);
        self.set(&done.registers)
    }

    /// Sleeps after a HLT exit until a kick, a PIC interrupt or the poll interval.
    fn wait_halted(&self, io: &dyn CpuIo) {
        let guard = lock(&self.shared.wake);
        if self.shared.attention.load(Ordering::SeqCst)
            || self.stop.stop_pending()
            || io.pic_interrupt_pending(self.index)
        {
            return;
        }
        let _ = self
            .shared
            .cv
            .wait_timeout(guard, HALT_POLL)
            .unwrap_or_else(|e| e.into_inner());
    }

    fn run_loop(&mut self, io: &dyn CpuIo) -> hv::Result<StopReason> {
        loop {
            // Announce the run before looking at requests: a kick either sees `running` and
            // cancels the run, or its request is seen here.
            self.shared.running.store(true, Ordering::SeqCst);
            self.shared.attention.store(false, Ordering::SeqCst);
            if let Some(r) = self.stop.take_stop() {
                return Ok(r);
            }
            self.deliver_pic(io)?;
            if self.shared.attention.load(Ordering::SeqCst) {
                // A kick came while preparing: look again before entering the guest.
                continue;
            }
            let exit = self.run_once()?;
            self.shared.running.store(false, Ordering::SeqCst);
            let vp = exit.vp;
            self.interruptibility = Some(Interruptibility {
                interrupts_enabled: vp.rflags & (1 << 9) != 0,
                interrupt_shadow: vp.execution_state.interrupt_shadow,
                event_pending: vp.execution_state.interruption_pending,
            });
            match exit.kind {
                ExitKind::MemoryAccess(m) => self.complete_with_emulator(io, m.instruction())?,
                ExitKind::IoPortAccess(p) => {
                    if port_io_needs_emulation(&vp, &p) {
                        self.complete_with_emulator(io, p.instruction())?;
                    } else {
                        let regs = complete_port_io_fast(&vp, &p, io, self.index);
                        self.set(&regs)?;
                    }
                }
                ExitKind::UnrecoverableException => return Ok(StopReason::TripleFault),
                ExitKind::InvalidVpRegisterValue => {
                    return Err(HvError::InvalidArgument(
                        "WHP refused the processor's register state".into(),
                    ))
                }
                ExitKind::UnsupportedFeature(code, parameter) => {
                    tracing::warn!(vp = self.index, code, parameter, "WHP: unsupported feature");
                    return Ok(StopReason::EmulationFailure {
                        address: vp.cs.base.wrapping_add(vp.rip),
                        bytes: Vec::new(),
                    });
                }
                ExitKind::InterruptWindow(_) => {
                    // Disarm explicitly; `deliver_pic` arms it again while the PIC waits.
                    self.pic.window_opened();
                    let mut l = RegisterList::new();
                    l.push(
                        RegisterName::DELIVERABILITY_NOTIFICATIONS,
                        deliverability_value(false, false),
                    );
                    self.set(&l)?;
                }
                ExitKind::Halt => self.wait_halted(io),
                ExitKind::ApicEoi(vector) => lock(&self.inner.eoi).eoi(io, self.index, vector),
                ExitKind::MsrAccess(m) => self.set(&complete_msr(&vp, &m))?,
                ExitKind::Cpuid(c) => {
                    let regs = complete_cpuid(&vp, &c, self.index, self.inner.config.vcpu_count);
                    self.set(&regs)?;
                }
                ExitKind::ApicInitSipi(icr) => {
                    tracing::debug!(vp = self.index, icr, "INIT/SIPI trap (not requested)")
                }
                ExitKind::Exception(vector, error) => {
                    tracing::debug!(
                        vp = self.index,
                        vector,
                        ?error,
                        "exception exit (not requested)"
                    )
                }
                ExitKind::Canceled | ExitKind::None => {}
                ExitKind::Unknown(r) => {
                    tracing::warn!(vp = self.index, reason = r, "unknown WHP exit");
                    return Ok(StopReason::EmulationFailure {
                        address: vp.cs.base.wrapping_add(vp.rip),
                        bytes: Vec::new(),
                    });
                }
            }
        }
    }
}

impl VirtualProcessor for WhpVp {
    fn index(&self) -> u32 {
        self.index
    }

    fn run(&mut self, io: &dyn CpuIo) -> hv::Result<StopReason> {
        let r = self.run_loop(io);
        self.shared.running.store(false, Ordering::SeqCst);
        r
    }

    fn stop_handle(&self) -> Arc<StopHandle> {
        self.stop.clone()
    }

    fn state(&mut self) -> hv::Result<VpState> {
        let mut regs = self.get(&state_register_names())?;
        for name in OPTIONAL_STATE_REGISTERS {
            match self.get(&[name]) {
                Ok(v) => regs.extend(v),
                Err(e) => tracing::debug!(vp = self.index, ?name, "register not readable: {e}"),
            }
        }
        let lapic = match self.inner.partition.apic_page(self.index) {
            Ok(page) => lapic_from_page(&page),
            Err(e) => {
                tracing::warn!(vp = self.index, "local APIC state not readable: {e}");
                Vec::new()
            }
        };
        Ok(state_from_registers(&regs, lapic))
    }

    fn set_state(&mut self, s: &VpState) -> hv::Result<()> {
        let (main, optional) = registers_from_state(s);
        self.set(&main)?;
        for (name, value) in optional.names.iter().zip(&optional.values) {
            let mut one = RegisterList::new();
            one.push(*name, *value);
            if let Err(e) = self.set(&one) {
                tracing::debug!(vp = self.index, ?name, "register not writable: {e}");
            }
        }
        if s.lapic.len() == hv::LAPIC_STATE_SIZE {
            let p = &self.inner.partition;
            let mut page = p.apic_page(self.index)?;
            if lapic_into_page(&s.lapic, &mut page) {
                p.set_apic_page(self.index, &page)?;
            }
        }
        self.pic.reset();
        self.interruptibility = None;
        Ok(())
    }

    fn reset(&mut self) -> hv::Result<()> {
        let mut s = power_on_state(self.index);
        match self.inner.partition.apic_page(self.index) {
            Ok(mut page) => {
                crate::regs::reset_apic_page(&mut page, self.index);
                s.lapic = lapic_from_page(&page);
            }
            Err(e) => tracing::warn!(vp = self.index, "local APIC not reset: {e}"),
        }
        self.set_state(&s)
    }
}

impl Drop for WhpVp {
    fn drop(&mut self) {
        let p = &self.inner.partition;
        // SAFETY: the processor was created by `create_vp` and is not running (this thread
        // owns it).
        let hr = unsafe { (p.api.WHvDeleteVirtualProcessor)(p.handle, self.index) };
        if hr < 0 {
            tracing::warn!(vp = self.index, hr, "WHvDeleteVirtualProcessor failed");
        }
        if let Some(c) = lock(&self.inner.created).get_mut(self.index as usize) {
            *c = false;
        }
    }
}
