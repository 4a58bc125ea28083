//! Completing MMIO and port I/O exits.
//!
//! WHP stops on an instruction it cannot finish (an access to unmapped or read-only guest
//! memory, port I/O) and leaves it to user space. Plain IN/OUT is finished straight from the
//! exit context ([`complete_port_io_fast`]). Everything else runs the one instruction through
//! [`x86emu`] against the processor's registers ([`EMULATION_REGISTERS`]) and an
//! [`ExitBus`]; the result is the list of registers to write back and, when the instruction
//! faulted (say a page fault halfway through a `rep movs`), the exception to inject.

use hv::CpuIo;
use x86emu::state::flags;
use x86emu::{Cpu, CpuState, Fault};

use crate::exit::{IoPortAccessContext, MemoryAccessContext, VpExitContext};
use crate::memory::ExitBus;
use crate::regs::{
    interrupt_state_value, segment_from_value, segment_value, table_from_value, table_value,
    PendingInterruption, RegisterList, RegisterName, RegisterValue,
};

/// Registers read before emulating an instruction.
pub const EMULATION_REGISTERS: [RegisterName; 34] = [
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
    RegisterName::EFER,
    RegisterName::INTERRUPT_STATE,
];

/// General registers in x86emu's order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15): the
/// first sixteen of [`EMULATION_REGISTERS`].
const GPR_NAMES: &[RegisterName] = EMULATION_REGISTERS.split_at(16).0;

/// Segment registers in x86emu's order (ES, CS, SS, DS, FS, GS), after RIP and RFLAGS in
/// [`EMULATION_REGISTERS`].
const SEG_NAMES: &[RegisterName] = EMULATION_REGISTERS.split_at(18).1.split_at(6).0;

/// What finishing an exit changes in the processor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    /// Registers to write back (only those that changed, the pending exception included).
    pub registers: RegisterList,
    /// The exception the instruction raised, injected through the registers above.
    pub exception: Option<Fault>,
}

/// The instruction emulator of one virtual processor (an [`x86emu::Cpu`] reused across
/// exits).
pub struct Emulator {
    cpu: Cpu,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").finish_non_exhaustive()
    }
}

impl Emulator {
    /// An emulator for processor `apic_id` of `cpu_count` (what CPUID reports, should the
    /// instruction be one).
    pub fn new(apic_id: u32, cpu_count: u32) -> Self {
        let mut cpu = Cpu::new(apic_id == 0);
        cpu.apic_id = apic_id;
        cpu.cpu_count = cpu_count;
        Self { cpu }
    }

    /// Runs the instruction at CS:RIP once against `bus`, starting from `regs` (a read of
    /// [`EMULATION_REGISTERS`]). `prefetched` are the instruction bytes from the exit context.
    pub fn emulate(
        &mut self,
        regs: &RegisterList,
        prefetched: &[u8],
        bus: &mut ExitBus<'_>,
    ) -> Completion {
        let before = cpu_state_from_registers(regs);
        self.cpu.state = before.clone();
        self.cpu.flush_caches();
        let result = self.cpu.emulate_one(bus, prefetched);
        let after = &self.cpu.state;
        let mut out = changed_registers(&before, after);
        let exception = match result {
            Ok(()) => {
                // The instruction completed: an STI/MOV SS shadow it sat in is over.
                if before.interrupt_shadow {
                    out.push(
                        RegisterName::INTERRUPT_STATE,
                        interrupt_state_value(false, before.nmi_masked),
                    );
                }
                None
            }
            Err(f) => {
                tracing::debug!(
                    vp = self.cpu.apic_id,
                    vector = f.vector,
                    error = ?f.error,
                    rip = format_args!("{:#x}", before.rip),
                    "exit completion raised an exception; injecting it"
                );
                if let Some(cr2) = f.cr2 {
                    out.push(RegisterName::CR2, RegisterValue::from_u64(cr2));
                }
                out.push(
                    RegisterName::PENDING_INTERRUPTION,
                    PendingInterruption::exception(f.vector, f.error).to_value(),
                );
                Some(f)
            }
        };
        Completion {
            registers: out,
            exception,
        }
    }

    /// Completes a memory-access exit: the instruction's accesses outside RAM (and its
    /// writes to read-only slots) go to `io` as MMIO.
    pub fn complete_mmio(
        &mut self,
        access: &MemoryAccessContext,
        regs: &RegisterList,
        bus: &mut ExitBus<'_>,
    ) -> Completion {
        self.emulate(regs, access.instruction(), bus)
    }

    /// Completes a port I/O exit that [`complete_port_io_fast`] does not take (INS/OUTS with
    /// or without REP, or an instruction in an interrupt shadow).
    pub fn complete_port_io(
        &mut self,
        access: &IoPortAccessContext,
        regs: &RegisterList,
        bus: &mut ExitBus<'_>,
    ) -> Completion {
        self.emulate(regs, access.instruction(), bus)
    }
}

/// The emulator's processor state from a read of [`EMULATION_REGISTERS`].
pub fn cpu_state_from_registers(regs: &RegisterList) -> CpuState {
    let mut s = CpuState::power_on(true);
    for (i, n) in GPR_NAMES.iter().enumerate() {
        s.gpr[i] = regs.u64(*n);
    }
    s.rip = regs.u64(RegisterName::RIP);
    s.rflags = regs.u64(RegisterName::RFLAGS) | flags::FIXED;
    for (i, n) in SEG_NAMES.iter().enumerate() {
        s.seg[i] = segment_from_value(regs.get(*n).unwrap_or_default());
    }
    s.ldt = segment_from_value(regs.get(RegisterName::LDTR).unwrap_or_default());
    s.tr = segment_from_value(regs.get(RegisterName::TR).unwrap_or_default());
    s.idt = table_from_value(regs.get(RegisterName::IDTR).unwrap_or_default());
    s.gdt = table_from_value(regs.get(RegisterName::GDTR).unwrap_or_default());
    s.cr0 = regs.u64(RegisterName::CR0);
    s.cr2 = regs.u64(RegisterName::CR2);
    s.cr3 = regs.u64(RegisterName::CR3);
    s.cr4 = regs.u64(RegisterName::CR4);
    s.efer = regs.u64(RegisterName::EFER);
    let is = regs.u64(RegisterName::INTERRUPT_STATE);
    s.interrupt_shadow = is & 1 != 0;
    s.nmi_masked = is & 2 != 0;
    s.wait_for_sipi = false;
    s.halted = false;
    s
}

/// The registers that differ between `before` and `after`.
fn changed_registers(before: &CpuState, after: &CpuState) -> RegisterList {
    let mut out = RegisterList::new();
    for (i, n) in GPR_NAMES.iter().enumerate() {
        if before.gpr[i] != after.gpr[i] {
            out.push(*n, RegisterValue::from_u64(after.gpr[i]));
        }
    }
    if before.rip != after.rip {
        out.push(RegisterName::RIP, RegisterValue::from_u64(after.rip));
    }
    if before.rflags != after.rflags {
        out.push(RegisterName::RFLAGS, RegisterValue::from_u64(after.rflags));
    }
    for (i, n) in SEG_NAMES.iter().enumerate() {
        if before.seg[i] != after.seg[i] {
            out.push(*n, segment_value(&after.seg[i]));
        }
    }
    for (n, b, a) in [
        (RegisterName::LDTR, &before.ldt, &after.ldt),
        (RegisterName::TR, &before.tr, &after.tr),
    ] {
        if b != a {
            out.push(n, segment_value(a));
        }
    }
    for (n, b, a) in [
        (RegisterName::IDTR, &before.idt, &after.idt),
        (RegisterName::GDTR, &before.gdt, &after.gdt),
    ] {
        if b != a {
            out.push(n, table_value(a));
        }
    }
    for (n, b, a) in [
        (RegisterName::CR0, before.cr0, after.cr0),
        (RegisterName::CR2, before.cr2, after.cr2),
        (RegisterName::CR3, before.cr3, after.cr3),
        (RegisterName::CR4, before.cr4, after.cr4),
        (RegisterName::EFER, before.efer, after.efer),
    ] {
        if b != a {
            out.push(n, RegisterValue::from_u64(a));
        }
    }
    out
}

/// RIP after an instruction of `len` bytes at the exit, wrapped to the code size.
pub fn next_rip(vp: &VpExitContext) -> u64 {
    let next = vp.rip.wrapping_add(u64::from(vp.instruction_length));
    if vp.execution_state.efer_lma && vp.cs.l {
        next
    } else if vp.cs.db && vp.rflags & flags::VM == 0 && vp.execution_state.cr0_pe {
        next & 0xffff_ffff
    } else {
        next & 0xffff
    }
}

/// True when a port I/O exit needs the full register state and the emulator: string
/// instructions, an instruction in an interrupt shadow, or an unknown instruction length.
pub fn port_io_needs_emulation(vp: &VpExitContext, access: &IoPortAccessContext) -> bool {
    let size = access.access_info.access_size;
    access.access_info.string_op
        || vp.execution_state.interrupt_shadow
        || vp.instruction_length == 0
        || !matches!(size, 1 | 2 | 4)
}

/// Completes IN or OUT from the exit context alone: calls `io` and returns the registers to
/// write (RAX for IN, RIP past the instruction). The caller checked
/// [`port_io_needs_emulation`].
pub fn complete_port_io_fast(
    vp: &VpExitContext,
    access: &IoPortAccessContext,
    io: &dyn CpuIo,
    index: u32,
) -> RegisterList {
    let size = usize::from(access.access_info.access_size).clamp(1, 4);
    let mut out = RegisterList::new();
    if access.access_info.is_write {
        io.io_write(index, access.port, &access.rax.to_le_bytes()[..size]);
    } else {
        let mut b = [0xffu8; 4];
        io.io_read(index, access.port, &mut b[..size]);
        let v = u64::from(u32::from_le_bytes(b));
        let rax = match size {
            1 => (access.rax & !0xff) | (v & 0xff),
            2 => (access.rax & !0xffff) | (v & 0xffff),
            // A 32-bit destination is zero-extended.
            _ => v,
        };
        out.push(RegisterName::RAX, RegisterValue::from_u64(rax));
    }
    out.push(RegisterName::RIP, RegisterValue::from_u64(next_rip(vp)));
    out
}

#[cfg(test)]
mod tests;
