//! Native blocks: blocks translated to host x86-64 code, and linked to each other.
//!
//! The generator here is plain safe Rust that produces bytes; a backend that can run host
//! code supplies the executable memory through [`NativeCode`]. Generated code follows one
//! calling convention: `extern "sysv64" fn(*mut NativeFrame)`, using only caller-saved
//! registers:
//! - `rdi` holds the frame, `rsi` the guest registers, `r8` the RAM entry table;
//! - guest registers live in memory and are loaded and stored around each instruction;
//! - an ALU instruction runs as the same host instruction, so its status flags are the host's.
//!   They are written to the frame (LAHF and SETO) only when something may look at them before
//!   the next instruction that sets them all: a flag reader, or any way out of the code.
//!   Shifts fix AF and OF, rotates CF and OF, up to the values the interpreter defines.
//! - a memory operand is looked up inline in the per-CPU RAM entries (the same ones the block
//!   engine uses) for the data view the code was made for; a miss leaves the code before the
//!   instruction, which then runs in the interpreter. A store checks the code tracker after
//!   writing and leaves the code when the page holds cached code.
//!
//! The code covers the whole block. An instruction without a native form leaves the code
//! before it (the interpreter runs it); the instruction after it is an entry point, reached
//! through the code's dispatch with the frame's `pos`.
//!
//! Blocks are chained: a way out to a constant guest address (a taken branch, a jump or call,
//! the end of the block) is a link slot: a `JMP rel32` that at first goes to the next
//! instruction, which leaves the code. Once the CPU has seen that exit and found native code
//! for the block at that address (for the same data view), it points the JMP at that code
//! (through [`NativeCode::patch`]); from then on the code jumps straight to the next block's
//! code while the frame's instruction allowance (`chain`) lasts. The CPU points every such JMP
//! back when its link stamp (code epoch and translations) changes.
//!
//! A RET goes on through the CPU's jump cache: entries map a RIP to the host code of the
//! block there, for one data view (by its number in the frame) and link stamp. A hit under
//! the frame's view and stamp jumps straight there; a miss leaves the code, and the CPU fills
//! the entry once it found native code for the block at that RIP.
//!
//! Code depends on the data view only through the segments its memory operands use (see
//! [`Compiled::segs`]), so code that never touches FS is not made again when FS moves.

use crate::alu::{Shift, AF, OF};
use crate::asm::*;
use crate::block::{AluOp, Fast, Gpr, MemOp};
use crate::cache::{Decoded, Flow, RamEntry};
use crate::mmu::DataView;
use iced_x86::ConditionCode;

/// What native code reads and writes besides guest registers and RAM. Its address is the
/// code's only argument.
#[repr(C)]
#[derive(Debug, Default)]
pub struct NativeFrame {
    /// Address of the 16 guest general registers.
    pub(crate) gpr: usize,
    /// Address of the RAM entry table.
    pub(crate) ram: usize,
    /// Guest status flags, in and out, in the form LAHF and SETO give them (see
    /// [`flags_to_frame`]): bits 8..15 as AH (SF, ZF, AF, PF, CF), bits 0..7 OF (0 or 1).
    pub(crate) flags: u64,
    /// Out: RIP where execution goes on.
    pub(crate) rip: u64,
    /// Out: instructions of the block completed.
    pub(crate) done: u64,
    /// Out: [`EXIT_RESUME`], [`EXIT_LEFT`] or [`EXIT_CODE_WRITE`].
    pub(crate) exit: u64,
    /// Out, with [`EXIT_CODE_WRITE`]: physical page written.
    pub(crate) note: u64,
    /// In: the CPU's link stamp (jump cache entries filled under another are not followed).
    pub(crate) stamp: u64,
    /// In/out: instructions that may still complete in blocks left through links. An entry at
    /// instruction `pos` adds `pos`; a link taken after `done` instructions subtracts `done`.
    pub(crate) chain: i64,
    /// Out, with [`EXIT_LEFT`]: 1 + the link slot of the way out taken (0: none).
    pub(crate) link: u64,
    /// Out, with [`EXIT_RESUME`]: RIP of the first instruction of the block the code left.
    pub(crate) start: u64,
    /// In, for the code's dispatch entry: the instruction to start at.
    pub(crate) pos: u64,
    /// In: address of the jump cache ([`JUMP_ENTRIES`] entries of four words: RIP, link
    /// stamp, view number, host code address).
    pub(crate) jumps: usize,
    /// In: the number of the current data view among the CPU's views (jump cache entries
    /// made under another are not followed).
    pub(crate) view: u64,
}

const F_GPR: i32 = std::mem::offset_of!(NativeFrame, gpr) as i32;
const F_RAM: i32 = std::mem::offset_of!(NativeFrame, ram) as i32;
const F_FLAGS: i32 = std::mem::offset_of!(NativeFrame, flags) as i32;
const F_RIP: i32 = std::mem::offset_of!(NativeFrame, rip) as i32;
const F_DONE: i32 = std::mem::offset_of!(NativeFrame, done) as i32;
const F_EXIT: i32 = std::mem::offset_of!(NativeFrame, exit) as i32;
const F_NOTE: i32 = std::mem::offset_of!(NativeFrame, note) as i32;
const F_STAMP: i32 = std::mem::offset_of!(NativeFrame, stamp) as i32;
const F_CHAIN: i32 = std::mem::offset_of!(NativeFrame, chain) as i32;
const F_LINK: i32 = std::mem::offset_of!(NativeFrame, link) as i32;
const F_START: i32 = std::mem::offset_of!(NativeFrame, start) as i32;
const F_POS: i32 = std::mem::offset_of!(NativeFrame, pos) as i32;
const F_JUMPS: i32 = std::mem::offset_of!(NativeFrame, jumps) as i32;
const F_VIEW: i32 = std::mem::offset_of!(NativeFrame, view) as i32;

/// The frame form of the status flags in `rflags` (see [`NativeFrame::flags`]).
pub(crate) fn flags_to_frame(rflags: u64) -> u64 {
    use crate::alu::{AF, CF, PF, SF, ZF};
    (((rflags & (SF | ZF | AF | PF | CF)) | 2) << 8) | u64::from(rflags & OF != 0)
}

/// The status flags (RFLAGS layout) of the frame form `f`.
pub(crate) fn flags_from_frame(f: u64) -> u64 {
    use crate::alu::{AF, CF, PF, SF, ZF};
    ((f >> 8) & (SF | ZF | AF | PF | CF)) | if f & 0xff != 0 { OF } else { 0 }
}

/// Entries of the jump cache (a power of two).
pub(crate) const JUMP_ENTRIES: usize = 4096;

/// The jump cache entry for `rip`.
pub(crate) fn jump_index(rip: u64) -> usize {
    ((rip ^ (rip >> 12)) as usize) & (JUMP_ENTRIES - 1)
}

/// The interpreter goes on with instruction `done` of the block starting at `start`, at `rip`.
pub(crate) const EXIT_RESUME: u64 = 0;
/// A branch left the block: execution goes on at `rip`.
pub(crate) const EXIT_LEFT: u64 = 1;
/// Instruction `done - 1` wrote to page `note`, which holds cached code.
pub(crate) const EXIT_CODE_WRITE: u64 = 2;
/// A RET left the block for `rip`, which the jump cache did not hold.
pub(crate) const EXIT_JUMP: u64 = 3;

/// Executable memory for native blocks, provided by a backend that can run host code.
pub trait NativeCode: Send {
    /// Copies `code` (made by this crate) to executable memory; its handle, or `None` when
    /// the memory is full.
    fn install(&mut self, code: &[u8]) -> Option<usize>;
    /// Forgets all installed code; earlier handles are no longer used.
    fn clear(&mut self);
    /// Runs the code at `handle` plus `offset` (an entry point the generator reported for
    /// that code) on `frame`.
    fn call(&mut self, handle: usize, offset: usize, frame: &mut NativeFrame);
    /// The host address of the code of `handle`, which linked code jumps to.
    fn address(&self, handle: usize) -> u64;
    /// Sets the displacement of the `JMP rel32` at host address `site` (a link slot of
    /// installed code, see [`crate::native`]) to `rel`; ignored when `site` is not one.
    fn patch(&mut self, site: u64, rel: i32);
}

/// A block's host code as made by [`compile`].
pub(crate) struct Compiled {
    pub(crate) code: Vec<u8>,
    /// Instructions (a bit each) the code can start at: the first with a native form, and each
    /// that follows one without.
    pub(crate) entries: u64,
    /// Offset of the dispatch entry, which starts at the frame's `pos`.
    pub(crate) dispatch: usize,
    /// Offsets of the link slots' `JMP rel32` in `code`, in slot order (numbered from the
    /// `first_link` given to [`compile`]).
    pub(crate) sites: Vec<usize>,
    /// Segments (a bit per index) the code's memory accesses go through: the code is good
    /// for every view that agrees with the one it was made for on these (and on the rest
    /// of the view but the segment bases and permissions).
    pub(crate) segs: u8,
}

/// Offsets in a [`RamEntry`] (`repr(C)`, 64 bytes).
const E_READ: i32 = std::mem::offset_of!(RamEntry, read) as i32;
const E_WRITE: i32 = std::mem::offset_of!(RamEntry, write) as i32;
const E_HOST: i32 = std::mem::offset_of!(RamEntry, host) as i32;
const E_PHYS: i32 = std::mem::offset_of!(RamEntry, phys) as i32;
const E_CODE: i32 = std::mem::offset_of!(RamEntry, code) as i32;

/// Near CALL, JMP and RET, which have no fast form but a native one.
#[derive(Clone, Copy)]
enum Branch {
    /// CALL to a constant target, pushing `size` bytes.
    Call { size: u8, target: u64 },
    /// RET without an immediate, popping `size` bytes.
    Ret { size: u8 },
    /// CALL (`call`, pushing `size` bytes) or JMP to the `size`-byte target in a register or
    /// memory.
    Indirect { call: bool, size: u8, src: Source },
}

/// Where an indirect branch reads its target.
#[derive(Clone, Copy)]
enum Source {
    Reg(Gpr),
    Mem(MemOp),
}

impl Branch {
    fn size(self) -> u8 {
        match self {
            Branch::Call { size, .. } | Branch::Ret { size } | Branch::Indirect { size, .. } => {
                size
            }
        }
    }

    /// True when it pushes or pops.
    fn uses_stack(self) -> bool {
        !matches!(self, Branch::Indirect { call: false, .. })
    }
}

/// The native CALL or RET form of `i` under `view`, if it has one: the operand size of the
/// code size, a target the interpreter would not fault on.
fn branch(i: &iced_x86::Instruction, view: &DataView) -> Option<Branch> {
    use iced_x86::Code as C;
    let long = view.cs_limit == u64::MAX;
    let indirect = |call: bool, size: u8| {
        let src = if i.op0_kind() == iced_x86::OpKind::Register {
            Source::Reg(Gpr::of(i.op0_register())?)
        } else {
            let m = MemOp::of(i, if long { 64 } else { 32 })?;
            view.direct(m.seg as usize, m.amask, false)
                .then_some(Source::Mem(m))?
        };
        Some(Branch::Indirect { call, size, src })
    };
    let b = match i.code() {
        C::Call_rm64 => indirect(true, 8)?,
        C::Call_rm32 => indirect(true, 4)?,
        C::Jmp_rm64 => indirect(false, 8)?,
        C::Jmp_rm32 => indirect(false, 4)?,
        C::Call_rel32_64 => Branch::Call {
            size: 8,
            target: i.near_branch_target(),
        },
        C::Call_rel32_32 => Branch::Call {
            size: 4,
            target: i.near_branch_target(),
        },
        C::Retnq => Branch::Ret { size: 8 },
        C::Retnd => Branch::Ret { size: 4 },
        _ => return None,
    };
    let target_ok = match b {
        Branch::Call { size: 8, target } => crate::mmu::canonical(target),
        Branch::Call { target, .. } => target <= view.cs_limit,
        // Checked as the code runs.
        Branch::Ret { .. } | Branch::Indirect { .. } => true,
    };
    let stack = !b.uses_stack() || view.direct(crate::state::seg::SS, view.stack_mask, true);
    (stack && target_ok && long == (b.size() == 8)).then_some(b)
}

/// One-operand MUL or DIV (`div`) of `size` bytes (4 or 8), which have no fast form but a
/// native one, by a register or memory.
#[derive(Clone, Copy)]
struct Wide {
    div: bool,
    size: u8,
    src: Source,
}

/// The native MUL or DIV form of `i` under `view`, if it has one.
fn wide(i: &iced_x86::Instruction, view: &DataView) -> Option<Wide> {
    use iced_x86::Code as C;
    let (div, size) = match i.code() {
        C::Mul_rm64 => (false, 8),
        C::Mul_rm32 => (false, 4),
        C::Div_rm64 => (true, 8),
        C::Div_rm32 => (true, 4),
        _ => return None,
    };
    let src = if i.op0_kind() == iced_x86::OpKind::Register {
        Source::Reg(Gpr::of(i.op0_register())?)
    } else {
        let bits = if view.cs_limit == u64::MAX { 64 } else { 32 };
        let m = MemOp::of(i, bits)?;
        view.direct(m.seg as usize, m.amask, false)
            .then_some(Source::Mem(m))?
    };
    Some(Wide { div, size, src })
}

/// True when `d` has a native form under `view`.
fn supported(d: &Decoded, view: &DataView) -> bool {
    let mem = |m: &MemOp, write: bool| view.direct(m.seg as usize, m.amask, write);
    match &d.fast {
        Fast::Generic => branch(&d.insn, view).is_some() || wide(&d.insn, view).is_some(),
        // By CL: 32- and 64-bit operands, where the host's CF is defined for every count.
        Fast::ShiftRCl { op, r } => r.size >= 4 && !rotate(*op),
        Fast::ImulRR { .. } => true,
        Fast::ImulRM { m, .. } => mem(m, false),
        Fast::ShiftRI { op, r, count } => {
            shift_count(*r, *count) == 0 || !matches!(op, Shift::Rcl | Shift::Rcr)
        }
        Fast::Load { m, .. } | Fast::AluRM { m, .. } | Fast::CmovRM { m, .. } => mem(m, false),
        Fast::StoreR { m, .. } | Fast::StoreI { m, .. } | Fast::IncDecM { m, .. } => mem(m, true),
        Fast::AluMR { op, m, .. } | Fast::AluMI { op, m, .. } => mem(m, writes_back(*op)),
        Fast::Push { .. } | Fast::Pop { .. } | Fast::PushI { .. } => {
            view.direct(crate::state::seg::SS, view.stack_mask, true)
        }
        _ => true,
    }
}

/// The masked count of a shift.
fn shift_count(r: Gpr, count: u8) -> u8 {
    count & if r.size == 8 { 0x3f } else { 0x1f }
}

/// ROL/ROR/RCL/RCR (which keep SF, ZF, AF and PF).
fn rotate(op: Shift) -> bool {
    matches!(op, Shift::Rol | Shift::Ror | Shift::Rcl | Shift::Rcr)
}

fn writes_back(op: AluOp) -> bool {
    !matches!(op, AluOp::Cmp | AluOp::Test)
}

fn reads_carry(op: AluOp) -> bool {
    matches!(op, AluOp::Adc | AluOp::Sbb)
}

/// How an instruction relates to the status flags and to the ways out of the code.
#[derive(Clone, Copy, Default)]
struct Props {
    /// Reads status flags (or keeps some of them).
    reads: bool,
    /// Writes all status flags.
    writes: bool,
    /// May write some of them (and keeps the rest).
    partial: bool,
    /// May leave the code before it runs (a RAM entry miss).
    exit_before: bool,
    /// May leave the code after it ran (a taken branch, a store to a code page).
    exit_after: bool,
}

fn props(d: &Decoded, view: &DataView) -> Props {
    let mut p = Props::default();
    match d.fast {
        Fast::Generic => match wide(&d.insn, view) {
            // DIV keeps the flags (the interpreter's choice for the undefined ones); MUL sets
            // them all.
            Some(w) => {
                p.reads = w.div;
                p.writes = !w.div;
                p.exit_before = true;
            }
            // Native CALL, JMP and RET (see `branch`).
            None => {
                p.exit_before = true;
                p.exit_after = true;
            }
        },
        Fast::ImulRR { .. } => p.writes = true,
        Fast::ImulRM { .. } => {
            p.writes = true;
            p.exit_before = true;
        }
        Fast::AluRR { op, .. } | Fast::AluRI { op, .. } => {
            p.reads = reads_carry(op);
            p.writes = true;
        }
        Fast::AluRM { op, .. } => {
            p.reads = reads_carry(op);
            p.writes = true;
            p.exit_before = true;
        }
        Fast::AluMR { op, .. } | Fast::AluMI { op, .. } => {
            p.reads = reads_carry(op);
            p.writes = true;
            p.exit_before = true;
            p.exit_after = writes_back(op);
        }
        Fast::IncDec { .. } => {
            p.reads = true;
            p.writes = true;
        }
        Fast::IncDecM { .. } => {
            p.reads = true;
            p.writes = true;
            p.exit_before = true;
            p.exit_after = true;
        }
        Fast::NegR { .. } => p.writes = true,
        Fast::ShiftRI { op, r, count } if shift_count(r, count) != 0 => {
            if rotate(op) {
                p.reads = true;
                p.partial = true;
            } else {
                p.writes = true;
            }
        }
        // A count of 0 keeps the flags.
        Fast::ShiftRCl { .. } => {
            p.reads = true;
            p.partial = true;
        }
        Fast::Load { .. } | Fast::Pop { .. } => p.exit_before = true,
        Fast::CmovRM { .. } => {
            p.reads = true;
            p.exit_before = true;
        }
        Fast::StoreR { .. } | Fast::StoreI { .. } | Fast::Push { .. } | Fast::PushI { .. } => {
            p.exit_before = true;
            p.exit_after = true;
        }
        Fast::Jcc { .. } => {
            p.reads = true;
            p.exit_after = true;
        }
        Fast::Jmp { .. } => p.exit_after = true,
        Fast::CmovRR { .. } | Fast::SetccR { .. } => p.reads = true,
        _ => {}
    }
    p
}

/// Host code for the block `insns` under `view`, its link slots numbered from `first_link`;
/// `None` when no instruction has a native form.
pub(crate) fn compile(
    insns: &[Decoded],
    view: &DataView,
    bits: u32,
    first_link: u32,
) -> Option<Compiled> {
    // Slot numbers (plus one) are written as 32-bit immediates.
    if bits == 16 || insns.len() > 64 || first_link > i32::MAX as u32 - 65 {
        return None;
    }
    let mut native: Vec<bool> = insns.iter().map(|d| supported(d, view)).collect();
    // JMP, CALL and RET end the code (and the block).
    if let Some(j) = insns.iter().position(ends) {
        native.truncate(j + 1);
    }
    let n = native.len();
    let mut entries = 0u64;
    for (i, &x) in native.iter().enumerate() {
        if x && (i == 0 || !native[i - 1]) {
            entries |= 1 << i;
        }
    }
    if entries == 0 {
        return None;
    }
    // Flags liveness, backwards: after the last instruction the code is left.
    let mut capture = vec![false; n];
    let mut live = true;
    for i in (0..n).rev() {
        let p = if native[i] {
            props(&insns[i], view)
        } else {
            // Left to the interpreter: the code is left before it.
            Props {
                exit_before: true,
                ..Props::default()
            }
        };
        let live_after = live || p.exit_after;
        capture[i] = (p.writes || p.partial) && live_after;
        live = p.reads || p.exit_before || (live_after && !p.writes);
    }
    let mut g = Gen {
        a: Asm::new(),
        view,
        host_flags: false,
        stubs: Vec::new(),
        start: insns[0].insn.ip(),
        top: None,
        held: None,
        first_link,
        links: 0,
        sites: Vec::new(),
    };
    let dispatch = g.emit(&insns[..n], &native, &capture).ok()?;
    let dispatch = match dispatch {
        Some(l) => g.a.label_offset(&l)?,
        None => 0,
    };
    let sites = g
        .sites
        .iter()
        .map(|l| g.a.label_offset(l))
        .collect::<Option<Vec<_>>>()?;
    let code = g.a.finish().ok()?;
    let segs = insns[..n]
        .iter()
        .zip(&native)
        .filter(|(_, &x)| x)
        .fold(0u8, |s, (d, _)| s | segments(d, view));
    Some(Compiled {
        code,
        entries,
        dispatch,
        sites,
        segs,
    })
}

/// The segments (a bit per index) the native form of `d` accesses memory through under `view`.
fn segments(d: &Decoded, view: &DataView) -> u8 {
    match &d.fast {
        Fast::Load { m, .. }
        | Fast::AluRM { m, .. }
        | Fast::CmovRM { m, .. }
        | Fast::ImulRM { m, .. }
        | Fast::StoreR { m, .. }
        | Fast::StoreI { m, .. }
        | Fast::AluMR { m, .. }
        | Fast::AluMI { m, .. }
        | Fast::IncDecM { m, .. } => 1 << (m.seg & 7),
        // Stack accesses: PUSH, POP and the native CALL and RET; an indirect branch's target.
        Fast::Push { .. } | Fast::PushI { .. } | Fast::Pop { .. } => 1 << crate::state::seg::SS,
        Fast::Generic => {
            let (stack, src) = match (branch(&d.insn, view), wide(&d.insn, view)) {
                (Some(Branch::Indirect { call, src, .. }), _) => (call, Some(src)),
                (_, Some(w)) => (false, Some(w.src)),
                _ => (true, None),
            };
            let stack = if stack { 1 << crate::state::seg::SS } else { 0 };
            match src {
                Some(Source::Mem(m)) => stack | 1 << (m.seg & 7),
                _ => stack,
            }
        }
        _ => 0,
    }
}

/// True for the instructions after which the code never goes on: those that end a block
/// (JMP, CALL, RET and the instructions after which the block engine looks at the processor
/// anew). An instruction without a native form in the middle of a block does not end the code:
/// the interpreter runs it and enters the code again after it.
fn ends(d: &Decoded) -> bool {
    matches!(d.flow, Flow::End | Flow::Exit)
}

/// The guest register whose whole value a scratch register holds after the code of `f`: its
/// last step writes that register back from it, whole (32- and 64-bit writes).
fn holds_after(f: &Fast) -> Option<(Gpr, H)> {
    let (g, h) = match *f {
        Fast::MovRR { dst, .. }
        | Fast::MovRI { dst, .. }
        | Fast::Lea { dst, .. }
        | Fast::ExtendRR { dst, .. }
        | Fast::CmovRR { dst, .. }
        | Fast::CmovRM { dst, .. }
        | Fast::ImulRR { dst, .. }
        | Fast::ImulRM { dst, .. } => (dst, H::Ax),
        Fast::NotR { r }
        | Fast::NegR { r }
        | Fast::IncDec { r, .. }
        | Fast::ShiftRI { r, .. }
        | Fast::ShiftRCl { r, .. } => (r, H::Ax),
        Fast::AluRR { op, dst, .. } | Fast::AluRI { op, dst, .. } | Fast::AluRM { op, dst, .. }
            if writes_back(op) =>
        {
            (dst, H::Ax)
        }
        Fast::Load { dst, .. } | Fast::Pop { dst } => (dst, H::Cx),
        _ => return None,
    };
    (g.size >= 4 && g.shift == 0).then_some((g, h))
}

/// Scratch host registers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum H {
    Ax,
    Cx,
}

/// The 64-, 32-, 16- and 8-bit names of a scratch register.
fn names(h: H) -> (R64, R32, R16, R8) {
    match h {
        H::Ax => (rax, eax, ax, al),
        H::Cx => (rcx, ecx, cx, cl),
    }
}

fn q(h: H) -> R64 {
    names(h).0
}

fn d32(h: H) -> R32 {
    names(h).1
}

fn w16(h: H) -> R16 {
    names(h).2
}

fn b8(h: H) -> R8 {
    names(h).3
}

/// Where a way out of the code goes on.
#[derive(Clone, Copy)]
enum Stub {
    /// Before instruction `done` (at `rip`): the interpreter runs it.
    Resume { done: usize, rip: u64 },
    /// A taken branch to a constant address (through a link slot).
    Left { done: usize, rip: u64 },
    /// A store to a page with cached code (the page number is in r10).
    CodeWrite { done: usize, rip: u64 },
    /// As `CodeWrite`, going on at the RIP already in the frame.
    CodeWriteTo { done: usize },
}

struct Gen<'v> {
    a: Asm,
    view: &'v DataView,
    /// The host's status flags are the guest's.
    host_flags: bool,
    stubs: Vec<(CodeLabel, Stub)>,
    /// RIP of the block's first instruction.
    start: u64,
    /// Where instruction 0 starts after the entry's loads, when it has a native form: a
    /// branch back to the block's start goes there.
    top: Option<CodeLabel>,
    /// A guest register (by number) whose whole value a scratch register holds after the
    /// instruction just made, for the next instruction's first reads.
    held: Option<(u8, H)>,
    /// The first link slot of this code and the number used so far.
    first_link: u32,
    links: u32,
    /// The link slots' JMPs, in slot order.
    sites: Vec<CodeLabel>,
}

macro_rules! alu2 {
    ($a:expr, $op:expr, $x:expr, $y:expr) => {
        match $op {
            AluOp::Add => $a.add($x, $y),
            AluOp::Adc => $a.adc($x, $y),
            AluOp::Sub => $a.sub($x, $y),
            AluOp::Sbb => $a.sbb($x, $y),
            AluOp::Cmp => $a.cmp($x, $y),
            AluOp::And => $a.and($x, $y),
            AluOp::Or => $a.or($x, $y),
            AluOp::Xor => $a.xor($x, $y),
            AluOp::Test => $a.test($x, $y),
        }
    };
}

impl Gen<'_> {
    /// The code: the entry for instruction 0 at offset 0, the instructions, the ways out and
    /// the dispatch entry (its label, when there are entries after instruction 0).
    fn emit(
        &mut self,
        insns: &[Decoded],
        native: &[bool],
        capture: &[bool],
    ) -> Result<Option<CodeLabel>, AsmError> {
        self.a.mov(rsi, qword_ptr(rdi + F_GPR))?;
        self.a.mov(r8, qword_ptr(rdi + F_RAM))?;
        if native[0] {
            let mut top = self.a.create_label();
            self.a.set_label(&mut top)?;
            self.top = Some(top);
        }
        let mut entries = Vec::new();
        for (i, d) in insns.iter().enumerate() {
            if !native[i] {
                self.held = None;
                self.resume(i, d.insn.ip())?;
                continue;
            }
            if i > 0 && !native[i - 1] {
                // Reached only through the dispatch (the instruction before left the code).
                let mut l = self.a.create_label();
                self.a.set_label(&mut l)?;
                self.a.add(qword_ptr(rdi + F_CHAIN), i as i32)?;
                self.host_flags = false;
                entries.push((i, l));
            }
            self.insn(i, d, capture[i])?;
        }
        let last = insns.len() - 1;
        if native[last] && !ends(&insns[last]) {
            self.leave(insns.len(), insns[last].next)?;
        }
        for (mut label, stub) in std::mem::take(&mut self.stubs) {
            self.a.set_label(&mut label)?;
            match stub {
                Stub::Resume { done, rip } => self.resume(done, rip)?,
                Stub::Left { done, rip } => self.leave(done, rip)?,
                Stub::CodeWrite { done, rip } => {
                    self.a.shl(r10, 12)?;
                    self.a.mov(qword_ptr(rdi + F_NOTE), r10)?;
                    self.exit(done, rip, EXIT_CODE_WRITE)?;
                }
                Stub::CodeWriteTo { done } => {
                    self.a.shl(r10, 12)?;
                    self.a.mov(qword_ptr(rdi + F_NOTE), r10)?;
                    self.a.mov(qword_ptr(rdi + F_DONE), done as i32)?;
                    self.a
                        .mov(qword_ptr(rdi + F_EXIT), EXIT_CODE_WRITE as i32)?;
                    self.a.ret()?;
                }
            }
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let mut dispatch = self.a.create_label();
        self.a.set_label(&mut dispatch)?;
        self.a.mov(rsi, qword_ptr(rdi + F_GPR))?;
        self.a.mov(r8, qword_ptr(rdi + F_RAM))?;
        self.a.mov(rax, qword_ptr(rdi + F_POS))?;
        for (i, l) in entries {
            self.a.cmp(rax, i as i32)?;
            self.a.je(l)?;
        }
        // Not an entry: the interpreter runs the block from its first instruction.
        self.resume(0, self.start)?;
        Ok(Some(dispatch))
    }

    /// Leaves the code before instruction `done` (at `rip`) for the interpreter.
    fn resume(&mut self, done: usize, rip: u64) -> Res {
        self.a.mov(rax, self.start)?;
        self.a.mov(qword_ptr(rdi + F_START), rax)?;
        self.exit(done, rip, EXIT_RESUME)
    }

    /// Leaves the code for the constant address `rip` after `done` instructions, through a
    /// new link slot: straight to the linked code once the slot's JMP leads there, while the
    /// instruction allowance lasts.
    fn leave(&mut self, done: usize, rip: u64) -> Res {
        if let Some(top) = self.top.filter(|_| rip == self.start) {
            // Back to this code's own start: no link needed while the allowance lasts.
            let mut out = self.a.create_label();
            self.a.mov(rcx, qword_ptr(rdi + F_CHAIN))?;
            self.a.sub(rcx, done as i32)?;
            self.a.jle(out)?;
            self.a.mov(qword_ptr(rdi + F_CHAIN), rcx)?;
            self.a.jmp(top)?;
            self.a.set_label(&mut out)?;
        }
        let slot = self.first_link + self.links;
        self.links += 1;
        let mut out = self.a.create_label();
        let mut site = self.a.create_label();
        self.a.sub(qword_ptr(rdi + F_CHAIN), done as i32)?;
        self.a.jle(out)?;
        self.a.set_label(&mut site)?;
        // JMP rel32 to the next instruction, until the CPU links the slot.
        self.a.db(&[0xe9, 0, 0, 0, 0])?;
        self.sites.push(site);
        self.a.set_label(&mut out)?;
        // Not followed: the allowance is as it was.
        self.a.add(qword_ptr(rdi + F_CHAIN), done as i32)?;
        self.a.mov(qword_ptr(rdi + F_LINK), slot as i32 + 1)?;
        self.exit(done, rip, EXIT_LEFT)
    }

    fn stub(&mut self, s: Stub) -> CodeLabel {
        let l = self.a.create_label();
        self.stubs.push((l, s));
        l
    }

    fn exit(&mut self, done: usize, rip: u64, code: u64) -> Res {
        self.a.mov(qword_ptr(rdi + F_DONE), done as i32)?;
        self.a.mov(rax, rip)?;
        self.a.mov(qword_ptr(rdi + F_RIP), rax)?;
        self.a.mov(qword_ptr(rdi + F_EXIT), code as i32)?;
        self.a.ret()
    }

    /// The guest register's bytes.
    fn slot(g: Gpr) -> Mem {
        rsi + (i32::from(g.idx & 15) * 8 + i32::from(g.shift / 8))
    }

    /// Loads a guest register, zero-extended.
    fn load(&mut self, g: Gpr, h: H) -> Res {
        let m = Self::slot(g);
        match g.size {
            8 => self.a.mov(q(h), qword_ptr(m)),
            4 => self.a.mov(d32(h), dword_ptr(m)),
            2 => self.a.movzx(d32(h), word_ptr(m)),
            _ => self.a.movzx(d32(h), byte_ptr(m)),
        }
    }

    /// Loads a guest register as [`Gen::load`] does, from the scratch register that holds its
    /// whole value (see `held`) when there is one.
    fn load_held(&mut self, g: Gpr, h: H, held: Option<(u8, H)>) -> Res {
        match held {
            Some((idx, from)) if idx == g.idx & 15 && g.shift == 0 && g.size >= 4 => {
                match (g.size, from == h) {
                    (8, true) => Ok(()),
                    (8, false) => self.a.mov(q(h), q(from)),
                    _ => self.a.mov(d32(h), d32(from)),
                }
            }
            _ => self.load(g, h),
        }
    }

    /// Loads the whole guest register `reg` into `h` (from `held` when it holds it).
    fn load_whole(&mut self, reg: u8, h: H, held: Option<(u8, H)>) -> Res {
        match held {
            Some((idx, from)) if idx == reg => {
                if from != h {
                    self.a.mov(q(h), q(from))?;
                }
                Ok(())
            }
            _ => self.a.mov(q(h), qword_ptr(rsi + i32::from(reg) * 8)),
        }
    }

    /// Writes a guest register (a 32-bit write clears the upper half).
    fn store(&mut self, g: Gpr, h: H) -> Res {
        if g.size == 4 {
            self.a.mov(d32(h), d32(h))?;
        }
        self.store_zx(g, h)
    }

    /// Writes a guest register as [`Gen::store`] does, from a scratch register whose upper
    /// half is already clear when the register is a 32-bit one (the value of a 32-bit host
    /// operation or load).
    fn store_zx(&mut self, g: Gpr, h: H) -> Res {
        let m = Self::slot(g);
        match g.size {
            8 => self.a.mov(qword_ptr(m), q(h)),
            4 => self.a.mov(qword_ptr(m), q(h)),
            2 => self.a.mov(word_ptr(m), w16(h)),
            _ => self.a.mov(byte_ptr(m), b8(h)),
        }
    }

    /// Loads `size` bytes at `[rax]`, zero-extended.
    fn load_mem(&mut self, size: u8, h: H) -> Res {
        match size {
            8 => self.a.mov(q(h), qword_ptr(rax)),
            4 => self.a.mov(d32(h), dword_ptr(rax)),
            2 => self.a.movzx(d32(h), word_ptr(rax)),
            _ => self.a.movzx(d32(h), byte_ptr(rax)),
        }
    }

    /// Stores the low `size` bytes of rcx at `[rax]`.
    fn store_mem(&mut self, size: u8) -> Res {
        match size {
            8 => self.a.mov(qword_ptr(rax), rcx),
            4 => self.a.mov(dword_ptr(rax), ecx),
            2 => self.a.mov(word_ptr(rax), cx),
            _ => self.a.mov(byte_ptr(rax), cl),
        }
    }

    /// Sign-extends the low `size` bytes of `h` to 64 bits.
    fn sign_extend(&mut self, size: u8, h: H) -> Res {
        match size {
            4 => self.a.movsxd(q(h), d32(h)),
            2 => self.a.movsx(q(h), w16(h)),
            1 => self.a.movsx(q(h), b8(h)),
            _ => Ok(()),
        }
    }

    /// Keeps the bits of `mask` (all, 32 or 16 bits) of `r`, without touching the flags.
    fn mask32(&mut self, r32: R32, r16: R16, mask: u64) -> Res {
        match mask {
            0xffff => self.a.movzx(r32, r16)?,
            0xffff_ffff => self.a.mov(r32, r32)?,
            _ => {}
        }
        Ok(())
    }

    /// The effective address of `m` into rax (rcx clobbered; flags kept).
    /// Registers come from `held` where it holds them.
    fn ea(&mut self, m: MemOp, held: Option<(u8, H)>) -> Res {
        let disp = m.disp as i64;
        let small = disp == i64::from(disp as i32);
        let base = m.base < 16;
        let index = m.index < 16;
        if !base && !index {
            self.a.mov(rax, m.disp)?;
        } else {
            // The register `held` names is read before the other one overwrites it.
            let base_first = matches!(held, Some((_, H::Cx)));
            if base && base_first {
                self.load_whole(m.base, H::Ax, held)?;
            }
            if index {
                self.load_whole(m.index, H::Cx, held)?;
            }
            if base && !base_first {
                self.load_whole(m.base, H::Ax, held)?;
            }
            let scale = 1u32 << m.scale;
            let d = if small { disp as i32 } else { 0 };
            match (base, index) {
                (true, true) => self.a.lea(rax, qword_ptr(rax + rcx * scale + d))?,
                (false, true) => self.a.lea(rax, qword_ptr(rcx * scale + d))?,
                _ if d != 0 => self.a.lea(rax, qword_ptr(rax + d))?,
                _ => {}
            }
            if !small {
                self.a.mov(rcx, m.disp)?;
                self.a.lea(rax, qword_ptr(rax + rcx))?;
            }
        }
        self.mask32(eax, ax, m.amask)
    }

    /// Turns the offset in rax into the host address of `size` bytes of RAM in segment
    /// `seg`, or goes to `slow`. Leaves the RAM entry's offset in the table (r8) in rdx; clobbers rcx and the
    /// flags.
    fn lookup(&mut self, seg: usize, size: u8, write: bool, slow: CodeLabel) -> Res {
        self.host_flags = false;
        let base = self.view.base[seg];
        if base != 0 {
            self.a.mov(rdx, base)?;
            self.a.add(rax, rdx)?;
        }
        // The entry of the first byte's page, 64 bytes each.
        self.a.mov(edx, eax)?;
        self.a.shr(edx, 6)?;
        self.a
            .and(edx, ((crate::cache::RAM_ENTRIES - 1) << 6) as i32)?;
        // The key of the last byte's page: an access that crosses into the next page does
        // not match the entry of the first.
        self.a.lea(rcx, qword_ptr(rax + (i32::from(size) - 1)))?;
        self.a.and(rcx, -0x1000)?;
        self.a.or(rcx, self.view.key as i32)?;
        self.a.cmp(
            rcx,
            qword_ptr(r8 + rdx + if write { E_WRITE } else { E_READ }),
        )?;
        self.a.jne(slow)?;
        self.a.and(eax, 0xfff)?;
        self.a.add(rax, qword_ptr(r8 + rdx + E_HOST))
    }

    /// After a store through the entry at r8 + rdx: leaves the code when the page holds cached
    /// code. Clobbers r9, r10 and the flags.
    fn code_check(&mut self, done: usize, rip: u64) -> Res {
        let stub = self.stub(Stub::CodeWrite { done, rip });
        self.code_check_to(stub)
    }

    /// As [`Gen::code_check`], leaving through `stub`.
    fn code_check_to(&mut self, stub: CodeLabel) -> Res {
        self.host_flags = false;
        self.a.mov(r9, qword_ptr(r8 + rdx + E_CODE))?;
        self.a.mov(r9, qword_ptr(r9))?;
        self.a.mov(r10, qword_ptr(r8 + rdx + E_PHYS))?;
        self.a.shr(r10, 12)?;
        // The bit of the page (BT takes the offset modulo 64).
        self.a.bt(r9, r10)?;
        self.a.jb(stub)
    }

    /// Makes the host flags the guest's.
    /// Keeps rax (through r9).
    fn flags_in(&mut self) -> Res {
        if !self.host_flags {
            self.a.mov(r9, rax)?;
            self.a.movzx(eax, word_ptr(rdi + F_FLAGS))?;
            // OF from 0x7f + (0 or 1), then the others from AH.
            self.a.add(al, 0x7f)?;
            self.a.sahf()?;
            self.a.mov(rax, r9)?;
            self.host_flags = true;
        }
        Ok(())
    }

    /// Writes the host's status flags to the frame. Keeps rax (through r9) and the flags.
    fn flags_store(&mut self) -> Res {
        self.a.mov(r9, rax)?;
        self.a.lahf()?;
        self.a.seto(al)?;
        self.a.mov(word_ptr(rdi + F_FLAGS), ax)?;
        self.a.mov(rax, r9)
    }

    /// After an instruction that set the guest flags on the host.
    fn flags_out(&mut self, capture: bool) -> Res {
        self.host_flags = true;
        if capture {
            self.flags_store()?;
        }
        Ok(())
    }

    fn alu_rr(&mut self, op: AluOp, size: u8) -> Res {
        if reads_carry(op) {
            self.flags_in()?;
        }
        match size {
            8 => alu2!(self.a, op, rax, rcx),
            4 => alu2!(self.a, op, eax, ecx),
            2 => alu2!(self.a, op, ax, cx),
            _ => alu2!(self.a, op, al, cl),
        }
    }

    /// The ALU operation of `op` on rax (or `[rax]`, `mem`) and the immediate `imm` (masked to
    /// `size` bytes; 64-bit operations take a sign-extended 32-bit one). False when `imm`
    /// has no immediate form, and nothing was made.
    fn alu_imm(&mut self, op: AluOp, size: u8, imm: u64, mem: bool) -> Result<bool, AsmError> {
        if size == 8 && i64::from(imm as i32) != imm as i64 {
            return Ok(false);
        }
        if reads_carry(op) {
            self.flags_in()?;
        }
        match (size, mem) {
            (8, false) => alu2!(self.a, op, rax, imm),
            (4, false) => alu2!(self.a, op, eax, imm),
            (2, false) => alu2!(self.a, op, ax, imm),
            (_, false) => alu2!(self.a, op, al, imm),
            (8, true) => alu2!(self.a, op, qword_ptr(rax), imm),
            (4, true) => alu2!(self.a, op, dword_ptr(rax), imm),
            (2, true) => alu2!(self.a, op, word_ptr(rax), imm),
            (_, true) => alu2!(self.a, op, byte_ptr(rax), imm),
        }?;
        Ok(true)
    }

    fn alu_mr(&mut self, op: AluOp, size: u8) -> Res {
        if reads_carry(op) {
            self.flags_in()?;
        }
        match size {
            8 => alu2!(self.a, op, qword_ptr(rax), rcx),
            4 => alu2!(self.a, op, dword_ptr(rax), ecx),
            2 => alu2!(self.a, op, word_ptr(rax), cx),
            _ => alu2!(self.a, op, byte_ptr(rax), cl),
        }
    }

    /// Jumps to `target` when `cc` holds for the host flags.
    fn jcc(&mut self, cc: ConditionCode, target: CodeLabel) -> Res {
        use ConditionCode as C;
        let a = &mut self.a;
        match cc {
            C::o => a.jo(target),
            C::no => a.jno(target),
            C::b => a.jb(target),
            C::ae => a.jae(target),
            C::e => a.je(target),
            C::ne => a.jne(target),
            C::be => a.jbe(target),
            C::a => a.ja(target),
            C::s => a.js(target),
            C::ns => a.jns(target),
            C::p => a.jp(target),
            C::np => a.jnp(target),
            C::l => a.jl(target),
            C::ge => a.jge(target),
            C::le => a.jle(target),
            C::g => a.jg(target),
            C::None => a.jmp(target),
        }
    }

    /// al = 1 when `cc` holds, else 0.
    fn setcc(&mut self, cc: ConditionCode) -> Res {
        use ConditionCode as C;
        let a = &mut self.a;
        match cc {
            C::o => a.seto(al),
            C::no => a.setno(al),
            C::b => a.setb(al),
            C::ae => a.setae(al),
            C::e => a.sete(al),
            C::ne => a.setne(al),
            C::be => a.setbe(al),
            C::a => a.seta(al),
            C::s => a.sets(al),
            C::ns => a.setns(al),
            C::p => a.setp(al),
            C::np => a.setnp(al),
            C::l => a.setl(al),
            C::ge => a.setge(al),
            C::le => a.setle(al),
            C::g => a.setg(al),
            C::None => a.mov(al, 1),
        }
    }

    /// rax = rcx when `cc` holds.
    fn cmov(&mut self, cc: ConditionCode) -> Res {
        use ConditionCode as C;
        let a = &mut self.a;
        match cc {
            C::o => a.cmovo(rax, rcx),
            C::no => a.cmovno(rax, rcx),
            C::b => a.cmovb(rax, rcx),
            C::ae => a.cmovae(rax, rcx),
            C::e => a.cmove(rax, rcx),
            C::ne => a.cmovne(rax, rcx),
            C::be => a.cmovbe(rax, rcx),
            C::a => a.cmova(rax, rcx),
            C::s => a.cmovs(rax, rcx),
            C::ns => a.cmovns(rax, rcx),
            C::p => a.cmovp(rax, rcx),
            C::np => a.cmovnp(rax, rcx),
            C::l => a.cmovl(rax, rcx),
            C::ge => a.cmovge(rax, rcx),
            C::le => a.cmovle(rax, rcx),
            C::g => a.cmovg(rax, rcx),
            C::None => a.mov(rax, rcx),
        }
    }

    /// Looks up a memory operand (its offset computed into rax) with a way out before
    /// instruction `i`.
    /// Registers come from `held` where it holds them.
    fn mem(&mut self, i: usize, d: &Decoded, m: MemOp, write: bool, held: Option<(u8, H)>) -> Res {
        self.ea(m, held)?;
        let slow = self.stub(Stub::Resume {
            done: i,
            rip: d.insn.ip(),
        });
        self.lookup(m.seg as usize, m.size, write, slow)
    }

    fn insn(&mut self, i: usize, d: &Decoded, capture: bool) -> Res {
        let held = self.held.take();
        match d.fast {
            Fast::Nop => {}
            Fast::MovRR { dst, src } => {
                self.load_held(src, H::Ax, held)?;
                self.store_zx(dst, H::Ax)?;
            }
            Fast::MovRI { dst, imm } => {
                self.mov_imm(H::Ax, imm)?;
                self.store(dst, H::Ax)?;
            }
            Fast::Lea { dst, m } => {
                self.ea(m, held)?;
                self.store(dst, H::Ax)?;
            }
            Fast::ExtendRR { dst, src, sign } => {
                self.load_held(src, H::Ax, held)?;
                if sign {
                    self.sign_extend(src.size, H::Ax)?;
                }
                self.store(dst, H::Ax)?;
            }
            Fast::NotR { r } => {
                self.load_held(r, H::Ax, held)?;
                self.a.not(rax)?;
                self.store(r, H::Ax)?;
            }
            Fast::NegR { r } => {
                self.load_held(r, H::Ax, held)?;
                match r.size {
                    8 => self.a.neg(rax)?,
                    4 => self.a.neg(eax)?,
                    2 => self.a.neg(ax)?,
                    _ => self.a.neg(al)?,
                }
                self.flags_out(capture)?;
                self.store_zx(r, H::Ax)?;
            }
            Fast::IncDec { inc, r } => {
                self.load_held(r, H::Ax, held)?;
                self.flags_in()?;
                match (r.size, inc) {
                    (8, true) => self.a.inc(rax)?,
                    (8, false) => self.a.dec(rax)?,
                    (4, true) => self.a.inc(eax)?,
                    (4, false) => self.a.dec(eax)?,
                    (2, true) => self.a.inc(ax)?,
                    (2, false) => self.a.dec(ax)?,
                    (_, true) => self.a.inc(al)?,
                    (_, false) => self.a.dec(al)?,
                }
                self.flags_out(capture)?;
                self.store_zx(r, H::Ax)?;
            }
            Fast::AluRR { op, dst, src } => {
                self.load_held(dst, H::Ax, held)?;
                // The first load wrote only rax.
                self.load_held(src, H::Cx, held.filter(|h| h.1 == H::Cx))?;
                self.alu_rr(op, dst.size)?;
                self.flags_out(capture)?;
                if writes_back(op) {
                    self.store_zx(dst, H::Ax)?;
                }
            }
            Fast::AluRI { op, dst, imm } => {
                self.load_held(dst, H::Ax, held)?;
                if !self.alu_imm(op, dst.size, imm, false)? {
                    self.mov_imm(H::Cx, imm)?;
                    self.alu_rr(op, dst.size)?;
                }
                self.flags_out(capture)?;
                if writes_back(op) {
                    self.store_zx(dst, H::Ax)?;
                }
            }
            Fast::AluRM { op, dst, m } => {
                self.mem(i, d, m, false, held)?;
                self.load_mem(m.size, H::Cx)?;
                self.load(dst, H::Ax)?;
                self.alu_rr(op, dst.size)?;
                self.flags_out(capture)?;
                if writes_back(op) {
                    self.store_zx(dst, H::Ax)?;
                }
            }
            Fast::AluMR { op, m, src } => {
                self.mem(i, d, m, writes_back(op), held)?;
                self.load(src, H::Cx)?;
                self.alu_mr(op, m.size)?;
                self.flags_out(capture)?;
                if writes_back(op) {
                    self.code_check(i + 1, d.next)?;
                }
            }
            Fast::AluMI { op, m, imm } => {
                self.mem(i, d, m, writes_back(op), held)?;
                if !self.alu_imm(op, m.size, imm, true)? {
                    self.mov_imm(H::Cx, imm)?;
                    self.alu_mr(op, m.size)?;
                }
                self.flags_out(capture)?;
                if writes_back(op) {
                    self.code_check(i + 1, d.next)?;
                }
            }
            Fast::Load { dst, m, sign } => {
                self.mem(i, d, m, false, held)?;
                self.load_mem(m.size, H::Cx)?;
                if sign {
                    self.sign_extend(m.size, H::Cx)?;
                    self.store(dst, H::Cx)?;
                } else {
                    self.store_zx(dst, H::Cx)?;
                }
            }
            Fast::StoreR { m, src } => {
                self.mem(i, d, m, true, held)?;
                self.load(src, H::Cx)?;
                self.store_mem(m.size)?;
                self.code_check(i + 1, d.next)?;
            }
            Fast::StoreI { m, imm } => {
                self.mem(i, d, m, true, held)?;
                self.mov_imm(H::Cx, imm)?;
                self.store_mem(m.size)?;
                self.code_check(i + 1, d.next)?;
            }
            Fast::Push { src } => {
                self.stack_push(i, d, src.size)?;
                self.load(src, H::Cx)?;
                self.store_mem(src.size)?;
                self.set_rsp()?;
                self.code_check(i + 1, d.next)?;
            }
            Fast::PushI { imm, size } => {
                self.stack_push(i, d, size)?;
                self.mov_imm(H::Cx, imm)?;
                self.store_mem(size)?;
                self.set_rsp()?;
                self.code_check(i + 1, d.next)?;
            }
            Fast::IncDecM { inc, m } => {
                self.mem(i, d, m, true, held)?;
                self.flags_in()?;
                match (m.size, inc) {
                    (8, true) => self.a.inc(qword_ptr(rax))?,
                    (8, false) => self.a.dec(qword_ptr(rax))?,
                    (4, true) => self.a.inc(dword_ptr(rax))?,
                    (4, false) => self.a.dec(dword_ptr(rax))?,
                    (2, true) => self.a.inc(word_ptr(rax))?,
                    (2, false) => self.a.dec(word_ptr(rax))?,
                    (_, true) => self.a.inc(byte_ptr(rax))?,
                    (_, false) => self.a.dec(byte_ptr(rax))?,
                }
                self.flags_out(capture)?;
                self.code_check(i + 1, d.next)?;
            }
            Fast::BswapR { r } => {
                self.load_held(r, H::Ax, held)?;
                if r.size == 8 {
                    self.a.bswap(rax)?;
                } else {
                    self.a.bswap(eax)?;
                }
                self.store_zx(r, H::Ax)?;
            }
            Fast::Pop { dst } => {
                self.stack_pop(i, d, dst.size)?;
                self.load_mem(dst.size, H::Cx)?;
                self.set_rsp()?;
                self.store_zx(dst, H::Cx)?;
            }
            Fast::Jcc { cc, target } => {
                self.flags_in()?;
                let taken = self.stub(Stub::Left {
                    done: i + 1,
                    rip: target,
                });
                self.jcc(cc, taken)?;
            }
            Fast::Jmp { target } => self.leave(i + 1, target)?,
            Fast::CmovRR { cc, dst, src } => {
                self.load_held(src, H::Cx, held)?;
                self.load(dst, H::Ax)?;
                self.flags_in()?;
                self.cmov(cc)?;
                self.store(dst, H::Ax)?;
            }
            Fast::CmovRM { cc, dst, m } => {
                self.mem(i, d, m, false, held)?;
                self.load_mem(m.size, H::Cx)?;
                self.load(dst, H::Ax)?;
                self.flags_in()?;
                self.cmov(cc)?;
                self.store(dst, H::Ax)?;
            }
            Fast::SetccR { cc, dst } => {
                self.flags_in()?;
                self.setcc(cc)?;
                self.store(dst, H::Ax)?;
            }
            Fast::ShiftRI { op, r, count } => self.shift(op, r, count, capture)?,
            Fast::ImulRR { dst, src } => {
                self.load_held(dst, H::Ax, held)?;
                self.load_held(src, H::Cx, held.filter(|h| h.1 == H::Cx))?;
                self.imul(dst.size, capture)?;
                self.store(dst, H::Ax)?;
            }
            Fast::ImulRM { dst, m } => {
                self.mem(i, d, m, false, held)?;
                self.load_mem(m.size, H::Cx)?;
                self.load(dst, H::Ax)?;
                self.imul(dst.size, capture)?;
                self.store(dst, H::Ax)?;
            }
            Fast::Generic => match branch(&d.insn, self.view) {
                Some(Branch::Call { size, target }) => self.call(i, d, size, target)?,
                Some(Branch::Ret { size }) => self.ret(i, d, size)?,
                Some(Branch::Indirect { call, size, src }) => {
                    self.indirect(i, d, call, size, src, held)?
                }
                None => match wide(&d.insn, self.view) {
                    Some(w) => self.wide(i, d, w, capture, held)?,
                    // Not reached (see `supported`); the interpreter runs it.
                    None => self.resume(i, d.insn.ip())?,
                },
            },
            Fast::ShiftRCl { op, r } => self.shift_cl(op, r, capture)?,
        }
        self.held = holds_after(&d.fast).map(|(g, h)| (g.idx & 15, h));
        Ok(())
    }

    /// Sets `h` to `imm`, in the shortest form.
    fn mov_imm(&mut self, h: H, imm: u64) -> Res {
        if let Ok(v) = u32::try_from(imm) {
            self.a.mov(d32(h), v)
        } else if i32::try_from(imm as i64).is_ok() {
            // A sign-extended 32-bit immediate.
            self.a.mov(q(h), imm as i64)
        } else {
            self.a.mov(q(h), imm)
        }
    }

    /// Two-operand IMUL of rax by rcx. CF and OF are the host's; SF and PF follow the
    /// result, ZF and AF are clear (the interpreter's choice for the undefined ones).
    fn imul(&mut self, size: u8, capture: bool) -> Res {
        match size {
            8 => self.a.imul_2(rax, rcx)?,
            4 => self.a.imul_2(eax, ecx)?,
            _ => self.a.imul_2(ax, cx)?,
        }
        self.host_flags = false;
        if capture {
            self.mul_flags(size)?;
        }
        Ok(())
    }

    /// Writes the flags of a MUL or IMUL just made to the frame: CF and OF the host's, SF and
    /// PF of the low half in rax, ZF and AF clear. Keeps rax and rdx.
    fn mul_flags(&mut self, size: u8) -> Res {
        // OF (and CF, the same) in r10; SF and PF of the result from TEST.
        self.a.seto(r10b)?;
        self.a.movzx(r10d, r10b)?;
        match size {
            8 => self.a.test(rax, rax)?,
            4 => self.a.test(eax, eax)?,
            _ => self.a.test(ax, ax)?,
        }
        self.a.mov(r9, rax)?;
        self.a.lahf()?;
        self.a.movzx(ecx, ah)?;
        self.a
            .and(ecx, ((crate::alu::SF | crate::alu::PF) | 2) as i32)?;
        self.a.or(ecx, r10d)?;
        self.a.shl(ecx, 8)?;
        self.a.or(ecx, r10d)?;
        self.a.mov(qword_ptr(rdi + F_FLAGS), rcx)?;
        self.a.mov(rax, r9)?;
        Ok(())
    }

    /// The slot of a `size`-byte push of instruction `i`: its host address in rax, the new
    /// stack offset in r11 (for `set_rsp`).
    fn stack_push(&mut self, i: usize, d: &Decoded, size: u8) -> Res {
        let slow = self.stub(Stub::Resume {
            done: i,
            rip: d.insn.ip(),
        });
        self.a.mov(rax, qword_ptr(rsi + 4 * 8))?;
        self.a.lea(rax, qword_ptr(rax - i32::from(size)))?;
        self.mask32(eax, ax, self.view.stack_mask)?;
        self.a.mov(r11, rax)?;
        self.lookup(crate::state::seg::SS, size, true, slow)
    }

    /// The slot of a `size`-byte pop of instruction `i`: its host address in rax, the new
    /// stack offset in r11 (for `set_rsp`). Returns the way out before the instruction.
    fn stack_pop(&mut self, i: usize, d: &Decoded, size: u8) -> Result<CodeLabel, AsmError> {
        let mask = self.view.stack_mask;
        let slow = self.stub(Stub::Resume {
            done: i,
            rip: d.insn.ip(),
        });
        self.a.mov(rax, qword_ptr(rsi + 4 * 8))?;
        self.mask32(eax, ax, mask)?;
        self.a.lea(r11, qword_ptr(rax + i32::from(size)))?;
        self.mask32(r11d, r11w, mask)?;
        self.lookup(crate::state::seg::SS, size, false, slow)?;
        Ok(slow)
    }

    /// Near CALL: pushes the return address and leaves for `target`.
    fn call(&mut self, i: usize, d: &Decoded, size: u8, target: u64) -> Res {
        self.stack_push(i, d, size)?;
        self.a.mov(rcx, d.next)?;
        self.store_mem(size)?;
        self.set_rsp()?;
        self.code_check(i + 1, target)?;
        self.leave(i + 1, target)
    }

    /// Near RET: pops the return address and leaves for it (a target the interpreter would
    /// fault on goes back to it, before the instruction).
    fn ret(&mut self, i: usize, d: &Decoded, size: u8) -> Res {
        let slow = self.stack_pop(i, d, size)?;
        self.load_mem(size, H::Cx)?;
        if size == 8 {
            self.a.mov(rax, rcx)?;
            self.a.shl(rax, 16)?;
            self.a.sar(rax, 16)?;
            self.a.cmp(rax, rcx)?;
            self.a.jne(slow)?;
        } else {
            self.a.mov(rax, self.view.cs_limit)?;
            self.a.cmp(rcx, rax)?;
            self.a.ja(slow)?;
        }
        self.set_rsp()?;
        self.jump(i + 1)
    }

    /// One-operand MUL or DIV of RDX:RAX (EDX:EAX) by a register or memory. A DIV the
    /// interpreter would raise #DE for (a zero divisor, a quotient that does not fit) goes back
    /// to it, before the instruction.
    fn wide(
        &mut self,
        i: usize,
        d: &Decoded,
        w: Wide,
        capture: bool,
        held: Option<(u8, H)>,
    ) -> Res {
        match w.src {
            Source::Reg(g) => self.load_held(g, H::Cx, held)?,
            Source::Mem(m) => {
                self.mem(i, d, m, false, held)?;
                self.load_mem(w.size, H::Cx)?;
            }
        }
        use iced_x86::Register as R;
        let (acc, data) = match w.size {
            8 => (Gpr::of(R::RAX), Gpr::of(R::RDX)),
            _ => (Gpr::of(R::EAX), Gpr::of(R::EDX)),
        };
        let (Some(acc), Some(data)) = (acc, data) else {
            return self.resume(i, d.insn.ip());
        };
        self.load(acc, H::Ax)?;
        self.a.mov(rdx, qword_ptr(rsi + 2 * 8))?;
        self.host_flags = false;
        if w.div {
            let slow = self.stub(Stub::Resume {
                done: i,
                rip: d.insn.ip(),
            });
            if w.size == 8 {
                self.a.cmp(rdx, rcx)?;
                self.a.jae(slow)?;
                self.a.div(rcx)?;
            } else {
                self.a.cmp(edx, ecx)?;
                self.a.jae(slow)?;
                self.a.div(ecx)?;
            }
        } else {
            if w.size == 8 {
                self.a.mul(rcx)?;
            } else {
                self.a.mul(ecx)?;
            }
            if capture {
                self.mul_flags(w.size)?;
            }
        }
        self.a.mov(r9, rdx)?;
        self.store(acc, H::Ax)?;
        self.a.mov(rax, r9)?;
        self.store(data, H::Ax)
    }

    /// Indirect CALL (`call`) or JMP: reads the `size`-byte target, checks it as the
    /// interpreter would (a target it faults on goes back to it, before the instruction),
    /// pushes the return address for a CALL and goes on through the jump cache.
    fn indirect(
        &mut self,
        i: usize,
        d: &Decoded,
        call: bool,
        size: u8,
        src: Source,
        held: Option<(u8, H)>,
    ) -> Res {
        let slow = self.stub(Stub::Resume {
            done: i,
            rip: d.insn.ip(),
        });
        match src {
            Source::Reg(g) => self.load_held(g, H::Cx, held)?,
            Source::Mem(m) => {
                self.mem(i, d, m, false, held)?;
                self.load_mem(size, H::Cx)?;
            }
        }
        self.host_flags = false;
        if size == 8 {
            self.a.mov(rax, rcx)?;
            self.a.shl(rax, 16)?;
            self.a.sar(rax, 16)?;
            self.a.cmp(rax, rcx)?;
            self.a.jne(slow)?;
        } else {
            self.a.mov(rax, self.view.cs_limit)?;
            self.a.cmp(rcx, rax)?;
            self.a.ja(slow)?;
        }
        if call {
            // The target waits in the frame while the return address is pushed.
            self.a.mov(qword_ptr(rdi + F_RIP), rcx)?;
            self.stack_push(i, d, size)?;
            self.a.mov(rcx, d.next)?;
            self.store_mem(size)?;
            self.set_rsp()?;
            let stub = self.stub(Stub::CodeWriteTo { done: i + 1 });
            self.code_check_to(stub)?;
            self.a.mov(rcx, qword_ptr(rdi + F_RIP))?;
        }
        self.jump(i + 1)
    }

    /// Goes on at the RIP in rcx after `done` instructions: straight to the code the jump
    /// cache holds for it under this code's view and the frame's stamp, while the instruction
    /// allowance lasts; else leaves with [`EXIT_JUMP`].
    fn jump(&mut self, done: usize) -> Res {
        let mut miss = self.a.create_label();
        self.a.mov(rax, rcx)?;
        self.a.shr(rax, 12)?;
        self.a.xor(rax, rcx)?;
        self.a.and(eax, (JUMP_ENTRIES - 1) as i32)?;
        self.a.shl(eax, 5)?;
        self.a.add(rax, qword_ptr(rdi + F_JUMPS))?;
        self.a.cmp(rcx, qword_ptr(rax))?;
        self.a.jne(miss)?;
        self.a.mov(rdx, qword_ptr(rdi + F_STAMP))?;
        self.a.cmp(rdx, qword_ptr(rax + 8))?;
        self.a.jne(miss)?;
        self.a.mov(rdx, qword_ptr(rdi + F_VIEW))?;
        self.a.cmp(rdx, qword_ptr(rax + 16))?;
        self.a.jne(miss)?;
        self.a.mov(rdx, qword_ptr(rdi + F_CHAIN))?;
        self.a.sub(rdx, done as i32)?;
        self.a.jle(miss)?;
        self.a.mov(qword_ptr(rdi + F_CHAIN), rdx)?;
        self.a.jmp(qword_ptr(rax + 24))?;
        self.a.set_label(&mut miss)?;
        self.host_flags = false;
        self.a.mov(qword_ptr(rdi + F_RIP), rcx)?;
        self.a.mov(qword_ptr(rdi + F_DONE), done as i32)?;
        self.a.mov(qword_ptr(rdi + F_EXIT), EXIT_JUMP as i32)?;
        self.a.ret()
    }

    /// RSP = (RSP & !mask) | r11, with the view's stack mask.
    fn set_rsp(&mut self) -> Res {
        let mask = self.view.stack_mask;
        if mask == u64::MAX {
            return self.a.mov(qword_ptr(rsi + 4 * 8), r11);
        }
        self.a.mov(rax, qword_ptr(rsi + 4 * 8))?;
        self.a.mov(r10, !mask)?;
        self.a.and(rax, r10)?;
        self.a.or(rax, r11)?;
        self.host_flags = false;
        self.a.mov(qword_ptr(rsi + 4 * 8), rax)
    }

    /// SHL/SAL/SHR/SAR, ROL/ROR by a constant (any shift by a masked count of 0, which only
    /// writes the register back).
    fn shift(&mut self, op: Shift, r: Gpr, count: u8, capture: bool) -> Res {
        let c = shift_count(r, count);
        self.load(r, H::Ax)?;
        if c == 0 {
            return self.store_zx(r, H::Ax);
        }
        self.a.mov(rdx, rax)?;
        let c = u32::from(c);
        macro_rules! sh {
            ($reg:expr) => {
                match op {
                    Shift::Shl | Shift::Sal => self.a.shl($reg, c),
                    Shift::Shr => self.a.shr($reg, c),
                    Shift::Rol => self.a.rol($reg, c),
                    Shift::Ror => self.a.ror($reg, c),
                    _ => self.a.sar($reg, c),
                }
            };
        }
        match r.size {
            8 => sh!(rax)?,
            4 => sh!(eax)?,
            2 => sh!(ax)?,
            _ => sh!(al)?,
        }
        self.host_flags = false;
        if capture {
            if rotate(op) {
                self.rotate_flags(op, r.size)?;
            } else {
                self.shift_flags(op, r.size)?;
            }
        }
        self.store_zx(r, H::Ax)
    }

    /// SHL/SAL/SHR/SAR of a 32- or 64-bit register by CL (a masked count of 0 keeps the
    /// flags and writes the register back).
    fn shift_cl(&mut self, op: Shift, r: Gpr, capture: bool) -> Res {
        let mut skip = self.a.create_label();
        self.load(r, H::Ax)?;
        self.a.mov(rdx, rax)?;
        self.a.movzx(ecx, byte_ptr(rsi + 8))?;
        self.a.and(ecx, if r.size == 8 { 0x3f } else { 0x1f })?;
        self.a.jz(skip)?;
        macro_rules! sh {
            ($reg:expr) => {
                match op {
                    Shift::Shl | Shift::Sal => self.a.shl($reg, cl),
                    Shift::Shr => self.a.shr($reg, cl),
                    _ => self.a.sar($reg, cl),
                }
            };
        }
        if r.size == 8 {
            sh!(rax)?;
        } else {
            sh!(eax)?;
        }
        if capture {
            self.shift_flags(op, r.size)?;
        }
        self.a.set_label(&mut skip)?;
        self.host_flags = false;
        self.store_zx(r, H::Ax)
    }

    /// The guest flags after a shift (host flags) of the value in rdx: AF cleared, OF as for a
    /// one-bit shift of the original value (the interpreter's choice where the architecture
    /// leaves them undefined).
    fn shift_flags(&mut self, op: Shift, size: u8) -> Res {
        let msb = u32::from(size) * 8 - 1;
        self.a.mov(r9, rax)?;
        self.a.lahf()?;
        self.a.and(ah, !(AF as u8 as i32) & 0xff)?;
        match op {
            Shift::Shl | Shift::Sal => {
                self.a.lea(r10, qword_ptr(rdx + rdx))?;
                self.a.xor(r10, rdx)?;
            }
            Shift::Shr => self.a.mov(r10, rdx)?,
            _ => self.a.xor(r10d, r10d)?,
        }
        self.a.shr(r10, msb)?;
        self.a.and(r10d, 1)?;
        self.a.mov(al, r10b)?;
        self.a.mov(word_ptr(rdi + F_FLAGS), ax)?;
        self.a.mov(rax, r9)
    }

    /// The guest flags after ROL/ROR (result in rax, original value in rdx): CF from the
    /// result, OF as for a one-bit rotate of the original value, the rest kept.
    fn rotate_flags(&mut self, op: Shift, size: u8) -> Res {
        let msb = u32::from(size) * 8 - 1;
        self.a.mov(rcx, qword_ptr(rdi + F_FLAGS))?;
        // Keep SF, ZF, AF and PF; CF (bit 8) and OF (bits 0..7) anew.
        self.a.and(ecx, 0xfe00)?;
        self.a.mov(r9, rax)?;
        if op == Shift::Ror {
            self.a.shr(r9, msb)?;
        }
        self.a.and(r9d, 1)?;
        self.a.shl(r9d, 8)?;
        self.a.or(rcx, r9)?;
        if op == Shift::Rol {
            self.a.lea(r9, qword_ptr(rdx + rdx))?;
        } else {
            self.a.mov(r9, rdx)?;
            self.a.shl(r9, msb)?;
        }
        self.a.xor(r9, rdx)?;
        self.a.shr(r9, msb)?;
        self.a.and(r9d, 1)?;
        self.a.or(rcx, r9)?;
        self.a.mov(qword_ptr(rdi + F_FLAGS), rcx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    /// The block engine's instructions for 64-bit code `bytes`.
    fn block(bytes: &[u8]) -> Vec<Decoded> {
        Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE)
            .into_iter()
            .map(|i| crate::block::decoded(i, 64))
            .collect()
    }

    #[test]
    fn code_goes_on_after_an_instruction_without_a_native_form() {
        // add rax, rbx; pushfq (no native form); add rax, rbx; bt rax, 3 (none);
        // add rax, rbx
        let insns = block(&[
            0x48, 0x01, 0xd8, 0x9c, 0x48, 0x01, 0xd8, 0x48, 0x0f, 0xba, 0xe0, 0x03, 0x48, 0x01,
            0xd8,
        ]);
        assert!(!supported(&insns[1], &DataView::long_mode()));
        assert!(!supported(&insns[3], &DataView::long_mode()));
        let c = compile(&insns, &DataView::long_mode(), 64, 0).expect("native code");
        assert_eq!(c.entries, 0b10101);
        assert_ne!(c.dispatch, 0);
    }

    #[test]
    fn a_block_that_starts_without_a_native_form_has_code_after_it() {
        // pushfq; add rax, rbx
        let insns = block(&[0x9c, 0x48, 0x01, 0xd8]);
        let c = compile(&insns, &DataView::long_mode(), 64, 0).expect("native code");
        assert_eq!(c.entries, 0b10);
    }

    #[test]
    fn a_block_without_native_forms_has_no_code() {
        // pushfq; bt rax, 3
        let insns = block(&[0x9c, 0x48, 0x0f, 0xba, 0xe0, 0x03]);
        assert!(compile(&insns, &DataView::long_mode(), 64, 0).is_none());
    }
}
