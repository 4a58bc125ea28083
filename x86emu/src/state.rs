//! Architectural register state of the software CPU and its conversion to [`hv::VpState`].

use hv::{ActivityState, FpuState, Msr, Segment, SpecialRegisters, TableRegister, VpState};
use std::collections::BTreeMap;

/// Segment register numbers, in the encoding order (ES, CS, SS, DS, FS, GS).
pub mod seg {
    /// ES.
    pub const ES: usize = 0;
    /// CS.
    pub const CS: usize = 1;
    /// SS.
    pub const SS: usize = 2;
    /// DS.
    pub const DS: usize = 3;
    /// FS.
    pub const FS: usize = 4;
    /// GS.
    pub const GS: usize = 5;
}

/// RFLAGS bits used by the core.
pub mod flags {
    /// Trap flag.
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// I/O privilege level (2 bits).
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
    /// Virtual interrupt flag.
    pub const VIF: u64 = 1 << 19;
    /// Virtual interrupt pending.
    pub const VIP: u64 = 1 << 20;
    /// CPUID available.
    pub const ID: u64 = 1 << 21;
    /// Bit 1 always reads as one.
    pub const FIXED: u64 = 1 << 1;
}

/// Control register bits used by the core.
pub mod cr {
    /// CR0 protection enable.
    pub const PE: u64 = 1 << 0;
    /// CR0 monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// CR0 emulation.
    pub const EM: u64 = 1 << 2;
    /// CR0 task switched.
    pub const TS: u64 = 1 << 3;
    /// CR0 extension type (always one).
    pub const ET: u64 = 1 << 4;
    /// CR0 numeric error.
    pub const NE: u64 = 1 << 5;
    /// CR0 write protect.
    pub const WP: u64 = 1 << 16;
    /// CR0 alignment mask.
    pub const AM: u64 = 1 << 18;
    /// CR0 not write-through.
    pub const NW: u64 = 1 << 29;
    /// CR0 cache disable.
    pub const CD: u64 = 1 << 30;
    /// CR0 paging.
    pub const PG: u64 = 1 << 31;
    /// CR4 page size extensions.
    pub const PSE: u64 = 1 << 4;
    /// CR4 physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// CR4 global pages.
    pub const PGE: u64 = 1 << 7;
    /// CR4 FXSAVE/SSE enabled.
    pub const OSFXSR: u64 = 1 << 9;
    /// CR4 SSE exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
}

/// EFER bits.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
}

/// MSR numbers the core handles itself.
pub mod msr {
    /// Time-stamp counter.
    pub const TSC: u32 = 0x10;
    /// Local APIC base.
    pub const APIC_BASE: u32 = 0x1b;
    /// SYSENTER CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// SYSENTER ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// SYSENTER EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// Extended feature enable.
    pub const EFER: u32 = 0xc000_0080;
    /// SYSCALL target segments.
    pub const STAR: u32 = 0xc000_0081;
    /// 64-bit SYSCALL target.
    pub const LSTAR: u32 = 0xc000_0082;
    /// Compatibility-mode SYSCALL target.
    pub const CSTAR: u32 = 0xc000_0083;
    /// SYSCALL flag mask.
    pub const SFMASK: u32 = 0xc000_0084;
    /// FS base.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// GS base.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// SWAPGS value.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// RDTSCP auxiliary value.
    pub const TSC_AUX: u32 = 0xc000_0103;
    /// Speculation control (IBRS): accepted and kept; the CPU does not speculate.
    pub const SPEC_CTRL: u32 = 0x48;
    /// Prediction barrier command (IBPB): write-only, nothing to flush.
    pub const PRED_CMD: u32 = 0x49;
    /// Read-only: the speculative-execution weaknesses the CPU does not have.
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
}

/// The software CPU's registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (encoding order).
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// ES, CS, SS, DS, FS, GS.
    pub seg: [Segment; 6],
    /// LDTR.
    pub ldt: Segment,
    /// Task register.
    pub tr: Segment,
    /// GDTR.
    pub gdt: TableRegister,
    /// IDTR.
    pub idt: TableRegister,
    /// CR0.
    pub cr0: u64,
    /// CR2 (page-fault address).
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8 (task priority).
    pub cr8: u64,
    /// EFER.
    pub efer: u64,
    /// XCR0.
    pub xcr0: u64,
    /// APIC base MSR.
    pub apic_base: u64,
    /// Debug registers DR0..DR7.
    pub dr: [u64; 8],
    /// Other MSRs kept as plain storage (SYSENTER, STAR family, PAT, MTRRs, ...).
    pub msrs: BTreeMap<u32, u64>,
    /// x87/SSE state.
    pub fpu: FpuState,
    /// Sleeping in HLT.
    pub halted: bool,
    /// Waiting for a startup IPI (application processor after INIT).
    pub wait_for_sipi: bool,
    /// Interrupts blocked for one instruction (after STI, MOV SS, POP SS).
    pub interrupt_shadow: bool,
    /// Inside an NMI handler.
    pub nmi_masked: bool,
}

/// MSRs reset to these values and saved with the state.
const STORED_MSRS: &[(u32, u64)] = &[
    (msr::SYSENTER_CS, 0),
    (msr::SYSENTER_ESP, 0),
    (msr::SYSENTER_EIP, 0),
    (msr::STAR, 0),
    (msr::LSTAR, 0),
    (msr::CSTAR, 0),
    (msr::SFMASK, 0),
    (msr::KERNEL_GS_BASE, 0),
    (msr::TSC_AUX, 0),
    (msr::SPEC_CTRL, 0),
    (0x277, 0x0007_0406_0007_0406), // PAT
    (0x2ff, 0),                     // MTRR default type
    (0x1a0, 1),                     // MISC_ENABLE: fast strings
];

impl CpuState {
    /// Power-on state: real mode at F000:FFF0. `bsp` marks the boot processor.
    pub fn power_on(bsp: bool) -> Self {
        let data = Segment::real_mode(0, false);
        let mut cs = Segment::real_mode(0xf000, true);
        cs.base = 0xffff_0000;
        let mut msrs: BTreeMap<u32, u64> = STORED_MSRS.iter().copied().collect();
        for i in 0..16 {
            msrs.insert(0x200 + i, 0);
        }
        for m in [
            0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
        ] {
            msrs.insert(m, 0);
        }
        let sys = |type_| Segment {
            limit: 0xffff,
            type_,
            present: true,
            ..Segment::default()
        };
        Self {
            gpr: [0; 16],
            rip: 0xfff0,
            rflags: flags::FIXED,
            seg: [data, cs, data, data, data, data],
            ldt: sys(2),
            tr: sys(11),
            gdt: TableRegister {
                base: 0,
                limit: 0xffff,
            },
            idt: TableRegister {
                base: 0,
                limit: 0xffff,
            },
            cr0: cr::ET | cr::NW | cr::CD,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            xcr0: 1,
            apic_base: 0xfee0_0000 | (1 << 11) | if bsp { 1 << 8 } else { 0 },
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            msrs,
            fpu: FpuState::default(),
            halted: false,
            wait_for_sipi: !bsp,
            interrupt_shadow: false,
            nmi_masked: false,
        }
    }

    /// Converts to the backend-neutral saved form (without the LAPIC, which the backend adds).
    pub fn to_vp_state(&self) -> VpState {
        let g = &self.gpr;
        let mut msrs: Vec<Msr> = self
            .msrs
            .iter()
            .map(|(&index, &value)| Msr { index, value })
            .collect();
        msrs.sort_by_key(|m| m.index);
        VpState {
            regs: hv::Registers {
                rax: g[0],
                rcx: g[1],
                rdx: g[2],
                rbx: g[3],
                rsp: g[4],
                rbp: g[5],
                rsi: g[6],
                rdi: g[7],
                r8: g[8],
                r9: g[9],
                r10: g[10],
                r11: g[11],
                r12: g[12],
                r13: g[13],
                r14: g[14],
                r15: g[15],
                rip: self.rip,
                rflags: self.rflags,
            },
            sregs: SpecialRegisters {
                es: self.seg[seg::ES],
                cs: self.seg[seg::CS],
                ss: self.seg[seg::SS],
                ds: self.seg[seg::DS],
                fs: self.seg[seg::FS],
                gs: self.seg[seg::GS],
                tr: self.tr,
                ldt: self.ldt,
                gdt: self.gdt,
                idt: self.idt,
                cr0: self.cr0,
                cr2: self.cr2,
                cr3: self.cr3,
                cr4: self.cr4,
                cr8: self.cr8,
                efer: self.efer,
                apic_base: self.apic_base,
            },
            fpu: self.fpu,
            xcr0: self.xcr0,
            msrs,
            lapic: Vec::new(),
            events: hv::PendingEvents {
                nmi_masked: self.nmi_masked,
                interrupt_shadow: self.interrupt_shadow,
                ..Default::default()
            },
            activity: if self.wait_for_sipi {
                ActivityState::WaitForSipi
            } else if self.halted {
                ActivityState::Halted
            } else {
                ActivityState::Running
            },
        }
    }

    /// Loads from the backend-neutral saved form (the LAPIC is the backend's).
    pub fn from_vp_state(s: &VpState) -> Self {
        let r = &s.regs;
        let mut msrs: BTreeMap<u32, u64> = STORED_MSRS.iter().copied().collect();
        for m in &s.msrs {
            if !matches!(
                m.index,
                msr::TSC | msr::EFER | msr::APIC_BASE | msr::FS_BASE | msr::GS_BASE
            ) {
                msrs.insert(m.index, m.value);
            }
        }
        let x = &s.sregs;
        Self {
            gpr: [
                r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15,
            ],
            rip: r.rip,
            rflags: r.rflags | flags::FIXED,
            seg: [x.es, x.cs, x.ss, x.ds, x.fs, x.gs],
            ldt: x.ldt,
            tr: x.tr,
            gdt: x.gdt,
            idt: x.idt,
            cr0: x.cr0,
            cr2: x.cr2,
            cr3: x.cr3,
            cr4: x.cr4,
            cr8: x.cr8,
            efer: x.efer,
            xcr0: s.xcr0,
            apic_base: x.apic_base,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            msrs,
            fpu: s.fpu,
            halted: s.activity == ActivityState::Halted,
            wait_for_sipi: s.activity == ActivityState::WaitForSipi,
            interrupt_shadow: s.events.interrupt_shadow,
            nmi_masked: s.events.nmi_masked,
        }
    }

    /// Protected mode (CR0.PE).
    pub fn protected(&self) -> bool {
        self.cr0 & cr::PE != 0
    }

    /// Virtual-8086 mode.
    pub fn v86(&self) -> bool {
        self.protected() && self.rflags & flags::VM != 0
    }

    /// Long mode active.
    pub fn long_mode(&self) -> bool {
        self.efer & efer::LMA != 0
    }

    /// 64-bit code (long mode with CS.L).
    pub fn code64(&self) -> bool {
        self.long_mode() && self.seg[seg::CS].l
    }

    /// Code size in bits: 16, 32 or 64.
    pub fn bitness(&self) -> u32 {
        if self.code64() {
            64
        } else if self.seg[seg::CS].db && !self.v86() {
            32
        } else {
            16
        }
    }

    /// Current privilege level.
    pub fn cpl(&self) -> u8 {
        if !self.protected() {
            0
        } else if self.v86() {
            3
        } else {
            self.seg[seg::CS].selector as u8 & 3
        }
    }

    /// Stack address size in bits.
    pub fn stack_size(&self) -> u32 {
        if self.code64() {
            64
        } else if self.seg[seg::SS].db {
            32
        } else {
            16
        }
    }
}
