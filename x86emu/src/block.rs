//! Block execution: runs of decoded instructions from one physical page, executed in a loop.
//!
//! A block starts at a physical address and extends over the straight-line instructions that
//! follow it in the same page, up to [`BLOCK_MAX`]. Instructions that cannot change what the
//! following instructions depend on (operating mode, paging, segment registers, the interrupt
//! flag) continue the block: ALU, moves, stack operations, near branches, string operations.
//! A conditional branch does not end a block: when RIP falls through, the next instruction of
//! the block runs. Any other instruction (far transfers, control registers, I/O, HLT, ...)
//! ends the block as its last instruction. Blocks never cross a page, so the one translation
//! of the block's start covers all of it, and the CS limit is checked for the whole block.
//!
//! Blocks are cached per CPU by physical address, code size and the code tracker's epoch: a
//! write to a page holding cached code (self-modifying code, DMA, another processor) starts a
//! new epoch, and the running block stops after the instruction that made the write.
//!
//! Common register and memory forms (ALU, MOV, INC/DEC, LEA, PUSH/POP, Jcc, JMP, CMOVcc,
//! register shifts, IMUL) carry their operands pre-decoded in [`Fast`] and skip the generic
//! operand path; everything else runs through `execute`. The ALU fast forms defer their status
//! flags ([`Lazy`]); RFLAGS is brought up to date before anything else can read it.

use crate::alu::{self, Shift, CF, STATUS, ZF};
use crate::cache::{Block, BlockCache, Decoded, Flow, NativeBlock, BLOCK_MAX};

/// Instructions the block engine runs at most between two questions to its stop condition.
pub(crate) const CHECK_INTERVAL: u32 = 8192;

/// Largest number of data views numbered for the jump cache (then the numbering starts over).
const MAX_VIEWS: usize = 256;

/// The slot of a way out (see [`Link`]) that was a RET the jump cache missed: the entry for
/// the next block is filled.
const JUMPED: u64 = u64::MAX;

/// Link slots of one code generation before the code memory starts over.
const MAX_LINKS: usize = 1 << 22;
use crate::cpu::{Bus, Cpu, Step, R, RETRY};
use crate::mmu::{Access, DataView};
use crate::native::{self, NativeFrame};
use crate::state::seg;
use iced_x86::{
    ConditionCode, Decoder, DecoderOptions, Instruction, Mnemonic as M, OpKind, Register,
};

/// A general register operand: index into `gpr`, width in bytes, and where the operand sits
/// in the 64-bit register (shift, value mask, and the bits a write keeps: a 32-bit write
/// clears the upper half).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gpr {
    pub(crate) idx: u8,
    pub(crate) size: u8,
    pub(crate) shift: u8,
    mask: u64,
    keep: u64,
}

impl Gpr {
    pub(crate) fn of(r: Register) -> Option<Self> {
        let full = r.full_register();
        if !full.is_gpr64() {
            return None;
        }
        let high = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
        let size = r.size() as u8;
        let mask = alu::mask(u32::from(size) * 8);
        Some(Self {
            idx: (full as usize - Register::RAX as usize) as u8,
            size,
            shift: if high { 8 } else { 0 },
            mask,
            keep: match size {
                1 if high => !0xff00,
                1 | 2 => !mask,
                _ => 0,
            },
        })
    }

    fn bits(self) -> u32 {
        u32::from(self.size) * 8
    }
}

/// A pre-decoded memory operand: `(disp + base + index << scale) & amask` in segment `seg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemOp {
    pub(crate) seg: u8,
    /// Base and index register numbers (16 = none).
    pub(crate) base: u8,
    pub(crate) index: u8,
    pub(crate) scale: u8,
    /// Operand size in bytes (1..8).
    pub(crate) size: u8,
    pub(crate) disp: u64,
    pub(crate) amask: u64,
}

impl MemOp {
    /// The memory operand of `i` (mirrors `Cpu::ea`), if it has a plain one of 1 to 8 bytes.
    pub(crate) fn of(i: &Instruction, bits: u32) -> Option<Self> {
        let size = i.memory_size().size();
        if !(1..=8).contains(&size) {
            return None;
        }
        Self::address(i, bits, size)
    }

    /// The address computation alone (for LEA); `size` is recorded as given.
    fn address(i: &Instruction, bits: u32, size: usize) -> Option<Self> {
        if !(0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory) {
            return None;
        }
        let base = i.memory_base();
        let index = i.memory_index();
        let seg = crate::cpu::seg_index(i.memory_segment()) as u8;
        let num = |r: Register| -> Option<u8> {
            if r == Register::None {
                Some(16)
            } else {
                Gpr::of(r).filter(|g| g.size >= 2).map(|g| g.idx)
            }
        };
        if base == Register::RIP || base == Register::EIP {
            let disp = i.memory_displacement64();
            let amask = if base == Register::EIP {
                0xffff_ffff
            } else {
                u64::MAX
            };
            return Some(Self {
                seg,
                base: 16,
                index: 16,
                scale: 0,
                size: size as u8,
                disp: disp & amask,
                amask,
            });
        }
        let asize = if base != Register::None {
            if index != Register::None {
                index.size()
            } else {
                base.size()
            }
        } else if index != Register::None {
            index.size()
        } else {
            match i.memory_displ_size() {
                2 => 2,
                4 if bits != 64 => 4,
                _ => 8,
            }
        };
        Some(Self {
            seg,
            base: num(base)?,
            index: num(index)?,
            scale: i.memory_index_scale().trailing_zeros() as u8,
            size: size as u8,
            disp: i.memory_displacement64(),
            amask: match asize {
                2 => 0xffff,
                4 => 0xffff_ffff,
                _ => u64::MAX,
            },
        })
    }
}

/// Two-operand ALU operations with a fast form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AluOp {
    Add,
    Adc,
    Sub,
    Sbb,
    Cmp,
    And,
    Or,
    Xor,
    Test,
}

/// Pre-decoded form of an instruction with a fast path (`Generic`: run `execute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fast {
    Generic,
    AluRR {
        op: AluOp,
        dst: Gpr,
        src: Gpr,
    },
    AluRI {
        op: AluOp,
        dst: Gpr,
        imm: u64,
    },
    IncDec {
        inc: bool,
        r: Gpr,
    },
    MovRR {
        dst: Gpr,
        src: Gpr,
    },
    MovRI {
        dst: Gpr,
        imm: u64,
    },
    /// Loads: MOV, MOVZX, MOVSX (`sign`) from memory.
    Load {
        dst: Gpr,
        m: MemOp,
        sign: bool,
    },
    StoreR {
        m: MemOp,
        src: Gpr,
    },
    StoreI {
        m: MemOp,
        imm: u64,
    },
    AluRM {
        op: AluOp,
        dst: Gpr,
        m: MemOp,
    },
    AluMR {
        op: AluOp,
        m: MemOp,
        src: Gpr,
    },
    AluMI {
        op: AluOp,
        m: MemOp,
        imm: u64,
    },
    Lea {
        dst: Gpr,
        m: MemOp,
    },
    Push {
        src: Gpr,
    },
    Pop {
        dst: Gpr,
    },
    /// Conditional near branch to an already masked (and canonical) target.
    Jcc {
        cc: ConditionCode,
        target: u64,
    },
    /// Unconditional near branch to an already masked (and canonical) target.
    Jmp {
        target: u64,
    },
    /// CMOVcc from a register.
    CmovRR {
        cc: ConditionCode,
        dst: Gpr,
        src: Gpr,
    },
    /// CMOVcc from memory (read whether or not the condition holds).
    CmovRM {
        cc: ConditionCode,
        dst: Gpr,
        m: MemOp,
    },
    /// Shift or rotate of a register by a constant.
    ShiftRI {
        op: Shift,
        r: Gpr,
        count: u8,
    },
    /// Shift or rotate of a register by CL.
    ShiftRCl {
        op: Shift,
        r: Gpr,
    },
    /// Two-operand IMUL with a register source.
    ImulRR {
        dst: Gpr,
        src: Gpr,
    },
    /// Two-operand IMUL with a memory source.
    ImulRM {
        dst: Gpr,
        m: MemOp,
    },
    /// MOVZX, MOVSX (`sign`) and MOVSXD from a register.
    ExtendRR {
        dst: Gpr,
        src: Gpr,
        sign: bool,
    },
    /// SETcc of a byte register.
    SetccR {
        cc: ConditionCode,
        dst: Gpr,
    },
    /// NOT of a register.
    NotR {
        r: Gpr,
    },
    /// NEG of a register.
    NegR {
        r: Gpr,
    },
    /// NOP in any of its encodings (its memory operand, if any, is not accessed), and the
    /// hints that do nothing here: PREFETCHh, PAUSE, ENDBR.
    Nop,
    /// INC or DEC of memory.
    IncDecM {
        inc: bool,
        m: MemOp,
    },
    /// PUSH of an immediate (already sign-extended and masked to `size` bytes).
    PushI {
        imm: u64,
        size: u8,
    },
    /// BSWAP of a 32- or 64-bit register.
    BswapR {
        r: Gpr,
    },
}

impl Fast {
    /// True when the instruction may write memory (and so start a new code epoch).
    fn may_write(&self) -> bool {
        matches!(
            self,
            Fast::Generic
                | Fast::StoreR { .. }
                | Fast::StoreI { .. }
                | Fast::AluMR { .. }
                | Fast::AluMI { .. }
                | Fast::Push { .. }
                | Fast::IncDecM { .. }
                | Fast::PushI { .. }
        )
    }
}

fn alu_op(m: M) -> Option<AluOp> {
    Some(match m {
        M::Add => AluOp::Add,
        M::Adc => AluOp::Adc,
        M::Sub => AluOp::Sub,
        M::Sbb => AluOp::Sbb,
        M::Cmp => AluOp::Cmp,
        M::And => AluOp::And,
        M::Or => AluOp::Or,
        M::Xor => AluOp::Xor,
        M::Test => AluOp::Test,
        _ => return None,
    })
}

/// The fast form of `i`, if it has one. `bits` is the code size.
fn fast_form(i: &Instruction, bits: u32) -> Fast {
    if i.has_lock_prefix() || i.op_count() > 2 {
        return Fast::Generic;
    }
    let reg = |n: u32| {
        if i.op_kind(n) == OpKind::Register {
            Gpr::of(i.op_register(n))
        } else {
            None
        }
    };
    let imm = |n: u32| match i.op_kind(n) {
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Some(i.immediate(n)),
        _ => None,
    };
    let m = i.mnemonic();
    let mem = |n: u32| {
        if i.op_kind(n) == OpKind::Memory {
            MemOp::of(i, bits)
        } else {
            None
        }
    };
    if let Some(op) = alu_op(m) {
        if let Some(dst) = reg(0) {
            if let Some(src) = reg(1) {
                if src.size == dst.size {
                    return Fast::AluRR { op, dst, src };
                }
            } else if let Some(v) = imm(1) {
                return Fast::AluRI {
                    op,
                    dst,
                    imm: v & alu::mask(dst.bits()),
                };
            } else if let Some(mo) = mem(1) {
                if mo.size == dst.size {
                    return Fast::AluRM { op, dst, m: mo };
                }
            }
        } else if let Some(mo) = mem(0) {
            if let Some(src) = reg(1) {
                if src.size == mo.size {
                    return Fast::AluMR { op, m: mo, src };
                }
            } else if let Some(v) = imm(1) {
                return Fast::AluMI {
                    op,
                    m: mo,
                    imm: v & alu::mask(u32::from(mo.size) * 8),
                };
            }
        }
        return Fast::Generic;
    }
    match m {
        M::Mov => match (reg(0), reg(1), imm(1), mem(0), mem(1)) {
            (Some(dst), Some(src), ..) if src.size == dst.size => Fast::MovRR { dst, src },
            (Some(dst), None, Some(v), ..) => Fast::MovRI {
                dst,
                imm: v & alu::mask(dst.bits()),
            },
            (Some(dst), None, None, None, Some(mo)) if mo.size == dst.size => Fast::Load {
                dst,
                m: mo,
                sign: false,
            },
            (None, Some(src), _, Some(mo), None) if mo.size == src.size => {
                Fast::StoreR { m: mo, src }
            }
            (None, None, Some(v), Some(mo), None) => Fast::StoreI {
                m: mo,
                imm: v & alu::mask(u32::from(mo.size) * 8),
            },
            _ => Fast::Generic,
        },
        M::Movzx | M::Movsx | M::Movsxd => match (reg(0), reg(1), mem(1)) {
            (Some(dst), None, Some(mo)) if mo.size <= dst.size => Fast::Load {
                dst,
                m: mo,
                sign: m != M::Movzx,
            },
            (Some(dst), Some(src), None) if src.size <= dst.size => Fast::ExtendRR {
                dst,
                src,
                sign: m != M::Movzx,
            },
            _ => Fast::Generic,
        },
        M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg => match reg(0) {
            Some(dst) => Fast::SetccR {
                cc: i.condition_code(),
                dst,
            },
            None => Fast::Generic,
        },
        M::Not if i.op_count() == 1 => reg(0).map_or(Fast::Generic, |r| Fast::NotR { r }),
        M::Neg if i.op_count() == 1 => reg(0).map_or(Fast::Generic, |r| Fast::NegR { r }),
        M::Nop
        | M::Pause
        | M::Endbr32
        | M::Endbr64
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw => Fast::Nop,
        M::Bswap => match reg(0) {
            Some(r) if r.size >= 4 => Fast::BswapR { r },
            _ => Fast::Generic,
        },
        // Sign extensions within the accumulator: MOVSX forms.
        M::Cbw | M::Cwde | M::Cdqe => {
            let (dst, src) = match m {
                M::Cbw => (Register::AX, Register::AL),
                M::Cwde => (Register::EAX, Register::AX),
                _ => (Register::RAX, Register::EAX),
            };
            match (Gpr::of(dst), Gpr::of(src)) {
                (Some(dst), Some(src)) => Fast::ExtendRR {
                    dst,
                    src,
                    sign: true,
                },
                _ => Fast::Generic,
            }
        }
        M::Lea => match (reg(0), MemOp::address(i, bits, 0)) {
            (Some(dst), Some(mo)) if dst.size >= 2 => Fast::Lea { dst, m: mo },
            _ => Fast::Generic,
        },
        M::Push if i.op_count() == 1 => match (reg(0), imm(0)) {
            (Some(src), _)
                if src.size >= 2 && i.stack_pointer_increment() == -(src.size as i32) =>
            {
                Fast::Push { src }
            }
            (None, Some(v)) if matches!(i.stack_pointer_increment(), -2 | -4 | -8) => {
                let size = -i.stack_pointer_increment() as u8;
                Fast::PushI {
                    imm: v & alu::mask(u32::from(size) * 8),
                    size,
                }
            }
            _ => Fast::Generic,
        },
        M::Pop if i.op_count() == 1 => match reg(0) {
            Some(dst) if dst.size >= 2 && i.stack_pointer_increment() == dst.size as i32 => {
                Fast::Pop { dst }
            }
            _ => Fast::Generic,
        },
        M::Inc | M::Dec if i.op_count() == 1 => match (reg(0), mem(0)) {
            (Some(r), _) => Fast::IncDec {
                inc: m == M::Inc,
                r,
            },
            (None, Some(mo)) => Fast::IncDecM {
                inc: m == M::Inc,
                m: mo,
            },
            _ => Fast::Generic,
        },
        M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => {
            let cc = i.condition_code();
            match (reg(0), reg(1), mem(1)) {
                (Some(dst), Some(src), _) if src.size == dst.size => Fast::CmovRR { cc, dst, src },
                (Some(dst), None, Some(mo)) if mo.size == dst.size => {
                    Fast::CmovRM { cc, dst, m: mo }
                }
                _ => Fast::Generic,
            }
        }
        M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Shr | M::Sal | M::Sar => {
            let op = match m {
                M::Rol => Shift::Rol,
                M::Ror => Shift::Ror,
                M::Rcl => Shift::Rcl,
                M::Rcr => Shift::Rcr,
                M::Shl => Shift::Shl,
                M::Sal => Shift::Sal,
                M::Shr => Shift::Shr,
                _ => Shift::Sar,
            };
            let Some(r) = reg(0) else {
                return Fast::Generic;
            };
            if i.op_count() == 1 {
                Fast::ShiftRI { op, r, count: 1 }
            } else if let Some(v) = imm(1) {
                Fast::ShiftRI {
                    op,
                    r,
                    count: v as u8,
                }
            } else if i.op_kind(1) == OpKind::Register && i.op_register(1) == Register::CL {
                Fast::ShiftRCl { op, r }
            } else {
                Fast::Generic
            }
        }
        M::Imul if i.op_count() == 2 => match (reg(0), reg(1), mem(1)) {
            (Some(dst), Some(src), _) if src.size == dst.size => Fast::ImulRR { dst, src },
            (Some(dst), None, Some(mo)) if mo.size == dst.size => Fast::ImulRM { dst, m: mo },
            _ => Fast::Generic,
        },
        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg
        | M::Jmp => {
            let mask = match i.op_kind(0) {
                OpKind::NearBranch16 => 0xffff,
                OpKind::NearBranch32 => 0xffff_ffff,
                OpKind::NearBranch64 => u64::MAX,
                _ => return Fast::Generic,
            };
            let mask = if bits == 64 { u64::MAX } else { mask };
            let target = i.near_branch_target() & mask;
            if bits == 64 && !crate::mmu::canonical(target) {
                return Fast::Generic;
            }
            if m == M::Jmp {
                Fast::Jmp { target }
            } else {
                Fast::Jcc {
                    cc: i.condition_code(),
                    target,
                }
            }
        }
        _ => Fast::Generic,
    }
}

/// How the block goes on after `i`.
fn flow_of(i: &Instruction) -> Flow {
    // Segment, control and debug registers as operands change (or depend on) the mode.
    for n in 0..i.op_count() {
        if i.op_kind(n) == OpKind::Register {
            let r = i.op_register(n);
            if r.is_segment_register() || r.is_cr() || r.is_dr() {
                return Flow::Exit;
            }
        }
    }
    let far = |i: &Instruction| {
        matches!(i.op0_kind(), OpKind::FarBranch16 | OpKind::FarBranch32)
            || (i.op0_kind() == OpKind::Memory
                && matches!(
                    i.memory_size(),
                    iced_x86::MemorySize::SegPtr16
                        | iced_x86::MemorySize::SegPtr32
                        | iced_x86::MemorySize::SegPtr64
                ))
    };
    match i.mnemonic() {
        M::Jmp | M::Call if far(i) => Flow::Exit,
        M::Jmp | M::Call | M::Ret => Flow::End,
        M::Nop
        | M::Pause
        | M::Lfence
        | M::Mfence
        | M::Sfence
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Endbr32
        | M::Endbr64
        | M::Mov
        | M::Movzx
        | M::Movsx
        | M::Movsxd
        | M::Lea
        | M::Xchg
        | M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg
        | M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg
        | M::Bswap
        | M::Xlatb
        | M::Push
        | M::Pop
        | M::Pushf
        | M::Pushfd
        | M::Pushfq
        | M::Pusha
        | M::Pushad
        | M::Popa
        | M::Popad
        | M::Enter
        | M::Leave
        | M::Add
        | M::Adc
        | M::Sub
        | M::Sbb
        | M::Cmp
        | M::And
        | M::Or
        | M::Xor
        | M::Test
        | M::Inc
        | M::Dec
        | M::Neg
        | M::Not
        | M::Rol
        | M::Ror
        | M::Rcl
        | M::Rcr
        | M::Shl
        | M::Shr
        | M::Sal
        | M::Sar
        | M::Shld
        | M::Shrd
        | M::Mul
        | M::Imul
        | M::Div
        | M::Idiv
        | M::Bt
        | M::Bts
        | M::Btr
        | M::Btc
        | M::Bsf
        | M::Bsr
        | M::Tzcnt
        | M::Lzcnt
        | M::Cbw
        | M::Cwde
        | M::Cdqe
        | M::Cwd
        | M::Cdq
        | M::Cqo
        | M::Cmpxchg
        | M::Cmpxchg8b
        | M::Cmpxchg16b
        | M::Xadd
        | M::Clc
        | M::Stc
        | M::Cmc
        // Disabling interrupts makes none deliverable: nothing to ask the stop condition.
        | M::Cli
        | M::Cld
        | M::Std
        | M::Lahf
        | M::Sahf
        | M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg
        | M::Jcxz
        | M::Jecxz
        | M::Jrcxz
        | M::Loop
        | M::Loope
        | M::Loopne
        | M::Movsb
        | M::Movsw
        | M::Movsq
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Stosq
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd
        | M::Lodsq
        | M::Cmpsb
        | M::Cmpsw
        | M::Cmpsq
        | M::Scasb
        | M::Scasw
        | M::Scasd
        | M::Scasq => Flow::Next,
        // MOVSD/CMPSD are also SSE2 mnemonics; the string forms have implicit operands.
        M::Movsd | M::Cmpsd if !matches!(i.op0_kind(), OpKind::Register | OpKind::Memory) => {
            Flow::Next
        }
        _ if fpu_or_simd(i) => Flow::Next,
        _ => Flow::Exit,
    }
}

/// True for x87, MMX and SSE instructions (FXSAVE/FXRSTOR included): they change nothing the
/// block engine or the stop condition depends on.
fn fpu_or_simd(i: &Instruction) -> bool {
    use iced_x86::CpuidFeature as F;
    let f = i.cpuid_features();
    !f.is_empty()
        && f.iter().all(|x| {
            matches!(
                x,
                F::FPU
                    | F::FPU287
                    | F::FPU387
                    | F::MMX
                    | F::SSE
                    | F::SSE2
                    | F::SSE3
                    | F::SSSE3
                    | F::SSE4_1
                    | F::SSE4_2
                    | F::FXSR
            )
        })
}

/// The block engine's form of the decoded instruction `insn` of `bits`-bit code.
pub(crate) fn decoded(insn: Instruction, bits: u32) -> Decoded {
    let fast = fast_form(&insn, bits);
    let flow = match flow_of(&insn) {
        Flow::Next if fast.may_write() => Flow::NextAfterStore,
        Flow::Next if !matches!(fast, Fast::Generic | Fast::Jcc { .. }) => Flow::Straight,
        f => f,
    };
    Decoded {
        insn,
        next: insn.next_ip(),
        flow,
        fast,
    }
}

impl Cpu {
    /// Runs instructions until `budget` of them executed, the processor halts or shuts down,
    /// or `stop` returns true. `stop` is asked after every instruction that may have changed
    /// whether interrupts are deliverable (the interrupt flag, the interrupt shadow), after
    /// faults, and otherwise at least every 8192 instructions.
    ///
    /// Returns [`Step::Executed`] when the budget ran out or `stop` asked to stop. Without a
    /// code tracker every instruction goes through [`Cpu::step`].
    pub fn run(
        &mut self,
        bus: &mut dyn Bus,
        budget: u32,
        stop: &mut dyn FnMut(&Cpu) -> bool,
    ) -> Step {
        let Some(tracker) = self.code.clone() else {
            for _ in 0..budget {
                match self.step(bus) {
                    Step::Executed => {
                        if stop(self) {
                            break;
                        }
                    }
                    s => return s,
                }
            }
            return Step::Executed;
        };
        let mut left = i64::from(budget);
        // Where the previous block ran; valid while only block-continuing instructions ran
        // (same mode, segments, paging and TLB).
        let mut ctx: Option<FetchCtx> = None;
        // Status flags of the last ALU fast form, pending across blocks; written to RFLAGS
        // before anything outside the block engine can look (see `Lazy`).
        let mut lz = Lazy::NONE;
        self.check_ram_regions(bus);
        let step = self.run_blocks(bus, &tracker, &mut left, &mut ctx, &mut lz, stop);
        self.settle(&mut lz);
        step
    }

    /// The loop of [`Cpu::run`].
    fn run_blocks(
        &mut self,
        bus: &mut dyn Bus,
        tracker: &crate::cache::CodeTracker,
        left: &mut i64,
        ctx: &mut Option<FetchCtx>,
        lz: &mut Lazy,
        stop: &mut dyn FnMut(&Cpu) -> bool,
    ) -> Step {
        let mut unchecked = 0u32;
        // Valid together with `ctx` (recomputed whenever a block is looked up the full way).
        let mut view = self.data_view();
        // The link slot (plus one), code generation and link stamp of the way out the last
        // block's native code took: filled when the next block has native code for the same
        // data view.
        let mut link = Link::default();
        // The number of `view` (see `view_number`), valid while the numbering's epoch is
        // this one.
        let mut number = (u64::MAX, 0u64);
        while *left > 0 {
            if self.state.wait_for_sipi || self.state.halted {
                return Step::Halted;
            }
            let epoch = tracker.epoch();
            let stamp = self.link_stamp(epoch);
            let mut pending = std::mem::take(&mut link);
            let idx = if self.state.interrupt_shadow {
                None
            } else if let Some(i) = ctx.and_then(|c| self.block_in_page(c, bus, epoch)) {
                Some(i)
            } else {
                // While a fetch context holds, only block-continuing instructions ran since the
                // view was made (the same reason the in-page path keeps it), and the bus lends
                // the same RAM for the whole run: only a new page needs the full lookup.
                let view_holds = ctx.is_some();
                match self.block_for_rip(bus, epoch) {
                    Some((i, c)) => {
                        *ctx = c;
                        if !view_holds {
                            let new = self.data_view();
                            if !new.same(&view) {
                                pending.slot = 0;
                                number.0 = u64::MAX;
                            }
                            view = new;
                            self.check_ram_regions(bus);
                        }
                        Some(i)
                    }
                    None => None,
                }
            };
            let Some(idx) = idx else {
                // One instruction the slow way: it raises the fetch fault, crosses a page,
                // or ends an interrupt shadow.
                *left -= 1;
                self.settle(lz);
                match self.step(bus) {
                    Step::Executed => {}
                    s => return s,
                }
                *ctx = None;
                unchecked = 0;
                if stop(self) {
                    break;
                }
                continue;
            };
            self.renumber_view(&view, &mut number);
            let native = self.native_for(idx, &view, number);
            // A new code generation numbers the views anew.
            self.renumber_view(&view, &mut number);
            if let Some(n) = native.filter(|_| pending.slot != 0 && pending.stamp == stamp) {
                self.link(pending, n, number.1);
            }
            let chain = i64::from(CHECK_INTERVAL.saturating_sub(unchecked)).min(*left);
            let insns = std::mem::take(&mut self.blocks.blocks[idx].insns);
            let (done, exit, slot) = self.run_block(
                &insns, native, chain, &view, number.1, bus, tracker, epoch, stamp, lz,
            );
            self.blocks.blocks[idx].insns = insns;
            link = Link {
                slot,
                gen: self.native_gen,
                stamp,
            };
            *left -= i64::from(done);
            unchecked += done;
            match exit {
                BlockExit::Continue => {
                    if unchecked < CHECK_INTERVAL {
                        continue;
                    }
                }
                BlockExit::Check => *ctx = None,
                BlockExit::Halted => return Step::Halted,
                BlockExit::TripleFault => return Step::TripleFault,
            }
            unchecked = 0;
            self.settle(lz);
            if stop(self) {
                break;
            }
        }
        Step::Executed
    }

    /// The block at CS:RIP when RIP is still in the code page of `c`: no segment checks or
    /// translation beyond the CS limit. `None` sends the caller to the full lookup.
    #[inline]
    fn block_in_page(&mut self, c: FetchCtx, bus: &mut dyn Bus, epoch: u64) -> Option<usize> {
        let ip = self.state.rip;
        let lin = if c.bits == 64 {
            ip
        } else {
            c.base.wrapping_add(ip) & 0xffff_ffff
        };
        if lin >> 12 != c.lin_page || c.changes != self.tlb.changes() {
            return None;
        }
        let phys = c.phys_page | (lin & 0xfff);
        let idx = BlockCache::index(phys);
        let tag = BlockCache::tag(phys, c.bits);
        let b = &self.blocks.blocks[idx];
        if !(b.tag == tag && b.epoch == epoch && b.ip == ip) {
            self.decode_block(idx, tag, epoch, phys, c.bits, bus);
        }
        let b = &self.blocks.blocks[idx];
        if b.insns.is_empty() || (c.bits != 64 && ip + b.bytes - 1 > c.limit) {
            return None;
        }
        Some(idx)
    }

    /// The cached block starting at CS:RIP (decoding it when needed) and the context for
    /// [`Cpu::block_in_page`]; `None` when the current instruction must go through
    /// [`Cpu::step`].
    fn block_for_rip(
        &mut self,
        bus: &mut dyn Bus,
        epoch: u64,
    ) -> Option<(usize, Option<FetchCtx>)> {
        let ip = self.state.rip;
        let bits = self.state.bitness();
        let lin = self.linear(seg::CS, ip, 1, Access::Fetch).ok()?;
        let user = self.state.cpl() == 3;
        let phys = self.translate(lin, Access::Fetch, user, bus).ok()?;
        let idx = BlockCache::index(phys);
        let tag = BlockCache::tag(phys, bits);
        let b = &self.blocks.blocks[idx];
        if !(b.tag == tag && b.epoch == epoch && b.ip == ip) {
            self.decode_block(idx, tag, epoch, phys, bits, bus);
        }
        let b = &self.blocks.blocks[idx];
        if b.insns.is_empty() {
            return None;
        }
        // The whole block within the CS limit (else the slow path faults at the right one).
        self.linear(seg::CS, ip, b.bytes, Access::Fetch).ok()?;
        let cs = &self.state.seg[seg::CS];
        let ctx = FetchCtx {
            bits,
            base: cs.base,
            limit: u64::from(cs.limit),
            lin_page: lin >> 12,
            phys_page: phys & !0xfff,
            changes: self.tlb.changes(),
        };
        // Only a plain expand-up view of CS lets the fast path check the limit by itself.
        let plain = bits == 64
            || (lin == cs.base.wrapping_add(ip) & 0xffff_ffff && (ip + b.bytes - 1) <= ctx.limit);
        Some((idx, plain.then_some(ctx)))
    }

    fn decode_block(
        &mut self,
        idx: usize,
        tag: u64,
        epoch: u64,
        phys: u64,
        bits: u32,
        bus: &mut dyn Bus,
    ) {
        let ip = self.state.rip;
        // Mark before reading so that a concurrent write invalidates what is decoded.
        if !self.code.as_ref().is_some_and(|t| t.mark(phys)) {
            // Untracked memory: no block (the caller steps).
            let b = &mut self.blocks.blocks[idx];
            b.insns.clear();
            b.raw.clear();
            b.native = None;
            b.tag = tag;
            b.epoch = epoch;
            b.ip = ip;
            b.bytes = 0;
            return;
        }
        let avail = ((0x1000 - (phys & 0xfff)) as usize).min(BLOCK_MAX * 15);
        let mut bytes = [0u8; BLOCK_MAX * 15];
        crate::mmu::phys_read(phys, &mut bytes[..avail], bus);
        let b = &mut self.blocks.blocks[idx];
        // A write elsewhere started the new epoch: the block stands (with its host code) when
        // its bytes are unchanged.
        if b.tag == tag
            && b.ip == ip
            && !b.insns.is_empty()
            && bytes.get(..b.raw.len()) == Some(&b.raw[..])
        {
            b.epoch = epoch;
            return;
        }
        let mut insns = std::mem::take(&mut b.insns);
        insns.clear();
        let mut bytes_len = 0;
        let ip_limit = match bits {
            16 => 0x1_0000u64,
            32 => 0x1_0000_0000,
            _ => u64::MAX,
        };
        let mut d = Decoder::with_ip(bits, &bytes[..avail], ip, DecoderOptions::NO_INVALID_CHECK);
        let mut insn = Instruction::default();
        while insns.len() < BLOCK_MAX && d.can_decode() {
            d.decode_out(&mut insn);
            // Invalid or cut off by the page end: left to the slow path.
            if insn.is_invalid() || d.last_error() != iced_x86::DecoderError::None {
                break;
            }
            // Instructions past the end of a 16/32-bit code segment's offset space wrap.
            let end = insn.ip().wrapping_add(insn.len() as u64);
            if insn.next_ip() != end || (bits != 64 && end >= ip_limit) {
                break;
            }
            let d = decoded(insn, bits);
            insns.push(d);
            bytes_len = insn.next_ip() - ip;
            if matches!(d.flow, Flow::End | Flow::Exit) {
                break;
            }
        }
        let b: &mut Block = &mut self.blocks.blocks[idx];
        b.runs = 0;
        b.native = None;
        b.raw.clear();
        b.raw.extend_from_slice(&bytes[..bytes_len as usize]);
        b.tag = tag;
        b.epoch = epoch;
        b.ip = ip;
        b.bytes = bytes_len;
        b.insns = insns;
    }

    /// The link stamp for code epoch `epoch` and the current translations.
    #[inline]
    fn link_stamp(&mut self, epoch: u64) -> u64 {
        let basis = (epoch, self.tlb.changes());
        if basis != self.link_basis {
            self.link_basis = basis;
            self.link_stamp += 1;
            self.unlink_all();
        }
        self.link_stamp
    }

    /// Points the JMP of every linked slot back at its way out.
    fn unlink_all(&mut self) {
        let Some(code) = self.native.as_mut() else {
            return;
        };
        for s in self.native_linked.drain(..) {
            if let Some(slot) = self.native_links.get_mut(s) {
                code.patch(slot[1], 0);
                slot[0] = u64::MAX;
            }
        }
    }

    /// Points the slot of `link` (or, for [`JUMPED`], the jump cache entry of the current RIP)
    /// at the first instruction of `target`, if the slot is of the current code generation
    /// and the code starts there.
    fn link(&mut self, link: Link, target: NativeBlock, number: u64) {
        if link.gen != self.native_gen || target.gen != link.gen || target.entries & 1 == 0 {
            return;
        }
        let Some(address) = self.native.as_ref().map(|c| c.address(target.handle)) else {
            return;
        };
        if link.slot == JUMPED {
            let rip = self.state.rip;
            if let Some(e) = self.native_jumps.get_mut(native::jump_index(rip)) {
                *e = [rip, link.stamp, number, address];
            }
            return;
        }
        let Some(s) = usize::try_from(link.slot - 1).ok() else {
            return;
        };
        let Some(slot) = self.native_links.get_mut(s) else {
            return;
        };
        // Linked in this stamp already (to code for the same bytes).
        if slot[0] == link.stamp {
            return;
        }
        let rel = (address as i64).wrapping_sub(slot[1].wrapping_add(5) as i64);
        let Ok(rel) = i32::try_from(rel) else {
            return;
        };
        let Some(code) = self.native.as_mut() else {
            return;
        };
        code.patch(slot[1], rel);
        slot[0] = link.stamp;
        self.native_linked.push(s);
    }

    /// Brings `held` (a numbering epoch and the number of `view` in it) to the current epoch.
    fn renumber_view(&mut self, view: &DataView, held: &mut (u64, u64)) {
        if held.0 != self.view_epoch {
            let number = self.view_number(view);
            *held = (self.view_epoch, number);
        }
    }

    /// The number of `view` among the CPU's views (for the jump cache). When they are many,
    /// the numbering starts over and the jump cache is emptied.
    fn view_number(&mut self, view: &DataView) -> u64 {
        if let Some((v, gen, number)) = &self.native_view {
            if *gen == self.native_gen && v.same(view) {
                return *number;
            }
        }
        let number = match self.native_views.iter().position(|v| v.same(view)) {
            Some(i) => i,
            None => {
                if self.native_views.len() >= MAX_VIEWS {
                    self.native_views.clear();
                    self.view_epoch += 1;
                    for e in &mut self.native_jumps {
                        e[1] = u64::MAX;
                    }
                }
                self.native_views.push(*view);
                self.native_views.len() - 1
            }
        } as u64;
        self.native_view = Some((*view, self.native_gen, number));
        number
    }

    /// The block's host code for `view`, translating the block once it ran often enough;
    /// `None` when there is no code memory or the block has no native form.
    /// `number`: the numbering epoch and number of `view` (a block found valid for that
    /// number before needs no comparison of views).
    fn native_for(
        &mut self,
        idx: usize,
        view: &DataView,
        number: (u64, u64),
    ) -> Option<NativeBlock> {
        let gen = self.native_gen;
        let code = self.native.as_mut()?;
        let b = &mut self.blocks.blocks[idx];
        let id = number
            .0
            .wrapping_mul(MAX_VIEWS as u64)
            .wrapping_add(number.1)
            + 1;
        if let Some(n) = &mut b.native {
            if n.gen == gen && (n.checked == id || n.view.same(&view.only(n.segs))) {
                n.checked = id;
                return Some(*n);
            }
        }
        if b.runs == u32::MAX {
            return None;
        }
        if b.runs < self.native_threshold {
            b.runs += 1;
            return None;
        }
        let bits = match (b.tag.wrapping_sub(1)) & 3 {
            0 => 16,
            1 => 32,
            _ => 64,
        };
        let first_link = u32::try_from(self.native_links.len()).ok()?;
        let Some(mut c) = crate::native::compile(&b.insns, view, bits, first_link) else {
            // Not again until the block is decoded anew.
            b.runs = u32::MAX;
            return None;
        };
        b.runs = 0;
        let installed = if self.native_links.len() < MAX_LINKS {
            code.install(&c.code)
        } else {
            None
        };
        let handle = match installed {
            Some(h) => h,
            None => {
                // Full: start over with the blocks that run from now on.
                code.clear();
                self.new_native_generation();
                let b = &self.blocks.blocks[idx];
                c = crate::native::compile(&b.insns, view, bits, 0)?;
                self.native.as_mut()?.install(&c.code)?
            }
        };
        let base = self.native.as_ref().map_or(0, |code| code.address(handle));
        self.native_links
            .extend(c.sites.iter().map(|&at| [u64::MAX, base + at as u64]));
        let n = NativeBlock {
            gen: self.native_gen,
            handle,
            entries: c.entries,
            dispatch: c.dispatch,
            view: view.only(c.segs),
            segs: c.segs,
            checked: id,
        };
        self.blocks.blocks[idx].native = Some(n);
        Some(n)
    }

    /// Runs the host code of a block from instruction `pos`, following links while `chain`
    /// instructions last.
    #[allow(clippy::too_many_arguments)]
    fn run_native(
        &mut self,
        n: NativeBlock,
        pos: usize,
        chain: i64,
        number: u64,
        tracker: &crate::cache::CodeTracker,
        stamp: u64,
        lz: &mut Lazy,
    ) -> NativeRun {
        self.settle(lz);
        let mut f = NativeFrame {
            gpr: self.state.gpr.as_mut_ptr() as usize,
            ram: self.tlb.ram_table(),
            flags: native::flags_to_frame(self.state.rflags),
            stamp,
            chain,
            jumps: self.native_jumps.as_ptr() as usize,
            view: number,
            pos: pos as u64,
            ..NativeFrame::default()
        };
        let offset = if pos == 0 { 0 } else { n.dispatch };
        if let Some(code) = self.native.as_mut() {
            code.call(n.handle, offset, &mut f);
        }
        self.state.rflags = (self.state.rflags & !STATUS) | native::flags_from_frame(f.flags);
        let completed = chain
            .wrapping_sub(f.chain)
            .wrapping_add(f.done as i64)
            .clamp(0, i64::from(u32::MAX)) as u32;
        let exit = match f.exit {
            native::EXIT_LEFT => NativeExit::Left { link: f.link },
            native::EXIT_JUMP => NativeExit::Left { link: JUMPED },
            native::EXIT_CODE_WRITE => {
                tracker.note_write(f.note, 1);
                NativeExit::Left { link: 0 }
            }
            _ => NativeExit::Resume {
                start: f.start,
                done: f.done as usize,
            },
        };
        NativeRun {
            completed,
            rip: f.rip,
            exit,
        }
    }

    /// Executes a block from its first instruction, in its host code where it has some and
    /// otherwise in the interpreter; returns how many instructions completed (in blocks
    /// linked to as well), why it stopped and the link slot (plus one, 0: none) of the way out
    /// its host code took.
    ///
    /// Fast forms do not look at `state.rip` (their addresses and branch targets are
    /// pre-decoded), so RIP is carried in a local and written back before anything else runs:
    /// a generic instruction, a fault's delivery, the end of the block.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run_block(
        &mut self,
        insns: &[Decoded],
        native: Option<NativeBlock>,
        chain: i64,
        view: &DataView,
        number: u64,
        bus: &mut dyn Bus,
        tracker: &crate::cache::CodeTracker,
        epoch: u64,
        stamp: u64,
        lz: &mut Lazy,
    ) -> (u32, BlockExit, u64) {
        let mut done = 0u32;
        let mut pos = 0usize;
        let mut rip = self.state.rip;
        let start = rip;
        loop {
            if let Some(n) = native.filter(|n| pos < 64 && n.entries & (1 << pos) != 0) {
                let r =
                    self.run_native(n, pos, chain - i64::from(done), number, tracker, stamp, lz);
                done = done.saturating_add(r.completed);
                rip = r.rip;
                match r.exit {
                    NativeExit::Left { link } => {
                        self.state.rip = rip;
                        return (done, BlockExit::Continue, link);
                    }
                    NativeExit::Resume { start: s, done: at } => {
                        if s != start || insns.get(at).is_none_or(|d| d.insn.ip() != rip) {
                            // In a block linked to: the lookup finds the block at `rip`.
                            self.state.rip = rip;
                            return (done, BlockExit::Continue, 0);
                        }
                        pos = at;
                    }
                }
            }
            let Some(d) = insns.get(pos) else {
                break;
            };
            pos += 1;
            let r = self.exec_decoded(d, rip, view, lz, bus);
            let next = match r {
                Ok(next) => next,
                Err(f) => {
                    self.settle(lz);
                    self.state.rip = rip;
                    self.insn_start = rip;
                    // As in `step`: a shadow the faulting instruction set still applies.
                    if self.new_shadow {
                        self.state.interrupt_shadow = true;
                    }
                    if f.vector == RETRY {
                        // Another processor changed the locked operand: run the instruction again.
                        return (done, BlockExit::Check, 0);
                    }
                    if f.vector == 6 {
                        tracing::debug!(
                            rip = format_args!("{:#x}", rip),
                            code = ?d.insn.code(),
                            "#UD"
                        );
                    }
                    return match self.raise(f, bus) {
                        Step::TripleFault => (done, BlockExit::TripleFault, 0),
                        _ => (done + 1, BlockExit::Check, 0),
                    };
                }
            };
            rip = next;
            done += 1;
            match d.flow {
                Flow::Straight => {}
                Flow::Next => {
                    if rip != d.next {
                        self.state.rip = rip;
                        return (done, BlockExit::Continue, 0);
                    }
                }
                Flow::NextAfterStore => {
                    // Only an instruction that writes memory can start a new code epoch
                    // itself; another processor's write is seen at the next store or block.
                    if rip != d.next || tracker.epoch() != epoch {
                        self.state.rip = rip;
                        return (done, BlockExit::Continue, 0);
                    }
                }
                Flow::End => {
                    self.state.rip = rip;
                    return (done, BlockExit::Continue, 0);
                }
                Flow::Exit => {
                    self.state.rip = rip;
                    self.settle(lz);
                    // Blocks start only outside an interrupt shadow (see `run`).
                    if self.new_shadow {
                        self.state.interrupt_shadow = true;
                    }
                    if self.state.halted {
                        return (done, BlockExit::Halted, 0);
                    }
                    return (done, BlockExit::Check, 0);
                }
            }
        }
        self.state.rip = rip;
        (done, BlockExit::Continue, 0)
    }

    #[inline(always)]
    fn gpr_get(&self, g: Gpr) -> u64 {
        (self.state.gpr[usize::from(g.idx & 15)] >> g.shift) & g.mask
    }

    #[inline(always)]
    fn gpr_set(&mut self, g: Gpr, value: u64) {
        let slot = &mut self.state.gpr[usize::from(g.idx & 15)];
        *slot = (*slot & g.keep) | ((value & g.mask) << g.shift);
    }

    /// A two-operand ALU operation: records its status flags in `lz` (ADC and SBB, which read
    /// CF, set them at once), returns the result when it is written back (not for CMP and
    /// TEST).
    #[inline(always)]
    fn alu_fast(&mut self, lz: &mut Lazy, op: AluOp, bits: u32, a: u64, b: u64) -> Option<u64> {
        let m = alu::mask(bits);
        let (a, b) = (a & m, b & m);
        let r = match op {
            AluOp::Add => {
                *lz = Lazy::new(LazyOp::Add, bits, a, b);
                a.wrapping_add(b) & m
            }
            AluOp::Sub => {
                *lz = Lazy::new(LazyOp::Sub, bits, a, b);
                a.wrapping_sub(b) & m
            }
            AluOp::Cmp => {
                *lz = Lazy::new(LazyOp::Sub, bits, a, b);
                return None;
            }
            AluOp::And | AluOp::Test => {
                let r = a & b;
                *lz = Lazy::new(LazyOp::Logic, bits, r, 0);
                if op == AluOp::Test {
                    return None;
                }
                r
            }
            AluOp::Or => {
                let r = a | b;
                *lz = Lazy::new(LazyOp::Logic, bits, r, 0);
                r
            }
            AluOp::Xor => {
                let r = a ^ b;
                *lz = Lazy::new(LazyOp::Logic, bits, r, 0);
                r
            }
            AluOp::Adc | AluOp::Sbb => {
                self.settle(lz);
                let carry = self.state.rflags & CF != 0;
                let (r, f) = if op == AluOp::Adc {
                    alu::add(bits, a, b, carry)
                } else {
                    alu::sub(bits, a, b, carry)
                };
                self.set_flags(STATUS, f);
                r
            }
        };
        Some(r)
    }

    /// Writes the status flags recorded in `lz` to RFLAGS (with the same `alu` functions the
    /// generic path uses, so the result is exact) and clears it.
    #[inline(always)]
    fn settle(&mut self, lz: &mut Lazy) {
        if lz.op != LazyOp::None {
            self.settle_pending(lz);
        }
    }

    #[inline(never)]
    fn settle_pending(&mut self, lz: &mut Lazy) {
        let bits = u32::from(lz.bits);
        let f = match lz.op {
            LazyOp::None => return,
            LazyOp::Add => alu::add(bits, lz.a, lz.b, false).1,
            LazyOp::Sub => alu::sub(bits, lz.a, lz.b, false).1,
            LazyOp::Logic => alu::logic(bits, lz.a),
            LazyOp::Inc => alu::inc(bits, lz.a, lz.b * CF).1,
            LazyOp::Dec => alu::dec(bits, lz.a, lz.b * CF).1,
            LazyOp::Shl | LazyOp::Shr | LazyOp::Sar => self.lazy_shift_flags(lz),
        };
        self.set_flags(STATUS, f);
        *lz = Lazy::NONE;
    }

    /// CF as the operation recorded in `lz` (or RFLAGS, with nothing pending) leaves it.
    #[inline(always)]
    fn lazy_cf(&self, lz: &Lazy) -> bool {
        match lz.op {
            LazyOp::None => self.state.rflags & CF != 0,
            LazyOp::Add => lz.a.wrapping_add(lz.b) & alu::mask(u32::from(lz.bits)) < lz.a,
            LazyOp::Sub => lz.a < lz.b,
            LazyOp::Logic => false,
            LazyOp::Inc | LazyOp::Dec => lz.b != 0,
            LazyOp::Shl | LazyOp::Shr | LazyOp::Sar => self.lazy_shift_flags(lz) & CF != 0,
        }
    }

    /// The status flags of a pending shift (a non-zero count writes all of them).
    fn lazy_shift_flags(&self, lz: &Lazy) -> u64 {
        let op = match lz.op {
            LazyOp::Shl => Shift::Shl,
            LazyOp::Shr => Shift::Shr,
            _ => Shift::Sar,
        };
        alu::shift(op, u32::from(lz.bits), lz.a, lz.b as u8, 0).1
    }

    /// Evaluates a condition against the flags recorded in `lz` without writing them where
    /// the operation allows it; otherwise settles them first.
    #[inline(always)]
    fn cond_lazy(&mut self, lz: &mut Lazy, cc: ConditionCode) -> bool {
        use ConditionCode as C;
        let bits = u32::from(lz.bits);
        match lz.op {
            LazyOp::None => return self.cond_fast(cc),
            LazyOp::Sub => {
                let (a, b) = (lz.a, lz.b);
                let (sa, sb) = (
                    alu::sign_extend(a, bits) as i64,
                    alu::sign_extend(b, bits) as i64,
                );
                match cc {
                    C::e => return a == b,
                    C::ne => return a != b,
                    C::b => return a < b,
                    C::ae => return a >= b,
                    C::be => return a <= b,
                    C::a => return a > b,
                    C::l => return sa < sb,
                    C::ge => return sa >= sb,
                    C::le => return sa <= sb,
                    C::g => return sa > sb,
                    _ => {}
                }
            }
            LazyOp::Logic => {
                let zf = lz.a == 0;
                let sf = lz.a & alu::sign_bit(bits) != 0;
                match cc {
                    C::e | C::be => return zf,
                    C::ne | C::a => return !zf,
                    C::s | C::l => return sf,
                    C::ns | C::ge => return !sf,
                    C::le => return zf || sf,
                    C::g => return !zf && !sf,
                    C::b | C::o => return false,
                    C::ae | C::no => return true,
                    _ => {}
                }
            }
            LazyOp::Shl | LazyOp::Shr | LazyOp::Sar => {}
            LazyOp::Add | LazyOp::Inc | LazyOp::Dec => {
                let r = match lz.op {
                    LazyOp::Add => lz.a.wrapping_add(lz.b),
                    LazyOp::Inc => lz.a.wrapping_add(1),
                    _ => lz.a.wrapping_sub(1),
                } & alu::mask(bits);
                match cc {
                    C::e => return r == 0,
                    C::ne => return r != 0,
                    C::s => return r & alu::sign_bit(bits) != 0,
                    C::ns => return r & alu::sign_bit(bits) == 0,
                    _ => {}
                }
            }
        }
        self.settle(lz);
        self.cond_fast(cc)
    }

    #[inline]
    fn ea_fast(&self, m: MemOp) -> u64 {
        let g = &self.state.gpr;
        let mut a = m.disp;
        if m.base < 16 {
            a = a.wrapping_add(g[m.base as usize]);
        }
        if m.index < 16 {
            a = a.wrapping_add(g[m.index as usize] << m.scale);
        }
        a & m.amask
    }

    /// Executes one instruction of a block that starts at `ip`: a fast form from its
    /// pre-decoded operands, anything else through `execute` (with RIP and the flags
    /// written back first). Returns the new RIP (left for the caller to store).
    #[inline(always)]
    fn exec_decoded(
        &mut self,
        d: &Decoded,
        ip: u64,
        view: &DataView,
        lz: &mut Lazy,
        bus: &mut dyn Bus,
    ) -> R<u64> {
        let mut rip = d.next;
        match d.fast {
            Fast::Generic => {
                self.settle(lz);
                self.state.rip = ip;
                self.insn_start = ip;
                self.new_shadow = false;
                self.execute(&d.insn, bus)?;
                rip = self.state.rip;
            }
            Fast::AluRR { op, dst, src } => {
                let (a, b) = (self.gpr_get(dst), self.gpr_get(src));
                if let Some(r) = self.alu_fast(lz, op, dst.bits(), a, b) {
                    self.gpr_set(dst, r);
                }
            }
            Fast::AluRI { op, dst, imm } => {
                let a = self.gpr_get(dst);
                if let Some(r) = self.alu_fast(lz, op, dst.bits(), a, imm) {
                    self.gpr_set(dst, r);
                }
            }
            Fast::AluRM { op, dst, m } => {
                let b =
                    self.read_direct(view, m.seg as usize, self.ea_fast(m), m.size as usize, bus)?;
                let a = self.gpr_get(dst);
                if let Some(r) = self.alu_fast(lz, op, dst.bits(), a, b) {
                    self.gpr_set(dst, r);
                }
            }
            Fast::AluMR { op, m, src } => {
                let ea = self.ea_fast(m);
                let a = self.read_direct(view, m.seg as usize, ea, m.size as usize, bus)?;
                let b = self.gpr_get(src);
                self.alu_mem(view, lz, op, m, ea, a, b, bus)?;
            }
            Fast::AluMI { op, m, imm } => {
                let ea = self.ea_fast(m);
                let a = self.read_direct(view, m.seg as usize, ea, m.size as usize, bus)?;
                self.alu_mem(view, lz, op, m, ea, a, imm, bus)?;
            }
            Fast::Load { dst, m, sign } => {
                let v =
                    self.read_direct(view, m.seg as usize, self.ea_fast(m), m.size as usize, bus)?;
                let v = if sign {
                    alu::sign_extend(v, u32::from(m.size) * 8)
                } else {
                    v
                };
                self.gpr_set(dst, v);
            }
            Fast::StoreR { m, src } => {
                let v = self.gpr_get(src);
                self.write_direct(
                    view,
                    m.seg as usize,
                    self.ea_fast(m),
                    m.size as usize,
                    v,
                    bus,
                )?;
            }
            Fast::StoreI { m, imm } => {
                self.write_direct(
                    view,
                    m.seg as usize,
                    self.ea_fast(m),
                    m.size as usize,
                    imm,
                    bus,
                )?;
            }
            Fast::Lea { dst, m } => {
                let v = self.ea_fast(m);
                self.gpr_set(dst, v);
            }
            Fast::Push { src } => {
                let v = self.gpr_get(src);
                let (mask, size) = (view.stack_mask, src.size as usize);
                let rsp = self.state.gpr[4];
                let top = rsp.wrapping_sub(size as u64) & mask;
                self.write_direct(view, seg::SS, top, size, v, bus)?;
                self.state.gpr[4] = (rsp & !mask) | top;
            }
            Fast::Pop { dst } => {
                let (mask, size) = (view.stack_mask, dst.size as usize);
                let rsp = self.state.gpr[4];
                let v = self.read_direct(view, seg::SS, rsp & mask, size, bus)?;
                self.state.gpr[4] = (rsp & !mask) | (rsp.wrapping_add(size as u64) & mask);
                self.gpr_set(dst, v);
            }
            Fast::IncDec { inc, r } => {
                let bits = r.bits();
                let a = self.gpr_get(r);
                // CF stays as the previous operation left it.
                let cf = self.lazy_cf(lz);
                let (v, op) = if inc {
                    (a.wrapping_add(1), LazyOp::Inc)
                } else {
                    (a.wrapping_sub(1), LazyOp::Dec)
                };
                *lz = Lazy::new(op, bits, a, u64::from(cf));
                self.gpr_set(r, v & alu::mask(bits));
            }
            Fast::IncDecM { inc, m } => {
                let (seg, size) = (m.seg as usize, m.size as usize);
                let bits = u32::from(m.size) * 8;
                let ea = self.ea_fast(m);
                let a = self.read_direct(view, seg, ea, size, bus)?;
                let (v, op) = if inc {
                    (a.wrapping_add(1), LazyOp::Inc)
                } else {
                    (a.wrapping_sub(1), LazyOp::Dec)
                };
                self.write_direct(view, seg, ea, size, v & alu::mask(bits), bus)?;
                // CF stays as the previous operation left it.
                let cf = self.lazy_cf(lz);
                *lz = Lazy::new(op, bits, a, u64::from(cf));
            }
            Fast::PushI { imm, size } => {
                let (mask, size) = (view.stack_mask, size as usize);
                let rsp = self.state.gpr[4];
                let top = rsp.wrapping_sub(size as u64) & mask;
                self.write_direct(view, seg::SS, top, size, imm, bus)?;
                self.state.gpr[4] = (rsp & !mask) | top;
            }
            Fast::BswapR { r } => {
                let v = self.gpr_get(r);
                let v = if r.size == 8 {
                    v.swap_bytes()
                } else {
                    u64::from((v as u32).swap_bytes())
                };
                self.gpr_set(r, v);
            }
            Fast::MovRR { dst, src } => {
                let v = self.gpr_get(src);
                self.gpr_set(dst, v);
            }
            Fast::MovRI { dst, imm } => self.gpr_set(dst, imm),
            Fast::Jcc { cc, target } => {
                if self.cond_lazy(lz, cc) {
                    rip = target;
                }
            }
            Fast::Jmp { target } => rip = target,
            Fast::CmovRR { cc, dst, src } => {
                let v = self.gpr_get(src);
                self.cmov(lz, cc, dst, v);
            }
            Fast::CmovRM { cc, dst, m } => {
                let v =
                    self.read_direct(view, m.seg as usize, self.ea_fast(m), m.size as usize, bus)?;
                self.cmov(lz, cc, dst, v);
            }
            Fast::ShiftRI { op, r, count } => self.shift_fast(lz, op, r, count),
            Fast::ShiftRCl { op, r } => {
                let count = self.state.gpr[1] as u8;
                self.shift_fast(lz, op, r, count);
            }
            Fast::ImulRR { dst, src } => {
                let b = self.gpr_get(src);
                self.imul_fast(lz, dst, b);
            }
            Fast::ImulRM { dst, m } => {
                let b =
                    self.read_direct(view, m.seg as usize, self.ea_fast(m), m.size as usize, bus)?;
                self.imul_fast(lz, dst, b);
            }
            Fast::ExtendRR { dst, src, sign } => {
                let v = self.gpr_get(src);
                let v = if sign {
                    alu::sign_extend(v, src.bits())
                } else {
                    v
                };
                self.gpr_set(dst, v);
            }
            Fast::SetccR { cc, dst } => {
                let v = u64::from(self.cond_lazy(lz, cc));
                self.gpr_set(dst, v);
            }
            Fast::NotR { r } => {
                let v = !self.gpr_get(r);
                self.gpr_set(r, v);
            }
            Fast::NegR { r } => {
                // NEG sets the flags exactly as SUB from zero does.
                let bits = r.bits();
                let b = self.gpr_get(r);
                *lz = Lazy::new(LazyOp::Sub, bits, 0, b);
                self.gpr_set(r, 0u64.wrapping_sub(b) & alu::mask(bits));
            }
            Fast::Nop => {}
        }
        Ok(rip)
    }

    /// A read-modify-write ALU operation on memory: the flags are recorded only once the
    /// write succeeded (a faulting instruction leaves them unchanged).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn alu_mem(
        &mut self,
        view: &DataView,
        lz: &mut Lazy,
        op: AluOp,
        m: MemOp,
        ea: u64,
        a: u64,
        b: u64,
        bus: &mut dyn Bus,
    ) -> R<()> {
        let saved = *lz;
        let flags = self.state.rflags;
        if let Some(r) = self.alu_fast(lz, op, u32::from(m.size) * 8, a, b) {
            if let Err(e) = self.write_direct(view, m.seg as usize, ea, m.size as usize, r, bus) {
                *lz = saved;
                self.state.rflags = flags;
                return Err(e);
            }
        }
        Ok(())
    }

    /// CMOVcc: a 32-bit destination is zero-extended whether or not the condition holds.
    #[inline(always)]
    fn cmov(&mut self, lz: &mut Lazy, cc: ConditionCode, dst: Gpr, v: u64) {
        if self.cond_lazy(lz, cc) {
            self.gpr_set(dst, v);
        } else if dst.size == 4 {
            let cur = self.gpr_get(dst);
            self.gpr_set(dst, cur);
        }
    }

    /// A shift or rotate of a register (as the generic path: the result is written even for
    /// a zero count, which leaves the flags). SHL/SHR/SAR by a non-zero count defer their
    /// flags, which they write in full.
    #[inline(always)]
    fn shift_fast(&mut self, lz: &mut Lazy, op: Shift, r: Gpr, count: u8) {
        let bits = r.bits();
        let c = count & if bits == 64 { 0x3f } else { 0x1f };
        if c != 0 {
            let a = self.gpr_get(r);
            let m = alu::mask(bits);
            // c < 64, and narrower values shift out through the mask.
            let (v, lop) = match op {
                Shift::Shl | Shift::Sal => ((a << c) & m, LazyOp::Shl),
                Shift::Shr => (a >> c, LazyOp::Shr),
                Shift::Sar => (
                    ((alu::sign_extend(a, bits) as i64) >> c) as u64 & m,
                    LazyOp::Sar,
                ),
                _ => return self.shift_settled(lz, op, r, count),
            };
            *lz = Lazy::new(lop, bits, a, u64::from(c));
            self.gpr_set(r, v);
            return;
        }
        self.shift_settled(lz, op, r, count);
    }

    /// A shift or rotate through `alu::shift` with the flags settled first.
    #[inline(always)]
    fn shift_settled(&mut self, lz: &mut Lazy, op: Shift, r: Gpr, count: u8) {
        self.settle(lz);
        let a = self.gpr_get(r);
        let (v, f) = alu::shift(op, r.bits(), a, count, self.state.rflags);
        self.gpr_set(r, v);
        self.set_flags(STATUS, f);
    }

    /// Two-operand IMUL into a register.
    #[inline(always)]
    fn imul_fast(&mut self, lz: &mut Lazy, dst: Gpr, b: u64) {
        self.settle(lz);
        let size = dst.bits();
        let a = self.gpr_get(dst);
        let (lo, _, f) = alu::imul(size, a, b & alu::mask(size), self.state.rflags);
        self.gpr_set(dst, lo);
        self.set_flags(STATUS, f);
    }

    #[inline]
    fn cond_fast(&self, cc: ConditionCode) -> bool {
        let f = self.state.rflags;
        let cf = f & CF != 0;
        let zf = f & ZF != 0;
        let sf = f & alu::SF != 0;
        let of = f & alu::OF != 0;
        match cc {
            ConditionCode::o => of,
            ConditionCode::no => !of,
            ConditionCode::b => cf,
            ConditionCode::ae => !cf,
            ConditionCode::e => zf,
            ConditionCode::ne => !zf,
            ConditionCode::be => cf || zf,
            ConditionCode::a => !cf && !zf,
            ConditionCode::s => sf,
            ConditionCode::ns => !sf,
            ConditionCode::p => f & alu::PF != 0,
            ConditionCode::np => f & alu::PF == 0,
            ConditionCode::l => sf != of,
            ConditionCode::ge => sf == of,
            ConditionCode::le => zf || sf != of,
            ConditionCode::g => !zf && sf == of,
            ConditionCode::None => true,
        }
    }
}

/// The code page and CS view the previous block ran in.
#[derive(Debug, Clone, Copy)]
struct FetchCtx {
    bits: u32,
    base: u64,
    limit: u64,
    lin_page: u64,
    phys_page: u64,
    /// The TLB's link changes when the context was made: blocks found through it are linked
    /// to only while the code page's translation counts for the link stamp.
    changes: u64,
}

/// How a block's host code was left (see [`Cpu::run_native`]).
enum NativeExit {
    /// For a branch target or the next block (with the link slot plus one, 0: none).
    Left { link: u64 },
    /// Before instruction `done` of the block starting at `start`, for the interpreter.
    Resume { start: u64, done: usize },
}

/// A way out of native code through a link slot, to be filled for the next block.
#[derive(Clone, Copy, Default)]
struct Link {
    /// The slot plus one (0: none).
    slot: u64,
    /// The code generation and link stamp it was taken in.
    gen: u64,
    stamp: u64,
}

/// What [`Cpu::run_native`] ran.
struct NativeRun {
    /// Instructions completed, in linked blocks as well.
    completed: u32,
    /// RIP where execution goes on.
    rip: u64,
    exit: NativeExit,
}

/// Why a block stopped.
enum BlockExit {
    /// Ordinary end: look up the next block.
    Continue,
    /// The processor state may have changed (interrupt flag, shadow, a fault was delivered):
    /// ask the caller's stop condition.
    Check,
    Halted,
    TripleFault,
}

/// The operation whose status flags are pending in a [`Lazy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LazyOp {
    /// Nothing pending: RFLAGS holds the flags.
    None,
    /// ADD of `a` and `b`.
    Add,
    /// SUB or CMP of `b` from `a`.
    Sub,
    /// AND/OR/XOR/TEST with result `a`.
    Logic,
    /// INC of `a`; `b` is the CF it keeps (0 or 1).
    Inc,
    /// DEC of `a`; `b` is the CF it keeps (0 or 1).
    Dec,
    /// SHL/SAL of `a` by `b` (masked, not zero).
    Shl,
    /// SHR of `a` by `b` (masked, not zero).
    Shr,
    /// SAR of `a` by `b` (masked, not zero).
    Sar,
}

/// Status flags of the last ALU fast form, kept as its operands until something reads them.
/// Lives only inside [`Cpu::run_block`], which writes them to RFLAGS before any other
/// instruction runs, before a fault is delivered and before it returns, so RFLAGS is exact
/// whenever anything else looks at it. Operands are masked to the operation's width.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lazy {
    op: LazyOp,
    bits: u8,
    a: u64,
    b: u64,
}

impl Lazy {
    const NONE: Self = Self {
        op: LazyOp::None,
        bits: 64,
        a: 0,
        b: 0,
    };

    #[inline(always)]
    fn new(op: LazyOp, bits: u32, a: u64, b: u64) -> Self {
        Self {
            op,
            bits: bits as u8,
            a,
            b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(bytes: &[u8]) -> Flow {
        let mut d = iced_x86::Decoder::new(64, bytes, iced_x86::DecoderOptions::NONE);
        flow_of(&d.decode())
    }

    #[test]
    fn only_instructions_that_change_the_mode_or_may_enable_interrupts_end_a_block_for_a_check() {
        // CLI, PXOR xmm0, xmm1, MOVDQU xmm0, [rax], FLD1, FXSAVE [rax], EMMS.
        for bytes in [
            &[0xfa][..],
            &[0x66, 0x0f, 0xef, 0xc1],
            &[0xf3, 0x0f, 0x6f, 0x00],
            &[0xd9, 0xe8],
            &[0x0f, 0xae, 0x00],
            &[0x0f, 0x77],
        ] {
            assert!(matches!(flow(bytes), Flow::Next), "{bytes:02x?}");
        }
        // STI, POPFQ, IRETQ, MOV CR3, RAX, OUT DX, AL, HLT, WRMSR.
        for bytes in [
            &[0xfb][..],
            &[0x9d],
            &[0x48, 0xcf],
            &[0x0f, 0x22, 0xd8],
            &[0xee],
            &[0xf4],
            &[0x0f, 0x30],
        ] {
            assert!(matches!(flow(bytes), Flow::Exit), "{bytes:02x?}");
        }
    }
}
