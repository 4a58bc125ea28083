//! WHP exit contexts as plain Rust data.
//!
//! `WHvRunVirtualProcessor` fills a 224-byte `WHV_RUN_VP_EXIT_CONTEXT`. [`ExitContextBuffer`]
//! is that buffer; [`RunExit::parse`] reads the fields by their documented offsets, so the
//! decoding is the same code on every host and is unit-tested here.

use hv::Segment;

use crate::regs::segment_from_parts;

/// Size of `WHV_RUN_VP_EXIT_CONTEXT` on x64.
pub const EXIT_CONTEXT_SIZE: usize = 224;

/// Storage for one `WHV_RUN_VP_EXIT_CONTEXT` (aligned like the C structure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct ExitContextBuffer(pub [u8; EXIT_CONTEXT_SIZE]);

impl Default for ExitContextBuffer {
    fn default() -> Self {
        Self([0; EXIT_CONTEXT_SIZE])
    }
}

/// `WHV_RUN_VP_EXIT_REASON` values.
pub mod reason {
    /// Access to unmapped or protected guest memory.
    pub const MEMORY_ACCESS: i32 = 0x1;
    /// IN/OUT/INS/OUTS.
    pub const IO_PORT_ACCESS: i32 = 0x2;
    /// The guest triple-faulted.
    pub const UNRECOVERABLE_EXCEPTION: i32 = 0x4;
    /// Register state the hypervisor refuses.
    pub const INVALID_VP_REGISTER_VALUE: i32 = 0x5;
    /// A feature WHP does not virtualize.
    pub const UNSUPPORTED_FEATURE: i32 = 0x6;
    /// The requested interrupt window opened.
    pub const INTERRUPT_WINDOW: i32 = 0x7;
    /// HLT (older hosts only; newer ones halt inside the hypervisor).
    pub const HALT: i32 = 0x8;
    /// EOI of a level-triggered vector.
    pub const APIC_EOI: i32 = 0x9;
    /// RDMSR/WRMSR of an MSR the hypervisor does not handle.
    pub const MSR_ACCESS: i32 = 0x1000;
    /// CPUID of a leaf in the exit list.
    pub const CPUID: i32 = 0x1001;
    /// An exception in the exit bitmap.
    pub const EXCEPTION: i32 = 0x1002;
    /// An INIT or SIPI sent through the APIC (when trapped).
    pub const APIC_INIT_SIPI_TRAP: i32 = 0x1006;
    /// `WHvCancelRunVirtualProcessor`.
    pub const CANCELED: i32 = 0x2001;
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn segment_at(b: &[u8], off: usize) -> Segment {
    segment_from_parts(
        u64_at(b, off),
        u32_at(b, off + 8),
        u16_at(b, off + 12),
        u16_at(b, off + 14),
    )
}

/// `WHV_X64_VP_EXECUTION_STATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecutionState {
    /// Current privilege level.
    pub cpl: u8,
    /// CR0.PE.
    pub cr0_pe: bool,
    /// CR0.AM.
    pub cr0_am: bool,
    /// EFER.LMA.
    pub efer_lma: bool,
    /// Debug registers are active.
    pub debug_active: bool,
    /// An event is being injected (the pending-interruption register is in use).
    pub interruption_pending: bool,
    /// Interrupts are blocked for one instruction (STI, MOV SS).
    pub interrupt_shadow: bool,
}

impl ExecutionState {
    /// Decodes the 16-bit field.
    pub fn from_bits(v: u16) -> Self {
        Self {
            cpl: (v & 3) as u8,
            cr0_pe: v & (1 << 2) != 0,
            cr0_am: v & (1 << 3) != 0,
            efer_lma: v & (1 << 4) != 0,
            debug_active: v & (1 << 5) != 0,
            interruption_pending: v & (1 << 6) != 0,
            interrupt_shadow: v & (1 << 12) != 0,
        }
    }
}

/// `WHV_VP_EXIT_CONTEXT`: the processor state every exit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VpExitContext {
    /// Execution state.
    pub execution_state: ExecutionState,
    /// Length of the instruction that exited (0 when not known).
    pub instruction_length: u8,
    /// CR8 (task priority).
    pub cr8: u8,
    /// Code segment.
    pub cs: Segment,
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
}

/// Read, write or instruction fetch (`WHV_MEMORY_ACCESS_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryAccessType {
    /// Data read.
    #[default]
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Execute,
}

/// `WHV_MEMORY_ACCESS_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryAccessInfo {
    /// The kind of access.
    pub access: MemoryAccessType,
    /// The address is not mapped at all (MMIO), rather than mapped without this permission.
    pub gpa_unmapped: bool,
    /// [`MemoryAccessContext::gva`] is valid.
    pub gva_valid: bool,
}

impl MemoryAccessInfo {
    /// Decodes the 32-bit field.
    pub fn from_bits(v: u32) -> Self {
        Self {
            access: match v & 3 {
                1 => MemoryAccessType::Write,
                2 => MemoryAccessType::Execute,
                _ => MemoryAccessType::Read,
            },
            gpa_unmapped: v & (1 << 2) != 0,
            gva_valid: v & (1 << 3) != 0,
        }
    }
}

/// `WHV_MEMORY_ACCESS_CONTEXT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryAccessContext {
    /// Number of valid bytes in [`MemoryAccessContext::instruction_bytes`].
    pub instruction_byte_count: u8,
    /// The first bytes of the instruction.
    pub instruction_bytes: [u8; 16],
    /// Access details.
    pub access_info: MemoryAccessInfo,
    /// Guest physical address accessed.
    pub gpa: u64,
    /// Guest virtual address accessed (when [`MemoryAccessInfo::gva_valid`]).
    pub gva: u64,
}

impl MemoryAccessContext {
    /// The valid instruction bytes.
    pub fn instruction(&self) -> &[u8] {
        &self.instruction_bytes[..usize::from(self.instruction_byte_count).min(16)]
    }
}

/// `WHV_X64_IO_PORT_ACCESS_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoPortAccessInfo {
    /// OUT/OUTS (else IN/INS).
    pub is_write: bool,
    /// Bytes per access: 1, 2 or 4.
    pub access_size: u8,
    /// INS/OUTS.
    pub string_op: bool,
    /// REP prefix.
    pub rep_prefix: bool,
}

impl IoPortAccessInfo {
    /// Decodes the 32-bit field.
    pub fn from_bits(v: u32) -> Self {
        Self {
            is_write: v & 1 != 0,
            access_size: ((v >> 1) & 7) as u8,
            string_op: v & (1 << 4) != 0,
            rep_prefix: v & (1 << 5) != 0,
        }
    }
}

/// `WHV_X64_IO_PORT_ACCESS_CONTEXT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoPortAccessContext {
    /// Number of valid bytes in [`IoPortAccessContext::instruction_bytes`].
    pub instruction_byte_count: u8,
    /// The first bytes of the instruction.
    pub instruction_bytes: [u8; 16],
    /// Access details.
    pub access_info: IoPortAccessInfo,
    /// Port number.
    pub port: u16,
    /// RAX at the exit.
    pub rax: u64,
    /// RCX at the exit.
    pub rcx: u64,
    /// RSI at the exit.
    pub rsi: u64,
    /// RDI at the exit.
    pub rdi: u64,
    /// DS.
    pub ds: Segment,
    /// ES.
    pub es: Segment,
}

impl IoPortAccessContext {
    /// The valid instruction bytes.
    pub fn instruction(&self) -> &[u8] {
        &self.instruction_bytes[..usize::from(self.instruction_byte_count).min(16)]
    }
}

/// `WHV_X64_MSR_ACCESS_CONTEXT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsrAccessContext {
    /// WRMSR (else RDMSR).
    pub is_write: bool,
    /// MSR number (ECX).
    pub msr: u32,
    /// RAX at the exit.
    pub rax: u64,
    /// RDX at the exit.
    pub rdx: u64,
}

/// `WHV_X64_CPUID_ACCESS_CONTEXT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidAccessContext {
    /// RAX (leaf).
    pub rax: u64,
    /// RCX (subleaf).
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RBX.
    pub rbx: u64,
    /// What the hypervisor would return: EAX, EBX, ECX, EDX.
    pub default_result: [u32; 4],
}

/// What a run stopped on, with the data for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Memory access outside mapped RAM or against a slot's permissions.
    MemoryAccess(MemoryAccessContext),
    /// Port I/O.
    IoPortAccess(IoPortAccessContext),
    /// Triple fault.
    UnrecoverableException,
    /// The hypervisor refused the register state.
    InvalidVpRegisterValue,
    /// Unsupported feature (`FeatureCode`, `FeatureParameter`).
    UnsupportedFeature(u32, u64),
    /// The interrupt window requested through the deliverability register opened
    /// (`WHV_X64_PENDING_INTERRUPTION_TYPE` of what is deliverable).
    InterruptWindow(u32),
    /// HLT.
    Halt,
    /// EOI of a level-triggered vector.
    ApicEoi(u8),
    /// RDMSR/WRMSR.
    MsrAccess(MsrAccessContext),
    /// CPUID.
    Cpuid(CpuidAccessContext),
    /// INIT/SIPI trap with the ICR value.
    ApicInitSipi(u64),
    /// An exception exit (vector, error code if any).
    Exception(u8, Option<u32>),
    /// Canceled by `WHvCancelRunVirtualProcessor`.
    Canceled,
    /// No exit (a run that returned without reason).
    None,
    /// A reason this backend does not know.
    Unknown(i32),
}

/// One decoded exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunExit {
    /// The raw exit reason.
    pub reason: i32,
    /// Processor state at the exit.
    pub vp: VpExitContext,
    /// Reason-specific data.
    pub kind: ExitKind,
}

/// Offset of the reason-specific union.
const UNION: usize = 48;

impl RunExit {
    /// Decodes a `WHV_RUN_VP_EXIT_CONTEXT`.
    pub fn parse(buf: &ExitContextBuffer) -> Self {
        let b = &buf.0[..];
        let reason = u32_at(b, 0) as i32;
        let flags = b[10];
        let vp = VpExitContext {
            execution_state: ExecutionState::from_bits(u16_at(b, 8)),
            instruction_length: flags & 0xf,
            cr8: flags >> 4,
            cs: segment_at(b, 16),
            rip: u64_at(b, 32),
            rflags: u64_at(b, 40),
        };
        let u = &b[UNION..];
        let mut insn = [0u8; 16];
        insn.copy_from_slice(&u[4..20]);
        let kind = match reason {
            reason::MEMORY_ACCESS => ExitKind::MemoryAccess(MemoryAccessContext {
                instruction_byte_count: u[0],
                instruction_bytes: insn,
                access_info: MemoryAccessInfo::from_bits(u32_at(u, 20)),
                gpa: u64_at(u, 24),
                gva: u64_at(u, 32),
            }),
            reason::IO_PORT_ACCESS => ExitKind::IoPortAccess(IoPortAccessContext {
                instruction_byte_count: u[0],
                instruction_bytes: insn,
                access_info: IoPortAccessInfo::from_bits(u32_at(u, 20)),
                port: u16_at(u, 24),
                rax: u64_at(u, 32),
                rcx: u64_at(u, 40),
                rsi: u64_at(u, 48),
                rdi: u64_at(u, 56),
                ds: segment_at(u, 64),
                es: segment_at(u, 80),
            }),
            reason::UNRECOVERABLE_EXCEPTION => ExitKind::UnrecoverableException,
            reason::INVALID_VP_REGISTER_VALUE => ExitKind::InvalidVpRegisterValue,
            reason::UNSUPPORTED_FEATURE => ExitKind::UnsupportedFeature(u32_at(u, 0), u64_at(u, 8)),
            reason::INTERRUPT_WINDOW => ExitKind::InterruptWindow(u32_at(u, 0)),
            reason::HALT => ExitKind::Halt,
            reason::APIC_EOI => ExitKind::ApicEoi(u32_at(u, 0) as u8),
            reason::MSR_ACCESS => ExitKind::MsrAccess(MsrAccessContext {
                is_write: u32_at(u, 0) & 1 != 0,
                msr: u32_at(u, 4),
                rax: u64_at(u, 8),
                rdx: u64_at(u, 16),
            }),
            reason::CPUID => ExitKind::Cpuid(CpuidAccessContext {
                rax: u64_at(u, 0),
                rcx: u64_at(u, 8),
                rdx: u64_at(u, 16),
                rbx: u64_at(u, 24),
                default_result: [
                    u64_at(u, 32) as u32,
                    u64_at(u, 56) as u32,
                    u64_at(u, 40) as u32,
                    u64_at(u, 48) as u32,
                ],
            }),
            reason::EXCEPTION => {
                let info = u32_at(u, 20);
                ExitKind::Exception(u[24], (info & 1 != 0).then_some(u32_at(u, 28)))
            }
            reason::APIC_INIT_SIPI_TRAP => ExitKind::ApicInitSipi(u64_at(u, 0)),
            reason::CANCELED => ExitKind::Canceled,
            0 => ExitKind::None,
            other => ExitKind::Unknown(other),
        };
        Self { reason, vp, kind }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::regs::segment_value;

    /// Writes little-endian `v` into `b` at `off`.
    pub(crate) fn put(b: &mut [u8], off: usize, v: &[u8]) {
        b[off..off + v.len()].copy_from_slice(v);
    }

    /// An exit buffer with the common VP context filled in.
    pub(crate) fn buffer(
        reason: i32,
        cs: &Segment,
        rip: u64,
        rflags: u64,
        len: u8,
    ) -> ExitContextBuffer {
        let mut buf = ExitContextBuffer::default();
        let b = &mut buf.0;
        put(b, 0, &reason.to_le_bytes());
        put(b, 8, &(1u16 << 12 | 1 << 2 | 3).to_le_bytes());
        b[10] = len | 0x50;
        put(b, 16, &segment_value(cs).to_bytes());
        put(b, 32, &rip.to_le_bytes());
        put(b, 40, &rflags.to_le_bytes());
        buf
    }

    #[test]
    fn common_context() {
        let cs = Segment::flat(0x10, true, true, 0);
        let e = RunExit::parse(&buffer(reason::HALT, &cs, 0x1000, 0x202, 1));
        assert_eq!(e.kind, ExitKind::Halt);
        assert_eq!(e.vp.rip, 0x1000);
        assert_eq!(e.vp.rflags, 0x202);
        assert_eq!(e.vp.instruction_length, 1);
        assert_eq!(e.vp.cr8, 5);
        assert_eq!(e.vp.cs, cs);
        let es = e.vp.execution_state;
        assert_eq!(es.cpl, 3);
        assert!(es.cr0_pe && es.interrupt_shadow && !es.interruption_pending && !es.efer_lma);
    }

    #[test]
    fn memory_access_context() {
        let mut buf = buffer(reason::MEMORY_ACCESS, &Segment::real_mode(0, true), 0, 2, 0);
        let u = &mut buf.0[UNION..];
        u[0] = 3;
        put(u, 4, &[0x89, 0x07, 0x90]);
        put(u, 20, &(1u32 | 1 << 2 | 1 << 3).to_le_bytes());
        put(u, 24, &0xfee0_0030u64.to_le_bytes());
        put(u, 32, &0xffff_f000_0000_0030u64.to_le_bytes());
        let ExitKind::MemoryAccess(m) = RunExit::parse(&buf).kind else {
            panic!("not a memory access");
        };
        assert_eq!(m.instruction(), &[0x89, 0x07, 0x90]);
        assert_eq!(m.access_info.access, MemoryAccessType::Write);
        assert!(m.access_info.gpa_unmapped && m.access_info.gva_valid);
        assert_eq!(m.gpa, 0xfee0_0030);
        assert_eq!(m.gva, 0xffff_f000_0000_0030);
    }

    #[test]
    fn io_port_context() {
        let mut buf = buffer(
            reason::IO_PORT_ACCESS,
            &Segment::real_mode(0, true),
            0,
            2,
            2,
        );
        let u = &mut buf.0[UNION..];
        u[0] = 2;
        put(u, 4, &[0xf3, 0x6e]);
        put(u, 20, &(1u32 | 1 << 1 | 1 << 4 | 1 << 5).to_le_bytes());
        put(u, 24, &0x3f8u16.to_le_bytes());
        for (i, v) in [0xa1u64, 0xc1, 0x51, 0xd1].iter().enumerate() {
            put(u, 32 + 8 * i, &v.to_le_bytes());
        }
        let ds = Segment::real_mode(0x1234, false);
        let es = Segment::real_mode(0x5678, false);
        put(u, 64, &segment_value(&ds).to_bytes());
        put(u, 80, &segment_value(&es).to_bytes());
        let ExitKind::IoPortAccess(io) = RunExit::parse(&buf).kind else {
            panic!("not port I/O");
        };
        assert_eq!(
            io.access_info,
            IoPortAccessInfo {
                is_write: true,
                access_size: 1,
                string_op: true,
                rep_prefix: true
            }
        );
        assert_eq!(io.port, 0x3f8);
        assert_eq!((io.rax, io.rcx, io.rsi, io.rdi), (0xa1, 0xc1, 0x51, 0xd1));
        assert_eq!((io.ds, io.es), (ds, es));
        assert_eq!(io.instruction(), &[0xf3, 0x6e]);
    }

    #[test]
    fn other_contexts() {
        let cs = Segment::real_mode(0, true);
        let mut buf = buffer(reason::MSR_ACCESS, &cs, 0, 2, 2);
        put(&mut buf.0[UNION..], 0, &1u32.to_le_bytes());
        put(&mut buf.0[UNION..], 4, &0x8bu32.to_le_bytes());
        put(&mut buf.0[UNION..], 8, &5u64.to_le_bytes());
        put(&mut buf.0[UNION..], 16, &6u64.to_le_bytes());
        assert_eq!(
            RunExit::parse(&buf).kind,
            ExitKind::MsrAccess(MsrAccessContext {
                is_write: true,
                msr: 0x8b,
                rax: 5,
                rdx: 6
            })
        );
        let mut buf = buffer(reason::CPUID, &cs, 0, 2, 2);
        for (i, v) in [1u64, 0, 0, 0, 0xa, 0xc, 0xd, 0xb].iter().enumerate() {
            put(&mut buf.0[UNION..], 8 * i, &v.to_le_bytes());
        }
        let ExitKind::Cpuid(c) = RunExit::parse(&buf).kind else {
            panic!("not cpuid");
        };
        assert_eq!(c.rax, 1);
        assert_eq!(c.default_result, [0xa, 0xb, 0xc, 0xd]);
        let mut buf = buffer(reason::APIC_EOI, &cs, 0, 2, 0);
        put(&mut buf.0[UNION..], 0, &0x31u32.to_le_bytes());
        assert_eq!(RunExit::parse(&buf).kind, ExitKind::ApicEoi(0x31));
        let mut buf = buffer(reason::INTERRUPT_WINDOW, &cs, 0, 2, 0);
        put(&mut buf.0[UNION..], 0, &0u32.to_le_bytes());
        assert_eq!(RunExit::parse(&buf).kind, ExitKind::InterruptWindow(0));
        for (r, k) in [
            (reason::CANCELED, ExitKind::Canceled),
            (
                reason::UNRECOVERABLE_EXCEPTION,
                ExitKind::UnrecoverableException,
            ),
            (0x7777, ExitKind::Unknown(0x7777)),
        ] {
            assert_eq!(RunExit::parse(&buffer(r, &cs, 0, 2, 0)).kind, k);
        }
    }
}
