//! Conversion between KVM's register structures and [`hv::VpState`], and per-vCPU CPUID.

use hv::{
    ActivityState, FpuState, HvError, Msr, PendingEvents, PendingException, Registers, Segment,
    SpecialRegisters, TableRegister, VpState, LAPIC_STATE_SIZE,
};
use kvm_bindings::{
    kvm_dtable, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_segment,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, CpuId, Msrs,
};
use kvm_ioctls::VcpuFd;

use crate::call_err;

/// MSRs that make up a processor's saved state (kept when the host's KVM knows them).
const STATE_MSRS: &[u32] = &[
    0x10,  // TSC
    0x174, // SYSENTER_CS
    0x175, // SYSENTER_ESP
    0x176, // SYSENTER_EIP
    0x1a0, // MISC_ENABLE
    0x277, // PAT
    0x2ff, // MTRR default type
    0x250, // MTRR fixed 64K
    0x258, // MTRR fixed 16K
    0x259, // MTRR fixed 16K
    0x268, // MTRR fixed 4K ...
    0x269,
    0x26a,
    0x26b,
    0x26c,
    0x26d,
    0x26e,
    0x26f,
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0103, // TSC_AUX
];

/// Variable-range MTRR pairs saved (base/mask 0x200..0x20F).
const VARIABLE_MTRRS: u32 = 8;

/// The MSRs to save that this host's KVM supports.
pub(crate) fn saved_msrs(supported: &[u32]) -> Vec<u32> {
    STATE_MSRS
        .iter()
        .copied()
        .chain(0x200..0x200 + 2 * VARIABLE_MTRRS)
        .filter(|m| supported.contains(m))
        .collect()
}

/// CPUID for vCPU `index` of `count`: APIC IDs, logical processor count, hypervisor bit.
pub(crate) fn cpuid_for_vp(supported: &CpuId, index: u32, count: u32) -> CpuId {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (index << 24) | ((count.min(255)) << 16);
                e.ecx |= 1 << 31;
                if count > 1 {
                    e.edx |= 1 << 28;
                }
            }
            0xb | 0x1f => e.edx = index,
            _ => {}
        }
    }
    cpuid
}

fn seg_from(k: &kvm_segment) -> Segment {
    Segment {
        base: k.base,
        limit: k.limit,
        selector: k.selector,
        type_: k.type_,
        present: k.present != 0,
        dpl: k.dpl,
        db: k.db != 0,
        s: k.s != 0,
        l: k.l != 0,
        g: k.g != 0,
        avl: k.avl != 0,
        unusable: k.unusable != 0,
    }
}

fn seg_to(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present.into(),
        dpl: s.dpl,
        db: s.db.into(),
        s: s.s.into(),
        l: s.l.into(),
        g: s.g.into(),
        avl: s.avl.into(),
        unusable: s.unusable.into(),
        padding: 0,
    }
}

fn table_from(t: &kvm_dtable) -> TableRegister {
    TableRegister {
        base: t.base,
        limit: t.limit,
    }
}

fn table_to(t: &TableRegister) -> kvm_dtable {
    kvm_dtable {
        base: t.base,
        limit: t.limit,
        padding: [0; 3],
    }
}

fn regs_from(r: &kvm_regs) -> Registers {
    Registers {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

fn regs_to(r: &Registers) -> kvm_regs {
    kvm_regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

fn sregs_from(s: &kvm_sregs) -> SpecialRegisters {
    SpecialRegisters {
        cs: seg_from(&s.cs),
        ds: seg_from(&s.ds),
        es: seg_from(&s.es),
        fs: seg_from(&s.fs),
        gs: seg_from(&s.gs),
        ss: seg_from(&s.ss),
        tr: seg_from(&s.tr),
        ldt: seg_from(&s.ldt),
        gdt: table_from(&s.gdt),
        idt: table_from(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
    }
}

fn sregs_to(s: &SpecialRegisters) -> kvm_sregs {
    kvm_sregs {
        cs: seg_to(&s.cs),
        ds: seg_to(&s.ds),
        es: seg_to(&s.es),
        fs: seg_to(&s.fs),
        gs: seg_to(&s.gs),
        ss: seg_to(&s.ss),
        tr: seg_to(&s.tr),
        ldt: seg_to(&s.ldt),
        gdt: table_to(&s.gdt),
        idt: table_to(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
        interrupt_bitmap: [0; 4],
    }
}

fn fpu_from(f: &kvm_fpu) -> FpuState {
    FpuState {
        fcw: f.fcw,
        fsw: f.fsw,
        ftw: f.ftwx,
        fop: f.last_opcode,
        fip: f.last_ip,
        fdp: f.last_dp,
        mxcsr: f.mxcsr,
        st: f.fpr,
        xmm: f.xmm,
    }
}

fn fpu_to(f: &FpuState) -> kvm_fpu {
    kvm_fpu {
        fpr: f.st,
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx: f.ftw,
        last_opcode: f.fop,
        last_ip: f.fip,
        last_dp: f.fdp,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
        ..Default::default()
    }
}

fn events_from(e: &kvm_vcpu_events) -> PendingEvents {
    let ex = &e.exception;
    PendingEvents {
        exception: (ex.injected != 0 || ex.pending != 0).then_some(PendingException {
            vector: ex.nr,
            error_code: (ex.has_error_code != 0).then_some(ex.error_code),
            injected: ex.injected != 0,
        }),
        interrupt: (e.interrupt.injected != 0).then_some(e.interrupt.nr),
        nmi_pending: e.nmi.pending != 0,
        nmi_masked: e.nmi.masked != 0,
        interrupt_shadow: e.interrupt.shadow != 0,
    }
}

fn events_to(p: &PendingEvents) -> kvm_vcpu_events {
    let mut e = kvm_vcpu_events::default();
    if let Some(ex) = p.exception {
        e.exception.injected = u8::from(ex.injected);
        e.exception.pending = u8::from(!ex.injected);
        e.exception.nr = ex.vector;
        e.exception.has_error_code = u8::from(ex.error_code.is_some());
        e.exception.error_code = ex.error_code.unwrap_or(0);
    }
    if let Some(v) = p.interrupt {
        e.interrupt.injected = 1;
        e.interrupt.nr = v;
    }
    e.interrupt.shadow = u8::from(p.interrupt_shadow);
    e.nmi.pending = u8::from(p.nmi_pending);
    e.nmi.masked = u8::from(p.nmi_masked);
    e.flags =
        kvm_bindings::KVM_VCPUEVENT_VALID_NMI_PENDING | kvm_bindings::KVM_VCPUEVENT_VALID_SHADOW;
    e
}

fn activity_from(m: u32) -> ActivityState {
    match m {
        kvm_bindings::KVM_MP_STATE_HALTED => ActivityState::Halted,
        kvm_bindings::KVM_MP_STATE_UNINITIALIZED | kvm_bindings::KVM_MP_STATE_INIT_RECEIVED => {
            ActivityState::WaitForSipi
        }
        _ => ActivityState::Running,
    }
}

fn activity_to(a: ActivityState) -> u32 {
    match a {
        ActivityState::Running => kvm_bindings::KVM_MP_STATE_RUNNABLE,
        ActivityState::Halted => kvm_bindings::KVM_MP_STATE_HALTED,
        ActivityState::WaitForSipi => kvm_bindings::KVM_MP_STATE_INIT_RECEIVED,
    }
}

/// Reads the full state of `fd`, including the MSRs listed in `msrs`.
pub(crate) fn get(fd: &VcpuFd, msrs: &[u32]) -> hv::Result<VpState> {
    let regs = fd.get_regs().map_err(|e| call_err("KVM_GET_REGS", e))?;
    let sregs = fd.get_sregs().map_err(|e| call_err("KVM_GET_SREGS", e))?;
    let fpu = fd.get_fpu().map_err(|e| call_err("KVM_GET_FPU", e))?;
    let lapic = fd.get_lapic().map_err(|e| call_err("KVM_GET_LAPIC", e))?;
    let events = fd
        .get_vcpu_events()
        .map_err(|e| call_err("KVM_GET_VCPU_EVENTS", e))?;
    let mp = fd
        .get_mp_state()
        .map_err(|e| call_err("KVM_GET_MP_STATE", e))?;
    let xcr0 = fd
        .get_xcrs()
        .ok()
        .and_then(|x| {
            x.xcrs
                .iter()
                .take(x.nr_xcrs as usize)
                .find(|x| x.xcr == 0)
                .map(|x| x.value)
        })
        .unwrap_or(1);
    let entries: Vec<kvm_msr_entry> = msrs
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut list =
        Msrs::from_entries(&entries).map_err(|e| HvError::InvalidArgument(e.to_string()))?;
    let n = fd
        .get_msrs(&mut list)
        .map_err(|e| call_err("KVM_GET_MSRS", e))?;
    let msrs = list.as_slice()[..n]
        .iter()
        .map(|m| Msr {
            index: m.index,
            value: m.data,
        })
        .collect();
    Ok(VpState {
        regs: regs_from(&regs),
        sregs: sregs_from(&sregs),
        fpu: fpu_from(&fpu),
        xcr0,
        msrs,
        lapic: lapic.regs.iter().map(|&b| b as u8).collect(),
        events: events_from(&events),
        activity: activity_from(mp.mp_state),
    })
}

/// Writes the full state into `fd`.
pub(crate) fn set(fd: &VcpuFd, s: &VpState) -> hv::Result<()> {
    fd.set_sregs(&sregs_to(&s.sregs))
        .map_err(|e| call_err("KVM_SET_SREGS", e))?;
    if s.lapic.len() == LAPIC_STATE_SIZE {
        let mut lapic = kvm_lapic_state::default();
        for (d, &b) in lapic.regs.iter_mut().zip(&s.lapic) {
            *d = b as _;
        }
        fd.set_lapic(&lapic)
            .map_err(|e| call_err("KVM_SET_LAPIC", e))?;
    }
    fd.set_regs(&regs_to(&s.regs))
        .map_err(|e| call_err("KVM_SET_REGS", e))?;
    fd.set_fpu(&fpu_to(&s.fpu))
        .map_err(|e| call_err("KVM_SET_FPU", e))?;
    if let Ok(mut xcrs) = fd.get_xcrs() {
        if let Some(x) = xcrs
            .xcrs
            .iter_mut()
            .take(xcrs.nr_xcrs as usize)
            .find(|x| x.xcr == 0)
        {
            x.value = s.xcr0;
            let x: kvm_xcrs = xcrs;
            fd.set_xcrs(&x).map_err(|e| call_err("KVM_SET_XCRS", e))?;
        }
    }
    let entries: Vec<kvm_msr_entry> = s
        .msrs
        .iter()
        .map(|m| kvm_msr_entry {
            index: m.index,
            data: m.value,
            ..Default::default()
        })
        .collect();
    let list = Msrs::from_entries(&entries).map_err(|e| HvError::InvalidArgument(e.to_string()))?;
    fd.set_msrs(&list)
        .map_err(|e| call_err("KVM_SET_MSRS", e))?;
    fd.set_vcpu_events(&events_to(&s.events))
        .map_err(|e| call_err("KVM_SET_VCPU_EVENTS", e))?;
    fd.set_mp_state(kvm_mp_state {
        mp_state: activity_to(s.activity),
    })
    .map_err(|e| call_err("KVM_SET_MP_STATE", e))?;
    Ok(())
}
