//! WHP register names and values, and the conversion between them and [`hv::VpState`].
//!
//! [`RegisterName`] carries the numeric values of `WHV_REGISTER_NAME` and [`RegisterValue`]
//! has the size and layout of `WHV_REGISTER_VALUE` (16 bytes, little-endian), so that lists of
//! both go to `WHvGetVirtualProcessorRegisters`/`WHvSetVirtualProcessorRegisters` unchanged.
//! Everything here is plain data, testable on any host.

use hv::{
    ActivityState, FpuState, Msr, PendingEvents, PendingException, Registers, Segment,
    SpecialRegisters, TableRegister, VpState, LAPIC_STATE_SIZE,
};

/// A `WHV_REGISTER_NAME` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct RegisterName(pub i32);

#[allow(missing_docs)]
impl RegisterName {
    pub const RAX: Self = Self(0x0);
    pub const RCX: Self = Self(0x1);
    pub const RDX: Self = Self(0x2);
    pub const RBX: Self = Self(0x3);
    pub const RSP: Self = Self(0x4);
    pub const RBP: Self = Self(0x5);
    pub const RSI: Self = Self(0x6);
    pub const RDI: Self = Self(0x7);
    pub const R8: Self = Self(0x8);
    pub const R9: Self = Self(0x9);
    pub const R10: Self = Self(0xa);
    pub const R11: Self = Self(0xb);
    pub const R12: Self = Self(0xc);
    pub const R13: Self = Self(0xd);
    pub const R14: Self = Self(0xe);
    pub const R15: Self = Self(0xf);
    pub const RIP: Self = Self(0x10);
    pub const RFLAGS: Self = Self(0x11);
    pub const ES: Self = Self(0x12);
    pub const CS: Self = Self(0x13);
    pub const SS: Self = Self(0x14);
    pub const DS: Self = Self(0x15);
    pub const FS: Self = Self(0x16);
    pub const GS: Self = Self(0x17);
    pub const LDTR: Self = Self(0x18);
    pub const TR: Self = Self(0x19);
    pub const IDTR: Self = Self(0x1a);
    pub const GDTR: Self = Self(0x1b);
    pub const CR0: Self = Self(0x1c);
    pub const CR2: Self = Self(0x1d);
    pub const CR3: Self = Self(0x1e);
    pub const CR4: Self = Self(0x1f);
    pub const CR8: Self = Self(0x20);
    pub const XCR0: Self = Self(0x27);
    pub const XMM0: Self = Self(0x1000);
    pub const FP_MMX0: Self = Self(0x1010);
    pub const FP_CONTROL_STATUS: Self = Self(0x1018);
    pub const XMM_CONTROL_STATUS: Self = Self(0x1019);
    pub const TSC: Self = Self(0x2000);
    pub const EFER: Self = Self(0x2001);
    pub const KERNEL_GS_BASE: Self = Self(0x2002);
    pub const APIC_BASE: Self = Self(0x2003);
    pub const PAT: Self = Self(0x2004);
    pub const SYSENTER_CS: Self = Self(0x2005);
    pub const SYSENTER_EIP: Self = Self(0x2006);
    pub const SYSENTER_ESP: Self = Self(0x2007);
    pub const STAR: Self = Self(0x2008);
    pub const LSTAR: Self = Self(0x2009);
    pub const CSTAR: Self = Self(0x200a);
    pub const SFMASK: Self = Self(0x200b);
    pub const MTRR_DEF_TYPE: Self = Self(0x200e);
    pub const MTRR_PHYS_BASE0: Self = Self(0x2010);
    pub const MTRR_PHYS_MASK0: Self = Self(0x2040);
    pub const MTRR_FIX64K_00000: Self = Self(0x2070);
    pub const MTRR_FIX16K_80000: Self = Self(0x2071);
    pub const MTRR_FIX16K_A0000: Self = Self(0x2072);
    pub const MTRR_FIX4K_C0000: Self = Self(0x2073);
    pub const TSC_AUX: Self = Self(0x207b);
    pub const PENDING_INTERRUPTION: Self = Self(0x8000_0000_u32 as i32);
    pub const INTERRUPT_STATE: Self = Self(0x8000_0001_u32 as i32);
    pub const PENDING_EVENT: Self = Self(0x8000_0002_u32 as i32);
    pub const DELIVERABILITY_NOTIFICATIONS: Self = Self(0x8000_0004_u32 as i32);
    pub const INTERNAL_ACTIVITY_STATE: Self = Self(0x8000_0005_u32 as i32);
}

impl RegisterName {
    /// XMM register `i` (0..16).
    pub const fn xmm(i: usize) -> Self {
        Self(Self::XMM0.0 + i as i32)
    }
    /// x87/MMX register `i` (0..8).
    pub const fn fp(i: usize) -> Self {
        Self(Self::FP_MMX0.0 + i as i32)
    }
}

/// A `WHV_REGISTER_VALUE`: 16 bytes, the low quadword first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(16))]
pub struct RegisterValue {
    /// Bytes 0..8.
    pub low: u64,
    /// Bytes 8..16.
    pub high: u64,
}

impl RegisterValue {
    /// A 64-bit (or narrower) register.
    pub const fn from_u64(v: u64) -> Self {
        Self { low: v, high: 0 }
    }

    /// The value as little-endian bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.low.to_le_bytes());
        b[8..].copy_from_slice(&self.high.to_le_bytes());
        b
    }

    /// A value from little-endian bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let (lo, hi) = b.split_at(8);
        Self {
            low: u64::from_le_bytes(lo.try_into().unwrap_or_default()),
            high: u64::from_le_bytes(hi.try_into().unwrap_or_default()),
        }
    }
}

/// Packs segment attributes as `WHV_X64_SEGMENT_REGISTER` does: type 3:0, S 4, DPL 6:5,
/// P 7, AVL 12, L 13, D/B 14, G 15. WHP has no "unusable" bit: an unusable segment is written
/// as not present.
pub fn segment_attributes(s: &Segment) -> u16 {
    u16::from(s.type_ & 0xf)
        | u16::from(s.s) << 4
        | u16::from(s.dpl & 3) << 5
        | u16::from(s.present && !s.unusable) << 7
        | u16::from(s.avl) << 12
        | u16::from(s.l) << 13
        | u16::from(s.db) << 14
        | u16::from(s.g) << 15
}

/// A segment from its WHP fields; a segment that is not present reads back as unusable.
pub fn segment_from_parts(base: u64, limit: u32, selector: u16, attributes: u16) -> Segment {
    let a = attributes;
    let present = a & (1 << 7) != 0;
    Segment {
        base,
        limit,
        selector,
        type_: (a & 0xf) as u8,
        s: a & (1 << 4) != 0,
        dpl: ((a >> 5) & 3) as u8,
        present,
        avl: a & (1 << 12) != 0,
        l: a & (1 << 13) != 0,
        db: a & (1 << 14) != 0,
        g: a & (1 << 15) != 0,
        unusable: !present,
    }
}

/// A segment register value (`Base`, `Limit`, `Selector`, `Attributes`).
pub fn segment_value(s: &Segment) -> RegisterValue {
    RegisterValue {
        low: s.base,
        high: u64::from(s.limit)
            | u64::from(s.selector) << 32
            | u64::from(segment_attributes(s)) << 48,
    }
}

/// The segment in a segment register value.
pub fn segment_from_value(v: RegisterValue) -> Segment {
    segment_from_parts(
        v.low,
        v.high as u32,
        (v.high >> 32) as u16,
        (v.high >> 48) as u16,
    )
}

/// A descriptor-table register value (`Pad[3]`, `Limit`, `Base`).
pub fn table_value(t: &TableRegister) -> RegisterValue {
    RegisterValue {
        low: u64::from(t.limit) << 48,
        high: t.base,
    }
}

/// The table register in a descriptor-table register value.
pub fn table_from_value(v: RegisterValue) -> TableRegister {
    TableRegister {
        base: v.high,
        limit: (v.low >> 48) as u16,
    }
}

/// Kinds of `WHV_X64_PENDING_INTERRUPTION_REGISTER::InterruptionType`.
pub mod interruption_type {
    /// External interrupt.
    pub const INTERRUPT: u64 = 0;
    /// NMI.
    pub const NMI: u64 = 2;
    /// Hardware exception.
    pub const EXCEPTION: u64 = 3;
}

/// A decoded `WHV_X64_PENDING_INTERRUPTION_REGISTER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingInterruption {
    /// An event is being injected.
    pub pending: bool,
    /// [`interruption_type`] value.
    pub kind: u64,
    /// Vector.
    pub vector: u16,
    /// Error code, when one is pushed.
    pub error_code: Option<u32>,
}

impl PendingInterruption {
    /// External interrupt `vector` to inject.
    pub fn interrupt(vector: u8) -> Self {
        Self {
            pending: true,
            kind: interruption_type::INTERRUPT,
            vector: u16::from(vector),
            error_code: None,
        }
    }

    /// Exception `vector` to inject.
    pub fn exception(vector: u8, error_code: Option<u32>) -> Self {
        Self {
            pending: true,
            kind: interruption_type::EXCEPTION,
            vector: u16::from(vector),
            error_code,
        }
    }

    /// Register value: pending 0, type 3:1, deliver-error-code 4, vector 31:16, error 63:32.
    pub fn to_value(self) -> RegisterValue {
        if !self.pending {
            return RegisterValue::default();
        }
        let v = 1
            | (self.kind & 7) << 1
            | u64::from(self.error_code.is_some()) << 4
            | u64::from(self.vector) << 16
            | u64::from(self.error_code.unwrap_or(0)) << 32;
        RegisterValue::from_u64(v)
    }

    /// Decodes the register.
    pub fn from_value(v: RegisterValue) -> Self {
        let r = v.low;
        Self {
            pending: r & 1 != 0,
            kind: (r >> 1) & 7,
            vector: (r >> 16) as u16,
            error_code: (r & (1 << 4) != 0).then_some((r >> 32) as u32),
        }
    }
}

/// `WHV_X64_PENDING_EVENT_TYPE` values in [`RegisterName::PENDING_EVENT`].
pub mod pending_event_type {
    /// An exception not yet delivered.
    pub const EXCEPTION: u64 = 0;
    /// An external interrupt (ExtINT) to deliver when the processor allows.
    pub const EXT_INT: u64 = 5;
}

/// `WHvRegisterInterruptState`: bit 0 interrupt shadow, bit 1 NMI masked.
pub fn interrupt_state_value(shadow: bool, nmi_masked: bool) -> RegisterValue {
    RegisterValue::from_u64(u64::from(shadow) | u64::from(nmi_masked) << 1)
}

/// `WHvX64RegisterDeliverabilityNotifications`: bit 0 NMI, bit 1 interrupt window.
pub fn deliverability_value(nmi: bool, interrupt: bool) -> RegisterValue {
    RegisterValue::from_u64(u64::from(nmi) | u64::from(interrupt) << 1)
}

/// `WHvRegisterInternalActivityState` bit: waiting for SIPI.
pub const STARTUP_SUSPEND: u64 = 1;
/// `WHvRegisterInternalActivityState` bit: halted.
pub const HALT_SUSPEND: u64 = 2;

/// The activity register value for `a`.
pub fn activity_value(a: ActivityState) -> RegisterValue {
    RegisterValue::from_u64(match a {
        ActivityState::Running => 0,
        ActivityState::WaitForSipi => STARTUP_SUSPEND,
        ActivityState::Halted => HALT_SUSPEND,
    })
}

/// The activity state in an activity register value.
pub fn activity_from_value(v: RegisterValue) -> ActivityState {
    if v.low & STARTUP_SUSPEND != 0 {
        ActivityState::WaitForSipi
    } else if v.low & HALT_SUSPEND != 0 {
        ActivityState::Halted
    } else {
        ActivityState::Running
    }
}

/// MSRs kept in [`VpState::msrs`] and the WHP registers that hold them.
pub const MSR_REGISTERS: &[(u32, RegisterName)] = &[
    (0x10, RegisterName::TSC),
    (0x174, RegisterName::SYSENTER_CS),
    (0x175, RegisterName::SYSENTER_ESP),
    (0x176, RegisterName::SYSENTER_EIP),
    (0x277, RegisterName::PAT),
    (0x2ff, RegisterName::MTRR_DEF_TYPE),
    (0x250, RegisterName::MTRR_FIX64K_00000),
    (0x258, RegisterName::MTRR_FIX16K_80000),
    (0x259, RegisterName::MTRR_FIX16K_A0000),
    (0x268, RegisterName(RegisterName::MTRR_FIX4K_C0000.0)),
    (0x269, RegisterName(RegisterName::MTRR_FIX4K_C0000.0 + 1)),
    (0x26a, RegisterName(RegisterName::MTRR_FIX4K_C0000.0 + 2)),
    (0x26b, RegisterName(RegisterName::MTRR_FIX4K_C0000.0 + 3)),
    (0x26c, RegisterName(RegisterName::MTRR_FIX4K_C0000.0 + 4)),
    (0x26d, RegisterName(RegisterName::MTRR_FIX4K_C0000.0 + 5)),
    (0x26e, RegisterName(RegisterName::MTRR_FIX4K_C0000.0 + 6)),
    (0x26f, RegisterName(RegisterName::MTRR_FIX4K_C0000.0 + 7)),
    (0x200, RegisterName(RegisterName::MTRR_PHYS_BASE0.0)),
    (0x201, RegisterName(RegisterName::MTRR_PHYS_MASK0.0)),
    (0x202, RegisterName(RegisterName::MTRR_PHYS_BASE0.0 + 1)),
    (0x203, RegisterName(RegisterName::MTRR_PHYS_MASK0.0 + 1)),
    (0x204, RegisterName(RegisterName::MTRR_PHYS_BASE0.0 + 2)),
    (0x205, RegisterName(RegisterName::MTRR_PHYS_MASK0.0 + 2)),
    (0x206, RegisterName(RegisterName::MTRR_PHYS_BASE0.0 + 3)),
    (0x207, RegisterName(RegisterName::MTRR_PHYS_MASK0.0 + 3)),
    (0x208, RegisterName(RegisterName::MTRR_PHYS_BASE0.0 + 4)),
    (0x209, RegisterName(RegisterName::MTRR_PHYS_MASK0.0 + 4)),
    (0x20a, RegisterName(RegisterName::MTRR_PHYS_BASE0.0 + 5)),
    (0x20b, RegisterName(RegisterName::MTRR_PHYS_MASK0.0 + 5)),
    (0x20c, RegisterName(RegisterName::MTRR_PHYS_BASE0.0 + 6)),
    (0x20d, RegisterName(RegisterName::MTRR_PHYS_MASK0.0 + 6)),
    (0x20e, RegisterName(RegisterName::MTRR_PHYS_BASE0.0 + 7)),
    (0x20f, RegisterName(RegisterName::MTRR_PHYS_MASK0.0 + 7)),
    (0xc000_0081, RegisterName::STAR),
    (0xc000_0082, RegisterName::LSTAR),
    (0xc000_0083, RegisterName::CSTAR),
    (0xc000_0084, RegisterName::SFMASK),
    (0xc000_0102, RegisterName::KERNEL_GS_BASE),
    (0xc000_0103, RegisterName::TSC_AUX),
];

/// The WHP register holding MSR `index`, when the state keeps it.
pub fn msr_register(index: u32) -> Option<RegisterName> {
    MSR_REGISTERS
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, r)| *r)
}

const GPRS: [RegisterName; 18] = [
    RegisterName::RAX,
    RegisterName::RCX,
    RegisterName::RDX,
    RegisterName::RBX,
    RegisterName::RSP,
    RegisterName::RBP,
    RegisterName::RSI,
    RegisterName::RDI,
    RegisterName::R8,
    RegisterName::R9,
    RegisterName::R10,
    RegisterName::R11,
    RegisterName::R12,
    RegisterName::R13,
    RegisterName::R14,
    RegisterName::R15,
    RegisterName::RIP,
    RegisterName::RFLAGS,
];

/// Registers making up the architectural state that every WHP version offers, in
/// `WHV_REGISTER_NAME` order within each group (general, segment, control, x87/SSE, MSRs,
/// events). XCR0, the pending event and the activity state are read separately
/// ([`OPTIONAL_STATE_REGISTERS`]) because older hosts or processors reject them.
pub fn state_register_names() -> Vec<RegisterName> {
    let mut v: Vec<RegisterName> = GPRS.to_vec();
    v.extend([
        RegisterName::ES,
        RegisterName::CS,
        RegisterName::SS,
        RegisterName::DS,
        RegisterName::FS,
        RegisterName::GS,
        RegisterName::LDTR,
        RegisterName::TR,
        RegisterName::IDTR,
        RegisterName::GDTR,
        RegisterName::CR0,
        RegisterName::CR2,
        RegisterName::CR3,
        RegisterName::CR4,
        RegisterName::CR8,
        RegisterName::EFER,
        RegisterName::APIC_BASE,
    ]);
    v.extend((0..16).map(RegisterName::xmm));
    v.extend((0..8).map(RegisterName::fp));
    v.push(RegisterName::FP_CONTROL_STATUS);
    v.push(RegisterName::XMM_CONTROL_STATUS);
    v.extend(MSR_REGISTERS.iter().map(|(_, r)| *r));
    v.push(RegisterName::PENDING_INTERRUPTION);
    v.push(RegisterName::INTERRUPT_STATE);
    v
}

/// State registers read and written one by one, each allowed to fail on hosts without them.
pub const OPTIONAL_STATE_REGISTERS: [RegisterName; 3] = [
    RegisterName::XCR0,
    RegisterName::PENDING_EVENT,
    RegisterName::INTERNAL_ACTIVITY_STATE,
];

/// A list of registers and their values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterList {
    /// Names, in the order given to WHP.
    pub names: Vec<RegisterName>,
    /// Values, one per name.
    pub values: Vec<RegisterValue>,
}

impl RegisterList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// A list of `names` with zero values (a buffer for a read).
    pub fn for_names(names: Vec<RegisterName>) -> Self {
        let values = vec![RegisterValue::default(); names.len()];
        Self { names, values }
    }

    /// Appends one register.
    pub fn push(&mut self, name: RegisterName, value: RegisterValue) {
        self.names.push(name);
        self.values.push(value);
    }

    /// The value of `name`, when listed.
    pub fn get(&self, name: RegisterName) -> Option<RegisterValue> {
        self.names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.values.get(i).copied())
    }

    /// A 64-bit register, zero when not listed.
    pub fn u64(&self, name: RegisterName) -> u64 {
        self.get(name).map_or(0, |v| v.low)
    }

    /// Number of registers.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the list is empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Moves the registers of `other` into this list (replacing values already listed).
    pub fn extend(&mut self, other: RegisterList) {
        for (n, v) in other.names.into_iter().zip(other.values) {
            match self.names.iter().position(|x| *x == n) {
                Some(i) => self.values[i] = v,
                None => self.push(n, v),
            }
        }
    }
}

fn fp_control_value(f: &FpuState) -> RegisterValue {
    RegisterValue {
        low: u64::from(f.fcw)
            | u64::from(f.fsw) << 16
            | u64::from(f.ftw) << 32
            | u64::from(f.fop) << 48,
        high: f.fip,
    }
}

fn xmm_control_value(f: &FpuState) -> RegisterValue {
    RegisterValue {
        low: f.fdp,
        high: u64::from(f.mxcsr) | 0xffff_u64 << 32,
    }
}

/// The registers that hold `s` except the local APIC page (written through the interrupt
/// controller state) — the main list plus [`OPTIONAL_STATE_REGISTERS`] — as two lists.
pub fn registers_from_state(s: &VpState) -> (RegisterList, RegisterList) {
    let r = &s.regs;
    let x = &s.sregs;
    let mut l = RegisterList::new();
    for (name, v) in GPRS.iter().zip([
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.rflags,
    ]) {
        l.push(*name, RegisterValue::from_u64(v));
    }
    for (name, seg) in [
        (RegisterName::ES, &x.es),
        (RegisterName::CS, &x.cs),
        (RegisterName::SS, &x.ss),
        (RegisterName::DS, &x.ds),
        (RegisterName::FS, &x.fs),
        (RegisterName::GS, &x.gs),
        (RegisterName::LDTR, &x.ldt),
        (RegisterName::TR, &x.tr),
    ] {
        l.push(name, segment_value(seg));
    }
    l.push(RegisterName::IDTR, table_value(&x.idt));
    l.push(RegisterName::GDTR, table_value(&x.gdt));
    for (name, v) in [
        (RegisterName::CR0, x.cr0),
        (RegisterName::CR2, x.cr2),
        (RegisterName::CR3, x.cr3),
        (RegisterName::CR4, x.cr4),
        (RegisterName::CR8, x.cr8),
        (RegisterName::EFER, x.efer),
        (RegisterName::APIC_BASE, x.apic_base),
    ] {
        l.push(name, RegisterValue::from_u64(v));
    }
    for (i, xmm) in s.fpu.xmm.iter().enumerate() {
        l.push(RegisterName::xmm(i), RegisterValue::from_bytes(*xmm));
    }
    for (i, st) in s.fpu.st.iter().enumerate() {
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&st[..10]);
        l.push(RegisterName::fp(i), RegisterValue::from_bytes(b));
    }
    l.push(RegisterName::FP_CONTROL_STATUS, fp_control_value(&s.fpu));
    l.push(RegisterName::XMM_CONTROL_STATUS, xmm_control_value(&s.fpu));
    for (index, name) in MSR_REGISTERS {
        if let Some(v) = s.msr(*index) {
            l.push(*name, RegisterValue::from_u64(v));
        }
    }
    for m in s.msrs.iter().filter(|m| msr_register(m.index).is_none()) {
        tracing::debug!(msr = m.index, "MSR not kept by the WHP backend; dropped");
    }
    let e = &s.events;
    let injected = match (e.exception, e.interrupt) {
        (Some(ex), _) if ex.injected => PendingInterruption::exception(ex.vector, ex.error_code),
        (_, Some(v)) => PendingInterruption::interrupt(v),
        _ if e.nmi_pending => PendingInterruption {
            pending: true,
            kind: interruption_type::NMI,
            vector: 2,
            error_code: None,
        },
        _ => PendingInterruption::default(),
    };
    l.push(RegisterName::PENDING_INTERRUPTION, injected.to_value());
    l.push(
        RegisterName::INTERRUPT_STATE,
        interrupt_state_value(e.interrupt_shadow, e.nmi_masked),
    );

    let mut opt = RegisterList::new();
    opt.push(RegisterName::XCR0, RegisterValue::from_u64(s.xcr0));
    let pending = match e.exception {
        Some(ex) if !ex.injected => RegisterValue::from_u64(
            1 | pending_event_type::EXCEPTION << 1
                | u64::from(ex.error_code.is_some()) << 8
                | u64::from(ex.vector) << 16
                | u64::from(ex.error_code.unwrap_or(0)) << 32,
        ),
        _ => RegisterValue::default(),
    };
    opt.push(RegisterName::PENDING_EVENT, pending);
    opt.push(
        RegisterName::INTERNAL_ACTIVITY_STATE,
        activity_value(s.activity),
    );
    (l, opt)
}

/// Builds the state from registers read back (missing registers read as zero, a missing
/// XCR0 as 1). `lapic` is the APIC register page prefix ([`lapic_from_page`]).
pub fn state_from_registers(l: &RegisterList, lapic: Vec<u8>) -> VpState {
    let g = |n| l.u64(n);
    let regs = Registers {
        rax: g(RegisterName::RAX),
        rcx: g(RegisterName::RCX),
        rdx: g(RegisterName::RDX),
        rbx: g(RegisterName::RBX),
        rsp: g(RegisterName::RSP),
        rbp: g(RegisterName::RBP),
        rsi: g(RegisterName::RSI),
        rdi: g(RegisterName::RDI),
        r8: g(RegisterName::R8),
        r9: g(RegisterName::R9),
        r10: g(RegisterName::R10),
        r11: g(RegisterName::R11),
        r12: g(RegisterName::R12),
        r13: g(RegisterName::R13),
        r14: g(RegisterName::R14),
        r15: g(RegisterName::R15),
        rip: g(RegisterName::RIP),
        rflags: g(RegisterName::RFLAGS),
    };
    let seg = |n| segment_from_value(l.get(n).unwrap_or_default());
    let table = |n| table_from_value(l.get(n).unwrap_or_default());
    let sregs = SpecialRegisters {
        cs: seg(RegisterName::CS),
        ds: seg(RegisterName::DS),
        es: seg(RegisterName::ES),
        fs: seg(RegisterName::FS),
        gs: seg(RegisterName::GS),
        ss: seg(RegisterName::SS),
        tr: seg(RegisterName::TR),
        ldt: seg(RegisterName::LDTR),
        gdt: table(RegisterName::GDTR),
        idt: table(RegisterName::IDTR),
        cr0: g(RegisterName::CR0),
        cr2: g(RegisterName::CR2),
        cr3: g(RegisterName::CR3),
        cr4: g(RegisterName::CR4),
        cr8: g(RegisterName::CR8),
        efer: g(RegisterName::EFER),
        apic_base: g(RegisterName::APIC_BASE),
    };
    let fpc = l.get(RegisterName::FP_CONTROL_STATUS).unwrap_or_default();
    let xmc = l.get(RegisterName::XMM_CONTROL_STATUS).unwrap_or_default();
    let mut fpu = FpuState {
        fcw: fpc.low as u16,
        fsw: (fpc.low >> 16) as u16,
        ftw: (fpc.low >> 32) as u8,
        fop: (fpc.low >> 48) as u16,
        fip: fpc.high,
        fdp: xmc.low,
        mxcsr: xmc.high as u32,
        st: [[0; 16]; 8],
        xmm: [[0; 16]; 16],
    };
    for (i, st) in fpu.st.iter_mut().enumerate() {
        let b = l.get(RegisterName::fp(i)).unwrap_or_default().to_bytes();
        st[..10].copy_from_slice(&b[..10]);
    }
    for (i, xmm) in fpu.xmm.iter_mut().enumerate() {
        *xmm = l.get(RegisterName::xmm(i)).unwrap_or_default().to_bytes();
    }
    let msrs = MSR_REGISTERS
        .iter()
        .filter_map(|(index, name)| {
            l.get(*name).map(|v| Msr {
                index: *index,
                value: v.low,
            })
        })
        .collect();

    let mut events = PendingEvents::default();
    let pi = PendingInterruption::from_value(
        l.get(RegisterName::PENDING_INTERRUPTION)
            .unwrap_or_default(),
    );
    if pi.pending {
        match pi.kind {
            interruption_type::EXCEPTION => {
                events.exception = Some(PendingException {
                    vector: pi.vector as u8,
                    error_code: pi.error_code,
                    injected: true,
                })
            }
            interruption_type::NMI => events.nmi_pending = true,
            _ => events.interrupt = Some(pi.vector as u8),
        }
    }
    let pe = l.u64(RegisterName::PENDING_EVENT);
    if pe & 1 != 0 {
        match (pe >> 1) & 7 {
            pending_event_type::EXCEPTION if events.exception.is_none() => {
                events.exception = Some(PendingException {
                    vector: (pe >> 16) as u8,
                    error_code: (pe & (1 << 8) != 0).then_some((pe >> 32) as u32),
                    injected: false,
                })
            }
            pending_event_type::EXT_INT if events.interrupt.is_none() => {
                events.interrupt = Some((pe >> 8) as u8)
            }
            _ => {}
        }
    }
    let is = l.u64(RegisterName::INTERRUPT_STATE);
    events.interrupt_shadow = is & 1 != 0;
    events.nmi_masked = is & 2 != 0;

    VpState {
        regs,
        sregs,
        fpu,
        xcr0: l.get(RegisterName::XCR0).map_or(1, |v| v.low),
        msrs,
        lapic,
        events,
        activity: activity_from_value(
            l.get(RegisterName::INTERNAL_ACTIVITY_STATE)
                .unwrap_or_default(),
        ),
    }
}

/// Size of the xAPIC register page exchanged through
/// `WHv{Get,Set}VirtualProcessorInterruptControllerState2`.
pub const APIC_PAGE_SIZE: usize = 4096;

/// The [`VpState::lapic`] block (offsets 0x000..0x400) of an APIC register page.
pub fn lapic_from_page(page: &[u8]) -> Vec<u8> {
    page.get(..LAPIC_STATE_SIZE)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// Puts a saved [`VpState::lapic`] block into `page` (the current page, so registers past
/// 0x400 keep their values). Returns false, leaving `page` alone, when `lapic` has the wrong
/// size.
pub fn lapic_into_page(lapic: &[u8], page: &mut [u8]) -> bool {
    if lapic.len() != LAPIC_STATE_SIZE || page.len() < LAPIC_STATE_SIZE {
        return false;
    }
    page[..LAPIC_STATE_SIZE].copy_from_slice(lapic);
    true
}

/// Puts an xAPIC register page (16-byte register stride) into its power-on state for APIC
/// `apic_id`: ID set, version kept, DFR all-ones, spurious vector 0xFF with the APIC
/// software-disabled, every LVT masked, everything else zero.
pub fn reset_apic_page(page: &mut [u8], apic_id: u32) {
    if page.len() < LAPIC_STATE_SIZE {
        return;
    }
    let version = page[0x30..0x34].to_vec();
    page[..LAPIC_STATE_SIZE].fill(0);
    page[0x30..0x34].copy_from_slice(&version);
    let mut put = |off: usize, v: u32| page[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(0x20, apic_id << 24);
    put(0xe0, 0xffff_ffff);
    put(0xf0, 0xff);
    for lvt in (0x320..=0x370).step_by(0x10) {
        put(lvt, 1 << 16);
    }
}

/// The power-on state of processor `index` in the layout WHP takes: real mode at F000:FFF0 for
/// the bootstrap processor, waiting for SIPI for the others (x86emu's reset values).
pub fn power_on_state(index: u32) -> VpState {
    let mut s = x86emu::CpuState::power_on(index == 0).to_vp_state();
    // WHP keeps the TSC running across a reset of the processor state.
    s.msrs
        .retain(|m| msr_register(m.index).is_some() && m.index != 0x10);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_state() -> VpState {
        let mut s = VpState {
            regs: Registers {
                rax: 1,
                rbx: 2,
                rcx: 3,
                rdx: 4,
                rsi: 5,
                rdi: 6,
                rsp: 7,
                rbp: 8,
                r8: 9,
                r9: 10,
                r10: 11,
                r11: 12,
                r12: 13,
                r13: 14,
                r14: 15,
                r15: 0xffff_0000_1111_2222,
                rip: 0x1234_5678,
                rflags: 0x246,
            },
            ..VpState::default()
        };
        s.sregs.cs = Segment::flat(0x10, true, true, 0);
        s.sregs.ds = Segment::flat(0x18, false, false, 3);
        s.sregs.es = Segment::real_mode(0xb800, false);
        s.sregs.ss = Segment::flat(0x18, false, false, 0);
        s.sregs.fs = Segment {
            base: 0x7fff_0000_1000,
            ..Segment::flat(0x2b, false, false, 3)
        };
        s.sregs.gs = Segment {
            unusable: true,
            present: false,
            ..Segment::default()
        };
        s.sregs.tr = Segment {
            base: 0xffff_8000_0000_3000,
            limit: 0x67,
            selector: 0x40,
            type_: 11,
            present: true,
            ..Segment::default()
        };
        s.sregs.ldt = Segment {
            limit: 0xffff,
            type_: 2,
            present: true,
            ..Segment::default()
        };
        s.sregs.gdt = TableRegister {
            base: 0xffff_8000_0000_1000,
            limit: 0x7f,
        };
        s.sregs.idt = TableRegister {
            base: 0xffff_8000_0000_2000,
            limit: 0xfff,
        };
        s.sregs.cr0 = 0x8005_0033;
        s.sregs.cr2 = 0xdead_b000;
        s.sregs.cr3 = 0x1000;
        s.sregs.cr4 = 0x6a0;
        s.sregs.cr8 = 5;
        s.sregs.efer = 0xd01;
        s.sregs.apic_base = 0xfee0_0900;
        s.fpu.fcw = 0x27f;
        s.fpu.fsw = 0x3800;
        s.fpu.ftw = 0x81;
        s.fpu.fop = 0x7ff;
        s.fpu.fip = 0xffff_8000_1234_5678;
        s.fpu.fdp = 0x0000_7fff_8765_4320;
        s.fpu.mxcsr = 0x1fa0;
        for (i, st) in s.fpu.st.iter_mut().enumerate() {
            for (j, b) in st.iter_mut().take(10).enumerate() {
                *b = (i * 16 + j) as u8 | 0x80;
            }
        }
        for (i, x) in s.fpu.xmm.iter_mut().enumerate() {
            for (j, b) in x.iter_mut().enumerate() {
                *b = (i * 16 + j) as u8;
            }
        }
        s.xcr0 = 7;
        s.msrs = MSR_REGISTERS
            .iter()
            .enumerate()
            .map(|(i, (index, _))| Msr {
                index: *index,
                value: 0x1000 + i as u64,
            })
            .collect();
        s.lapic = (0..LAPIC_STATE_SIZE).map(|i| (i * 7) as u8).collect();
        s.activity = ActivityState::Halted;
        s
    }

    fn round_trip(s: &VpState) -> VpState {
        let (mut main, opt) = registers_from_state(s);
        assert_eq!(opt.names, OPTIONAL_STATE_REGISTERS.to_vec());
        main.extend(opt);
        state_from_registers(&main, s.lapic.clone())
    }

    #[test]
    fn whole_state_round_trips() {
        let s = sample_state();
        assert_eq!(round_trip(&s), s);
        let (main, _) = registers_from_state(&s);
        assert_eq!(
            main.names,
            state_register_names(),
            "written in the order read"
        );
    }

    #[test]
    fn pending_events_round_trip() {
        let mut s = sample_state();
        let cases = [
            PendingEvents {
                exception: Some(PendingException {
                    vector: 14,
                    error_code: Some(6),
                    injected: true,
                }),
                interrupt_shadow: true,
                ..Default::default()
            },
            PendingEvents {
                exception: Some(PendingException {
                    vector: 13,
                    error_code: Some(0x18),
                    injected: false,
                }),
                nmi_masked: true,
                ..Default::default()
            },
            PendingEvents {
                interrupt: Some(0x30),
                ..Default::default()
            },
            PendingEvents {
                nmi_pending: true,
                ..Default::default()
            },
            PendingEvents {
                exception: Some(PendingException {
                    vector: 6,
                    error_code: None,
                    injected: true,
                }),
                ..Default::default()
            },
        ];
        for e in cases {
            s.events = e;
            assert_eq!(round_trip(&s).events, e);
        }
        for a in [
            ActivityState::Running,
            ActivityState::Halted,
            ActivityState::WaitForSipi,
        ] {
            s.activity = a;
            assert_eq!(round_trip(&s).activity, a);
        }
    }

    #[test]
    fn segment_attributes_pack_like_whp() {
        // A 64-bit ring-0 code segment: type 0xb, S, P, L, G = 0xa09b.
        let cs = Segment::flat(0x8, true, true, 0);
        assert_eq!(segment_attributes(&cs), 0xa09b);
        // A flat ring-3 data segment: type 3, S, DPL 3, P, D/B, G = 0xc0f3.
        assert_eq!(
            segment_attributes(&Segment::flat(0x23, false, false, 3)),
            0xc0f3
        );
        // Real-mode data: type 3, S, P = 0x93.
        assert_eq!(segment_attributes(&Segment::real_mode(0, false)), 0x93);
        let v = segment_value(&cs);
        assert_eq!(v.high >> 48, 0xa09b);
        assert_eq!((v.high >> 32) as u16, 0x8);
        assert_eq!(v.high as u32, 0xffff_ffff);
        assert_eq!(segment_from_value(v), cs);
        // An unusable segment is written not present and comes back unusable.
        let null = Segment {
            unusable: true,
            present: true,
            ..Segment::flat(0, false, false, 0)
        };
        let back = segment_from_value(segment_value(&null));
        assert!(back.unusable && !back.present);
    }

    #[test]
    fn table_register_layout() {
        let t = TableRegister {
            base: 0x1122_3344_5566_7788,
            limit: 0xabcd,
        };
        let v = table_value(&t);
        let b = v.to_bytes();
        assert_eq!(&b[..6], &[0; 6], "padding");
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), 0xabcd);
        assert_eq!(u64::from_le_bytes(b[8..].try_into().unwrap()), t.base);
        assert_eq!(table_from_value(v), t);
    }

    #[test]
    fn fpu_control_layout() {
        let s = sample_state();
        let (l, _) = registers_from_state(&s);
        let b = l.get(RegisterName::FP_CONTROL_STATUS).unwrap().to_bytes();
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x27f, "FpControl");
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0x3800, "FpStatus");
        assert_eq!(b[4], 0x81, "FpTag");
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), 0x7ff, "LastFpOp");
        let x = l.get(RegisterName::XMM_CONTROL_STATUS).unwrap().to_bytes();
        assert_eq!(u32::from_le_bytes(x[8..12].try_into().unwrap()), 0x1fa0);
        assert_eq!(u32::from_le_bytes(x[12..].try_into().unwrap()), 0xffff);
        // ST registers carry only the 80-bit value.
        let st = l.get(RegisterName::fp(3)).unwrap().to_bytes();
        assert_eq!(&st[10..], &[0; 6]);
    }

    #[test]
    fn pending_interruption_bits() {
        let p = PendingInterruption::exception(14, Some(0x6));
        assert_eq!(p.to_value().low, 1 | 3 << 1 | 1 << 4 | 14 << 16 | 6 << 32);
        assert_eq!(PendingInterruption::from_value(p.to_value()), p);
        let i = PendingInterruption::interrupt(0x20);
        assert_eq!(i.to_value().low, 1 | 0x20 << 16);
        assert_eq!(
            PendingInterruption::from_value(RegisterValue::default()),
            PendingInterruption::default()
        );
        assert_eq!(deliverability_value(false, true).low, 2);
        assert_eq!(interrupt_state_value(true, true).low, 3);
    }

    #[test]
    fn unknown_msrs_are_dropped_and_missing_registers_default() {
        let mut s = sample_state();
        s.msrs.push(Msr {
            index: 0x8b,
            value: 1,
        });
        let back = round_trip(&s);
        assert!(back.msr(0x8b).is_none());
        let empty = state_from_registers(&RegisterList::new(), Vec::new());
        assert_eq!(empty.xcr0, 1);
        assert_eq!(empty.activity, ActivityState::Running);
    }

    #[test]
    fn lapic_page_prefix() {
        let mut page = vec![0xeeu8; APIC_PAGE_SIZE];
        let lapic: Vec<u8> = (0..LAPIC_STATE_SIZE).map(|i| i as u8).collect();
        assert!(lapic_into_page(&lapic, &mut page));
        assert_eq!(lapic_from_page(&page), lapic);
        assert_eq!(page[LAPIC_STATE_SIZE], 0xee, "registers past 0x400 kept");
        assert!(!lapic_into_page(&lapic[..10], &mut page));
        assert!(lapic_from_page(&page[..10]).is_empty());
    }

    #[test]
    fn apic_page_reset() {
        let mut page = vec![0x5au8; APIC_PAGE_SIZE];
        page[0x30..0x34].copy_from_slice(&0x0005_0014u32.to_le_bytes());
        reset_apic_page(&mut page, 3);
        let reg = |off: usize| u32::from_le_bytes(page[off..off + 4].try_into().unwrap());
        assert_eq!(reg(0x20), 3 << 24);
        assert_eq!(reg(0x30), 0x0005_0014, "version kept");
        assert_eq!(reg(0x80), 0, "TPR");
        assert_eq!(reg(0xe0), 0xffff_ffff);
        assert_eq!(reg(0xf0), 0xff);
        assert_eq!(reg(0x350), 1 << 16, "LINT0 masked");
        assert_eq!(reg(0x200), 0, "IRR clear");
        assert_eq!(page[0x24], 0, "padding cleared");
        let mut short = vec![1u8; 16];
        reset_apic_page(&mut short, 0);
        assert_eq!(short, vec![1u8; 16]);
    }

    #[test]
    fn power_on_states() {
        let bsp = power_on_state(0);
        assert_eq!(bsp.regs.rip, 0xfff0);
        assert_eq!(bsp.sregs.cs.base, 0xffff_0000);
        assert_eq!(bsp.activity, ActivityState::Running);
        let ap = power_on_state(1);
        assert_eq!(ap.activity, ActivityState::WaitForSipi);
        assert!(ap.msr(0x10).is_none(), "the TSC is not reset");
        assert_eq!(round_trip(&ap).sregs, ap.sregs);
    }
}
