//! Architectural state of a virtual processor, in a backend-neutral layout.
//!
//! Enough to save and restore a processor: general registers, segments, control registers,
//! MSRs, x87/SSE, the local APIC register page and pending events.

/// General-purpose registers, instruction pointer and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Registers {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// A segment register with its hidden descriptor cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// Base address.
    pub base: u64,
    /// Limit in bytes (already scaled by granularity).
    pub limit: u32,
    /// Visible selector.
    pub selector: u16,
    /// Descriptor type (4 bits).
    pub type_: u8,
    /// Present.
    pub present: bool,
    /// Privilege level.
    pub dpl: u8,
    /// Default operation size (D/B).
    pub db: bool,
    /// Code/data (true) or system (false) descriptor.
    pub s: bool,
    /// 64-bit code segment.
    pub l: bool,
    /// Granularity (4 KiB units).
    pub g: bool,
    /// Available-for-software bit.
    pub avl: bool,
    /// The register holds no usable segment (null selector in protected mode).
    pub unusable: bool,
}

impl Segment {
    /// A real-mode segment: base = selector × 16, 64 KiB limit, read/write data
    /// (or execute/read code when `code`).
    pub fn real_mode(selector: u16, code: bool) -> Self {
        Self {
            base: u64::from(selector) << 4,
            limit: 0xffff,
            selector,
            type_: if code { 0xb } else { 0x3 },
            present: true,
            s: true,
            ..Self::default()
        }
    }
}

impl Segment {
    /// A flat 4 GiB segment as protected and long mode use: read/write data, or execute/read
    /// code (`long` makes it a 64-bit code segment), at privilege `dpl` with that RPL.
    pub fn flat(selector: u16, code: bool, long: bool, dpl: u8) -> Self {
        Self {
            base: 0,
            limit: 0xffff_ffff,
            selector: selector | u16::from(dpl & 3),
            type_: if code { 0xb } else { 0x3 },
            present: true,
            dpl: dpl & 3,
            db: !long,
            s: true,
            l: long,
            g: true,
            avl: false,
            unusable: false,
        }
    }
}

/// GDTR or IDTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableRegister {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u16,
}

/// Segment, descriptor-table and control registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct SpecialRegisters {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: TableRegister,
    pub idt: TableRegister,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
}

/// x87, MMX and SSE state in the layout of the FXSAVE image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpuState {
    /// FPU control word.
    pub fcw: u16,
    /// FPU status word.
    pub fsw: u16,
    /// Abridged tag word (one bit per register, 1 = valid).
    pub ftw: u8,
    /// Last opcode.
    pub fop: u16,
    /// Last instruction pointer.
    pub fip: u64,
    /// Last data pointer.
    pub fdp: u64,
    /// SSE control/status.
    pub mxcsr: u32,
    /// ST0..ST7 / MM0..MM7, 80 bits each in the low 10 bytes.
    pub st: [[u8; 16]; 8],
    /// XMM0..XMM15.
    pub xmm: [[u8; 16]; 16],
}

impl Default for FpuState {
    /// The power-on state (FNINIT control word, default MXCSR).
    fn default() -> Self {
        Self {
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            mxcsr: 0x1f80,
            st: [[0; 16]; 8],
            xmm: [[0; 16]; 16],
        }
    }
}

/// A model-specific register and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Msr {
    /// MSR number.
    pub index: u32,
    /// Value.
    pub value: u64,
}

/// An exception being delivered or waiting to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingException {
    /// Vector 0..31.
    pub vector: u8,
    /// Error code, for exceptions that push one.
    pub error_code: Option<u32>,
    /// Already injected (being delivered) rather than only pending.
    pub injected: bool,
}

/// Events between instructions: what is pending and what blocks delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingEvents {
    /// Exception in flight.
    pub exception: Option<PendingException>,
    /// External interrupt vector being injected.
    pub interrupt: Option<u8>,
    /// An NMI is pending.
    pub nmi_pending: bool,
    /// NMIs are blocked (inside an NMI handler).
    pub nmi_masked: bool,
    /// Interrupt shadow after STI or MOV SS.
    pub interrupt_shadow: bool,
}

/// Whether a processor executes, sleeps in HLT, or waits for a startup IPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivityState {
    /// Executing instructions.
    #[default]
    Running,
    /// Stopped in HLT until an interrupt.
    Halted,
    /// Application processor after INIT, waiting for SIPI.
    WaitForSipi,
}

/// Size of the local APIC register block kept in [`VpState::lapic`] (offsets 0x000..0x400).
pub const LAPIC_STATE_SIZE: usize = 1024;

/// Everything needed to save and restore one virtual processor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VpState {
    /// General registers.
    pub regs: Registers,
    /// Segment and control registers.
    pub sregs: SpecialRegisters,
    /// x87/SSE.
    pub fpu: FpuState,
    /// XCR0 (extended feature enable).
    pub xcr0: u64,
    /// MSRs the backend saves (EFER, SYSCALL/SYSENTER, FS/GS base, TSC, PAT, MTRRs...).
    pub msrs: Vec<Msr>,
    /// Local APIC registers as in the APIC MMIO page (offsets 0x000..0x400).
    pub lapic: Vec<u8>,
    /// Pending events.
    pub events: PendingEvents,
    /// Activity state.
    pub activity: ActivityState,
}

impl VpState {
    /// Value of MSR `index`, when the state holds it.
    pub fn msr(&self, index: u32) -> Option<u64> {
        self.msrs.iter().find(|m| m.index == index).map(|m| m.value)
    }

    /// Reads a 32-bit local APIC register at `offset` (e.g. 0x20 for the APIC ID).
    pub fn lapic_register(&self, offset: usize) -> Option<u32> {
        let bytes = self.lapic.get(offset..offset + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }
}
