//! Instruction execution: operand access and the dispatch over mnemonics.

use crate::alu::{self, BitOp, Shift, AF, CF, OF, PF, SF, STATUS, ZF};
use crate::cpu::{seg_index, Bus, Cpu, EventKind, Fault, R};
use crate::state::{cr, efer, flags, msr, seg};
use iced_x86::{ConditionCode, Instruction, Mnemonic as M, OpKind, Register};

impl Cpu {
    /// Effective address (segment offset) of the memory operand, masked to the address size.
    pub(crate) fn ea(&self, i: &Instruction) -> u64 {
        let base = i.memory_base();
        let index = i.memory_index();
        let mut a = i.memory_displacement64();
        let mut asize = 0;
        if base != Register::None {
            if base == Register::RIP || base == Register::EIP {
                return if base == Register::EIP {
                    a & 0xffff_ffff
                } else {
                    a
                };
            }
            a = a.wrapping_add(self.reg(base));
            asize = base.size();
        }
        if index != Register::None {
            a = a.wrapping_add(
                self.reg(index)
                    .wrapping_mul(u64::from(i.memory_index_scale())),
            );
            asize = index.size();
        }
        if asize == 0 {
            asize = match i.memory_displ_size() {
                2 => 2,
                4 if !self.state.code64() => 4,
                _ => 8,
            };
        }
        match asize {
            2 => a & 0xffff,
            4 => a & 0xffff_ffff,
            _ => a,
        }
    }

    /// Size in bytes of operand `n`.
    pub(crate) fn op_size(i: &Instruction, n: u32) -> usize {
        match i.op_kind(n) {
            OpKind::Register => i.op_register(n).size(),
            OpKind::Immediate8 => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            OpKind::Immediate64 | OpKind::Immediate8to64 | OpKind::Immediate32to64 => 8,
            _ => i.memory_size().size(),
        }
    }

    /// Reads operand `n` (register, immediate or memory), zero-extended.
    pub(crate) fn read_op(&mut self, i: &Instruction, n: u32, bus: &mut dyn Bus) -> R<u64> {
        match i.op_kind(n) {
            OpKind::Register => Ok(self.reg(i.op_register(n))),
            OpKind::Memory => {
                let size = i.memory_size().size().min(8);
                let segi = seg_index(i.memory_segment());
                let ea = self.ea(i);
                let v = self.read_val(segi, ea, size, bus)?;
                if self.locked {
                    self.lock_old = Some(v);
                }
                Ok(v)
            }
            _ => Ok(i.immediate(n)),
        }
    }

    /// Writes operand `n` (register or memory).
    pub(crate) fn write_op(&mut self, i: &Instruction, n: u32, v: u64, bus: &mut dyn Bus) -> R<()> {
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                if r.is_segment_register() {
                    return self.load_segment(seg_index(r), v as u16, bus);
                }
                self.set_reg(r, v);
                Ok(())
            }
            OpKind::Memory => {
                let size = i.memory_size().size().min(8);
                let segi = seg_index(i.memory_segment());
                let ea = self.ea(i);
                match self.lock_old.take() {
                    Some(old) if self.locked => self.write_atomic(segi, ea, size, old, v, bus),
                    _ => self.write_val(segi, ea, size, v, bus),
                }
            }
            _ => Err(Fault::ud()),
        }
    }

    /// Replaces the memory value `old` with `new` atomically; restarts the instruction when
    /// another processor changed it in between.
    fn write_atomic(
        &mut self,
        segi: usize,
        ea: u64,
        size: usize,
        old: u64,
        new: u64,
        bus: &mut dyn Bus,
    ) -> R<()> {
        let lin = self.linear(segi, ea, size as u64, crate::mmu::Access::Write)?;
        if (lin & 0xfff) + size as u64 > 0x1000 {
            // A split lock: no host atomic spans two pages.
            return self.write_val(segi, ea, size, new, bus);
        }
        let user = self.state.cpl() == 3;
        let phys = self.translate(lin, crate::mmu::Access::Write, user, bus)?;
        if bus.compare_exchange(phys, size, old, new) {
            Ok(())
        } else {
            Err(Fault {
                vector: crate::cpu::RETRY,
                error: None,
                cr2: None,
            })
        }
    }

    fn cond(&self, cc: ConditionCode) -> bool {
        let f = self.state.rflags;
        let cf = f & CF != 0;
        let zf = f & ZF != 0;
        let sf = f & SF != 0;
        let of = f & OF != 0;
        let pf = f & PF != 0;
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
            ConditionCode::p => pf,
            ConditionCode::np => !pf,
            ConditionCode::l => sf != of,
            ConditionCode::ge => sf == of,
            ConditionCode::le => zf || sf != of,
            ConditionCode::g => !zf && sf == of,
            ConditionCode::None => true,
        }
    }

    /// Operand size of the instruction in bytes (from operand 0, else the code size).
    fn osize(&self, i: &Instruction) -> usize {
        if i.op_count() > 0 {
            Self::op_size(i, 0)
        } else {
            (self.state.bitness() / 8) as usize
        }
    }

    fn ip_mask(&self, size: usize) -> u64 {
        match size {
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }

    fn jump(&mut self, target: u64) -> R<()> {
        self.check_canonical(target)?;
        self.state.rip = target;
        Ok(())
    }

    fn io_allowed(&mut self, port: u16, size: usize, bus: &mut dyn Bus) -> R<()> {
        let s = &self.state;
        let iopl = ((s.rflags & flags::IOPL) >> 12) as u8;
        if !s.protected() || (!s.v86() && s.cpl() <= iopl) {
            return Ok(());
        }
        // I/O permission bitmap in the TSS.
        let tss = s.tr;
        if tss.type_ & 8 == 0 || tss.limit < 0x67 {
            return Err(Fault::gp(0));
        }
        let map = self.read_sys(tss.base + 0x66, 2, bus)?;
        let byte = map + u64::from(port / 8);
        if byte + 1 > u64::from(tss.limit) {
            return Err(Fault::gp(0));
        }
        let bits = self.read_sys(tss.base + byte, 2, bus)?;
        let mask = ((1u64 << size) - 1) << (port % 8);
        if bits & mask != 0 {
            return Err(Fault::gp(0));
        }
        Ok(())
    }

    fn require_cpl0(&self) -> R<()> {
        if self.state.cpl() != 0 {
            return Err(Fault::gp(0));
        }
        Ok(())
    }

    /// Executes one decoded instruction. RIP points at it on entry; faults leave state for
    /// restart.
    pub(crate) fn execute(&mut self, i: &Instruction, bus: &mut dyn Bus) -> R<()> {
        let next = i.next_ip() & self.ip_mask((self.state.bitness() / 8) as usize);
        if i.has_lock_prefix()
            && !i.is_invalid()
            && i.op_kind(0) != OpKind::Memory
            && i.op_count() > 0
        {
            return Err(Fault::ud());
        }
        let mut new_rip = next;
        let old_flags = self.state.rflags;
        let mem_xchg = i.mnemonic() == M::Xchg
            && (i.op0_kind() == OpKind::Memory || i.op1_kind() == OpKind::Memory);
        self.locked = i.has_lock_prefix() || mem_xchg;
        self.lock_old = None;
        match i.mnemonic() {
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
            | M::Clflush
            | M::Clflushopt
            | M::Wbinvd
            | M::Invd
            | M::Endbr32
            | M::Endbr64 => {}
            M::Mov => self.mov(i, bus)?,
            M::Movzx => {
                let v = self.read_op(i, 1, bus)?;
                self.write_op(i, 0, v, bus)?;
            }
            M::Movsx | M::Movsxd => {
                let size = Self::op_size(i, 1) as u32 * 8;
                let v = alu::sign_extend(self.read_op(i, 1, bus)?, size);
                self.write_op(i, 0, v, bus)?;
            }
            M::Lea => {
                let v = self.ea(i);
                self.set_reg(i.op0_register(), v);
            }
            M::Xchg => {
                // The memory operand (if any) is written first, atomically.
                let (m, r) = if i.op1_kind() == OpKind::Memory {
                    (1, 0)
                } else {
                    (0, 1)
                };
                let a = self.read_op(i, m, bus)?;
                let b = self.read_op(i, r, bus)?;
                self.write_op(i, m, b, bus)?;
                self.write_op(i, r, a, bus)?;
            }
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
                let v = self.read_op(i, 1, bus)?;
                let r = i.op0_register();
                if self.cond(i.condition_code()) {
                    self.set_reg(r, v);
                } else if r.size() == 4 {
                    let cur = self.reg(r);
                    self.set_reg(r, cur);
                }
            }
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
            | M::Setg => {
                let v = u64::from(self.cond(i.condition_code()));
                self.write_op(i, 0, v, bus)?;
            }
            M::Bswap => {
                let r = i.op0_register();
                let v = self.reg(r);
                let s = match r.size() {
                    8 => v.swap_bytes(),
                    4 => u64::from((v as u32).swap_bytes()),
                    _ => 0,
                };
                self.set_reg(r, s);
            }
            M::Xlatb => {
                let segi = seg_index(i.memory_segment());
                let base = match i.memory_base() {
                    Register::BX => self.reg(Register::BX),
                    Register::EBX => self.reg(Register::EBX),
                    _ => self.reg(Register::RBX),
                };
                let a = base.wrapping_add(self.reg(Register::AL));
                let a = a & if i.memory_base() == Register::BX {
                    0xffff
                } else {
                    u64::MAX
                };
                let v = self.read_val(segi, a, 1, bus)?;
                self.set_reg(Register::AL, v);
            }
            // ---- stack ----
            M::Push => {
                let size = (-i.stack_pointer_increment()) as usize;
                let v = self.read_op(i, 0, bus)?;
                self.push(size, v, bus)?;
            }
            M::Pop => {
                let size = i.stack_pointer_increment() as usize;
                let v = self.peek(0, size, bus)?;
                let rsp = self.state.gpr[4];
                self.pop(size, bus)?;
                // POP to a memory operand using RSP computes the address after the pop.
                if let Err(f) = self.write_op(i, 0, v, bus) {
                    self.state.gpr[4] = rsp;
                    return Err(f);
                }
            }
            M::Pushf | M::Pushfd | M::Pushfq => {
                if self.state.v86() && (self.state.rflags & flags::IOPL) >> 12 != 3 {
                    return Err(Fault::gp(0));
                }
                let size = (-i.stack_pointer_increment()) as usize;
                let v = self.state.rflags & !(flags::VM | flags::RF);
                self.push(size, v, bus)?;
            }
            M::Popf | M::Popfd | M::Popfq => {
                let size = i.stack_pointer_increment() as usize;
                let s = &self.state;
                let iopl = ((s.rflags & flags::IOPL) >> 12) as u8;
                if s.v86() && iopl != 3 {
                    return Err(Fault::gp(0));
                }
                let cpl = s.cpl();
                let v = self.pop(size, bus)?;
                let mut mask = STATUS | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
                if cpl == 0 && !self.state.v86() {
                    mask |= flags::IOPL;
                }
                if cpl <= iopl || self.state.v86() {
                    mask |= flags::IF;
                }
                if size == 2 {
                    mask &= 0xffff;
                }
                self.state.rflags = (self.state.rflags & !mask) | (v & mask) | flags::FIXED;
            }
            M::Pusha | M::Pushad => {
                let size = if i.mnemonic() == M::Pushad { 4 } else { 2 };
                let sp = self.state.gpr[4];
                for r in 0..8 {
                    let v = if r == 4 { sp } else { self.state.gpr[r] };
                    self.push(size, v, bus)?;
                }
            }
            M::Popa | M::Popad => {
                let (size, regs): (usize, [Register; 8]) = if i.mnemonic() == M::Popad {
                    (
                        4,
                        [
                            Register::EDI,
                            Register::ESI,
                            Register::EBP,
                            Register::ESP,
                            Register::EBX,
                            Register::EDX,
                            Register::ECX,
                            Register::EAX,
                        ],
                    )
                } else {
                    (
                        2,
                        [
                            Register::DI,
                            Register::SI,
                            Register::BP,
                            Register::SP,
                            Register::BX,
                            Register::DX,
                            Register::CX,
                            Register::AX,
                        ],
                    )
                };
                for r in regs {
                    let v = self.pop(size, bus)?;
                    if r != Register::ESP && r != Register::SP {
                        self.set_reg(r, v);
                    }
                }
            }
            M::Enter => {
                let size = match i.code() {
                    iced_x86::Code::Enterw_imm16_imm8 => 2,
                    iced_x86::Code::Enterd_imm16_imm8 => 4,
                    _ => 8,
                };
                let alloc = i.immediate(0) & 0xffff;
                let level = i.immediate(1) & 0x1f;
                let bp_reg = match size {
                    2 => Register::BP,
                    4 => Register::EBP,
                    _ => Register::RBP,
                };
                let bp = self.reg(bp_reg);
                self.push(size, bp, bus)?;
                let frame = self.state.gpr[4];
                let mut b = bp;
                for _ in 1..level {
                    b = b.wrapping_sub(size as u64);
                    let v = self.read_val(seg::SS, b & self.ip_mask(size), size, bus)?;
                    self.push(size, v, bus)?;
                }
                if level > 0 {
                    self.push(size, frame, bus)?;
                }
                self.set_reg(bp_reg, frame);
                let mask = self.stack_mask();
                let sp = self.state.gpr[4];
                self.state.gpr[4] = (sp & !mask) | (sp.wrapping_sub(alloc) & mask);
            }
            M::Leave => {
                // iced reports no stack-pointer increment for LEAVE; the variant names the size.
                let size = match i.code() {
                    iced_x86::Code::Leavew => 2,
                    iced_x86::Code::Leaved => 4,
                    _ => 8,
                };
                let mask = self.stack_mask();
                let bp = self.state.gpr[5];
                self.state.gpr[4] = (self.state.gpr[4] & !mask) | (bp & mask);
                let v = self.pop(size, bus)?;
                let r = match size {
                    2 => Register::BP,
                    4 => Register::EBP,
                    _ => Register::RBP,
                };
                self.set_reg(r, v);
            }
            // ---- arithmetic ----
            M::Add | M::Adc | M::Sub | M::Sbb | M::Cmp => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let a = self.read_op(i, 0, bus)?;
                let b = self.read_op(i, 1, bus)? & alu::mask(size);
                let carry = self.state.rflags & CF != 0;
                let (r, f) = match i.mnemonic() {
                    M::Add => alu::add(size, a, b, false),
                    M::Adc => alu::add(size, a, b, carry),
                    M::Sbb => alu::sub(size, a, b, carry),
                    _ => alu::sub(size, a, b, false),
                };
                if i.mnemonic() != M::Cmp {
                    self.write_op(i, 0, r, bus)?;
                }
                self.set_flags(STATUS, f);
            }
            M::And | M::Or | M::Xor | M::Test => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let a = self.read_op(i, 0, bus)?;
                let b = self.read_op(i, 1, bus)?;
                let r = match i.mnemonic() {
                    M::Or => a | b,
                    M::Xor => a ^ b,
                    _ => a & b,
                } & alu::mask(size);
                if i.mnemonic() != M::Test {
                    self.write_op(i, 0, r, bus)?;
                }
                self.set_flags(STATUS, alu::logic(size, r));
            }
            M::Inc | M::Dec => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let a = self.read_op(i, 0, bus)?;
                let (r, f) = if i.mnemonic() == M::Inc {
                    alu::inc(size, a, self.state.rflags)
                } else {
                    alu::dec(size, a, self.state.rflags)
                };
                self.write_op(i, 0, r, bus)?;
                self.set_flags(STATUS, f);
            }
            M::Neg => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let a = self.read_op(i, 0, bus)?;
                let (r, f) = alu::neg(size, a);
                self.write_op(i, 0, r, bus)?;
                self.set_flags(STATUS, f);
            }
            M::Not => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let a = self.read_op(i, 0, bus)?;
                self.write_op(i, 0, !a & alu::mask(size), bus)?;
            }
            M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Shr | M::Sal | M::Sar => {
                let op = match i.mnemonic() {
                    M::Rol => Shift::Rol,
                    M::Ror => Shift::Ror,
                    M::Rcl => Shift::Rcl,
                    M::Rcr => Shift::Rcr,
                    M::Shl => Shift::Shl,
                    M::Sal => Shift::Sal,
                    M::Shr => Shift::Shr,
                    _ => Shift::Sar,
                };
                let size = Self::op_size(i, 0) as u32 * 8;
                let a = self.read_op(i, 0, bus)?;
                let count = if i.op_count() > 1 {
                    self.read_op(i, 1, bus)? as u8
                } else {
                    1
                };
                let (r, f) = alu::shift(op, size, a, count, self.state.rflags);
                self.write_op(i, 0, r, bus)?;
                self.set_flags(STATUS, f);
            }
            M::Shld | M::Shrd => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let a = self.read_op(i, 0, bus)?;
                let b = self.read_op(i, 1, bus)?;
                let count = self.read_op(i, 2, bus)? as u8;
                let (r, f) = if i.mnemonic() == M::Shld {
                    alu::shld(size, a, b, count, self.state.rflags)
                } else {
                    alu::shrd(size, a, b, count, self.state.rflags)
                };
                self.write_op(i, 0, r, bus)?;
                self.set_flags(STATUS, f);
            }
            M::Mul | M::Imul if i.op_count() == 1 => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let b = self.read_op(i, 0, bus)?;
                let a = self.reg(acc_pair(size).0);
                let (lo, hi, f) = if i.mnemonic() == M::Mul {
                    alu::mul(size, a, b, self.state.rflags)
                } else {
                    alu::imul(size, a, b, self.state.rflags)
                };
                self.set_acc_pair(size, lo, hi);
                self.set_flags(STATUS, f);
            }
            M::Imul => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let (a, b) = if i.op_count() == 3 {
                    (self.read_op(i, 1, bus)?, self.read_op(i, 2, bus)?)
                } else {
                    (self.read_op(i, 0, bus)?, self.read_op(i, 1, bus)?)
                };
                let (lo, _, f) = alu::imul(size, a, b & alu::mask(size), self.state.rflags);
                self.write_op(i, 0, lo, bus)?;
                self.set_flags(STATUS, f);
            }
            M::Div | M::Idiv => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let d = self.read_op(i, 0, bus)?;
                let (lo_reg, hi_reg) = acc_pair(size);
                let (hi, lo) = (self.reg(hi_reg), self.reg(lo_reg));
                let r = if i.mnemonic() == M::Div {
                    alu::div(size, hi, lo, d)
                } else {
                    alu::idiv(size, hi, lo, d)
                };
                let (q, rem) = r.ok_or_else(Fault::de)?;
                self.set_acc_pair(size, q, rem);
            }
            M::Daa | M::Das => {
                let al = self.reg(Register::AL) as u8;
                let (r, f) = if i.mnemonic() == M::Daa {
                    alu::daa(al, old_flags)
                } else {
                    alu::das(al, old_flags)
                };
                self.set_reg(Register::AL, u64::from(r));
                self.set_flags(STATUS, f);
            }
            M::Aaa | M::Aas => {
                let ax = self.reg(Register::AX) as u16;
                let (r, f) = if i.mnemonic() == M::Aaa {
                    alu::aaa(ax, old_flags)
                } else {
                    alu::aas(ax, old_flags)
                };
                self.set_reg(Register::AX, u64::from(r));
                self.set_flags(STATUS, f);
            }
            M::Aam => {
                let (r, f) = alu::aam(
                    self.reg(Register::AL) as u8,
                    i.immediate(0) as u8,
                    old_flags,
                )
                .ok_or_else(Fault::de)?;
                self.set_reg(Register::AX, u64::from(r));
                self.set_flags(STATUS, f);
            }
            M::Aad => {
                let (r, f) = alu::aad(
                    self.reg(Register::AX) as u16,
                    i.immediate(0) as u8,
                    old_flags,
                );
                self.set_reg(Register::AX, u64::from(r));
                self.set_flags(STATUS, f);
            }
            M::Bt | M::Bts | M::Btr | M::Btc => self.bit_op(i, bus)?,
            // Without BMI1/ABM (not advertised), TZCNT and LZCNT execute as BSF and BSR: the
            // F3 prefix is ignored, which Linux relies on for its bit-search helpers.
            M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let v = self.read_op(i, 1, bus)?;
                let forward = matches!(i.mnemonic(), M::Bsf | M::Tzcnt);
                let (r, f) = if forward {
                    alu::bsf(size, v, old_flags)
                } else {
                    alu::bsr(size, v, old_flags)
                };
                if let Some(idx) = r {
                    self.write_op(i, 0, idx, bus)?;
                }
                self.set_flags(STATUS, f);
            }
            M::Cbw => {
                let v = alu::sign_extend(self.reg(Register::AL), 8);
                self.set_reg(Register::AX, v);
            }
            M::Cwde => {
                let v = alu::sign_extend(self.reg(Register::AX), 16);
                self.set_reg(Register::EAX, v);
            }
            M::Cdqe => {
                let v = alu::sign_extend(self.reg(Register::EAX), 32);
                self.set_reg(Register::RAX, v);
            }
            M::Cwd => {
                let v = if self.reg(Register::AX) & 0x8000 != 0 {
                    0xffff
                } else {
                    0
                };
                self.set_reg(Register::DX, v);
            }
            M::Cdq => {
                let v = if self.reg(Register::EAX) & 0x8000_0000 != 0 {
                    0xffff_ffff
                } else {
                    0
                };
                self.set_reg(Register::EDX, v);
            }
            M::Cqo => {
                let v = if self.reg(Register::RAX) >> 63 != 0 {
                    u64::MAX
                } else {
                    0
                };
                self.set_reg(Register::RDX, v);
            }
            M::Cmpxchg => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let acc = match size {
                    8 => Register::AL,
                    16 => Register::AX,
                    32 => Register::EAX,
                    _ => Register::RAX,
                };
                let d = self.read_op(i, 0, bus)?;
                let a = self.reg(acc);
                let (_, f) = alu::sub(size, a, d, false);
                if f & ZF != 0 {
                    let s = self.read_op(i, 1, bus)?;
                    self.write_op(i, 0, s, bus)?;
                } else {
                    // The destination is written back unchanged (a locked cycle always writes).
                    self.write_op(i, 0, d, bus)?;
                    self.set_reg(acc, d);
                }
                self.set_flags(STATUS, f);
            }
            M::Cmpxchg8b | M::Cmpxchg16b => {
                let wide = i.mnemonic() == M::Cmpxchg16b;
                let half = if wide { 8 } else { 4 };
                let segi = seg_index(i.memory_segment());
                let ea = self.ea(i);
                if wide && ea & 15 != 0 {
                    return Err(Fault::gp(0));
                }
                let lo = self.read_val(segi, ea, half, bus)?;
                let hi = self.read_val(segi, ea + half as u64, half, bus)?;
                let (ra, rd, rb, rc) = if wide {
                    (Register::RAX, Register::RDX, Register::RBX, Register::RCX)
                } else {
                    (Register::EAX, Register::EDX, Register::EBX, Register::ECX)
                };
                if lo == self.reg(ra) && hi == self.reg(rd) {
                    let (b, c) = (self.reg(rb), self.reg(rc));
                    if !wide && self.locked {
                        self.write_atomic(segi, ea, 8, (hi << 32) | lo, (c << 32) | b, bus)?;
                    } else {
                        self.write_val(segi, ea, half, b, bus)?;
                        self.write_val(segi, ea + half as u64, half, c, bus)?;
                    }
                    self.state.rflags |= ZF;
                } else {
                    self.write_val(segi, ea, half, lo, bus)?;
                    self.write_val(segi, ea + half as u64, half, hi, bus)?;
                    self.set_reg(ra, lo);
                    self.set_reg(rd, hi);
                    self.state.rflags &= !ZF;
                }
            }
            M::Xadd => {
                let size = Self::op_size(i, 0) as u32 * 8;
                let d = self.read_op(i, 0, bus)?;
                let s = self.read_op(i, 1, bus)?;
                let (r, f) = alu::add(size, d, s, false);
                self.write_op(i, 0, r, bus)?;
                self.write_op(i, 1, d, bus)?;
                self.set_flags(STATUS, f);
            }
            // ---- flags ----
            M::Clc => self.state.rflags &= !CF,
            M::Stc => self.state.rflags |= CF,
            M::Cmc => self.state.rflags ^= CF,
            M::Cld => self.state.rflags &= !flags::DF,
            M::Std => self.state.rflags |= flags::DF,
            M::Cli | M::Sti => {
                let s = &self.state;
                let iopl = ((s.rflags & flags::IOPL) >> 12) as u8;
                if s.protected() && s.cpl() > iopl {
                    return Err(Fault::gp(0));
                }
                if i.mnemonic() == M::Cli {
                    self.state.rflags &= !flags::IF;
                } else {
                    if self.state.rflags & flags::IF == 0 {
                        self.new_shadow = true;
                    }
                    self.state.rflags |= flags::IF;
                }
            }
            M::Lahf => {
                let v = (self.state.rflags & 0xd5) | 2;
                self.set_reg(Register::AH, v);
            }
            M::Sahf => {
                let v = self.reg(Register::AH);
                self.set_flags(SF | ZF | AF | PF | CF, v);
            }
            // ---- control transfer ----
            M::Jmp => match i.op_kind(0) {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    new_rip = i.near_branch_target()
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    let off = if i.op_kind(0) == OpKind::FarBranch16 {
                        u64::from(i.far_branch16())
                    } else {
                        u64::from(i.far_branch32())
                    };
                    self.far_transfer(i.far_branch_selector(), off, 0, false, next, bus)?;
                    return Ok(());
                }
                OpKind::Memory if is_far_pointer(i.memory_size()) => {
                    let (sel, off) = self.read_far_pointer(i, bus)?;
                    self.far_transfer(sel, off, 0, false, next, bus)?;
                    return Ok(());
                }
                _ => new_rip = self.read_op(i, 0, bus)?,
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
            | M::Jg => {
                if self.cond(i.condition_code()) {
                    new_rip = i.near_branch_target();
                }
            }
            M::Jcxz | M::Jecxz | M::Jrcxz | M::Loop | M::Loope | M::Loopne => {
                let creg = match i.op_count() {
                    _ if i.mnemonic() == M::Jcxz => Register::CX,
                    _ if i.mnemonic() == M::Jecxz => Register::ECX,
                    _ if i.mnemonic() == M::Jrcxz => Register::RCX,
                    _ => self.count_register(i),
                };
                let mut c = self.reg(creg);
                let take = match i.mnemonic() {
                    M::Jcxz | M::Jecxz | M::Jrcxz => c == 0,
                    m => {
                        c = c.wrapping_sub(1) & alu::mask(creg.size() as u32 * 8);
                        self.set_reg(creg, c);
                        c != 0
                            && match m {
                                M::Loope => self.state.rflags & ZF != 0,
                                M::Loopne => self.state.rflags & ZF == 0,
                                _ => true,
                            }
                    }
                };
                if take {
                    new_rip = i.near_branch_target();
                }
            }
            M::Call => match i.op_kind(0) {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    let size = (-i.stack_pointer_increment()) as usize;
                    self.push(size, next, bus)?;
                    new_rip = i.near_branch_target();
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    let size = (-i.stack_pointer_increment()) as usize / 2;
                    let off = if i.op_kind(0) == OpKind::FarBranch16 {
                        u64::from(i.far_branch16())
                    } else {
                        u64::from(i.far_branch32())
                    };
                    self.far_transfer(i.far_branch_selector(), off, size, true, next, bus)?;
                    return Ok(());
                }
                OpKind::Memory if is_far_pointer(i.memory_size()) => {
                    let size = (-i.stack_pointer_increment()) as usize / 2;
                    let (sel, off) = self.read_far_pointer(i, bus)?;
                    self.far_transfer(sel, off, size, true, next, bus)?;
                    return Ok(());
                }
                _ => {
                    let size = (-i.stack_pointer_increment()) as usize;
                    let target = self.read_op(i, 0, bus)?;
                    self.push(size, next, bus)?;
                    new_rip = target;
                }
            },
            M::Ret => {
                let imm = if i.op_count() > 0 { i.immediate(0) } else { 0 };
                let size = (i.stack_pointer_increment() as u64 - imm) as usize;
                let target = self.pop(size, bus)?;
                let mask = self.stack_mask();
                let sp = self.state.gpr[4];
                self.state.gpr[4] = (sp & !mask) | (sp.wrapping_add(imm) & mask);
                new_rip = target;
            }
            M::Retf => {
                let imm = if i.op_count() > 0 { i.immediate(0) } else { 0 };
                let size = ((i.stack_pointer_increment() as u64 - imm) / 2) as usize;
                return self.far_return(size, imm, bus);
            }
            M::Iret | M::Iretd | M::Iretq => {
                let size = match i.mnemonic() {
                    M::Iret => 2,
                    M::Iretd => 4,
                    _ => 8,
                };
                // A task switch saves the address after IRET for the outgoing task.
                self.state.rip = next;
                return self.iret(size, bus);
            }
            M::Int | M::Int3 | M::Into | M::Int1 => {
                let vector = match i.mnemonic() {
                    M::Int => i.immediate(0) as u8,
                    M::Int3 => 3,
                    M::Int1 => 1,
                    _ => {
                        if self.state.rflags & OF == 0 {
                            self.state.rip = next;
                            return Ok(());
                        }
                        4
                    }
                };
                if self.state.v86()
                    && i.mnemonic() == M::Int
                    && (self.state.rflags & flags::IOPL) >> 12 != 3
                {
                    return Err(Fault::gp(0));
                }
                self.state.rip = next;
                let kind = if i.mnemonic() == M::Int1 {
                    EventKind::External
                } else {
                    EventKind::Software
                };
                return self.deliver(vector, None, kind, bus);
            }
            M::Hlt => {
                self.require_cpl0()?;
                self.state.halted = true;
            }
            M::Ud0 | M::Ud1 | M::Ud2 => return Err(Fault::ud()),
            // ---- string and I/O ----
            M::Movsb
            | M::Movsw
            | M::Movsd
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
            | M::Cmpsd
            | M::Cmpsq
            | M::Scasb
            | M::Scasw
            | M::Scasd
            | M::Scasq
            | M::Insb
            | M::Insw
            | M::Insd
            | M::Outsb
            | M::Outsw
            | M::Outsd
                if !(matches!(i.mnemonic(), M::Movsd | M::Cmpsd)
                    && matches!(i.op0_kind(), OpKind::Register | OpKind::Memory)) =>
            {
                return self.string_op(i, next, bus);
            }
            M::In => {
                let size = Self::op_size(i, 0);
                let port = self.read_op(i, 1, bus)? as u16;
                self.io_allowed(port, size, bus)?;
                let mut b = [0u8; 4];
                bus.io_in(port, &mut b[..size]);
                self.set_reg(i.op0_register(), u64::from(u32::from_le_bytes(b)));
            }
            M::Out => {
                let size = Self::op_size(i, 1);
                let port = self.read_op(i, 0, bus)? as u16;
                self.io_allowed(port, size, bus)?;
                let v = self.read_op(i, 1, bus)? as u32;
                bus.io_out(port, &v.to_le_bytes()[..size]);
            }
            // ---- system ----
            M::Lgdt | M::Lidt => {
                self.require_cpl0()?;
                let (limit, mut base) =
                    self.read_pseudo_descriptor(seg_index(i.memory_segment()), self.ea(i), bus)?;
                if matches!(
                    i.code(),
                    iced_x86::Code::Lgdt_m1632_16 | iced_x86::Code::Lidt_m1632_16
                ) {
                    base &= 0xff_ffff;
                }
                let t = hv::TableRegister { base, limit };
                if i.mnemonic() == M::Lgdt {
                    self.state.gdt = t;
                } else {
                    self.state.idt = t;
                }
            }
            M::Sgdt | M::Sidt => {
                let t = if i.mnemonic() == M::Sgdt {
                    self.state.gdt
                } else {
                    self.state.idt
                };
                let segi = seg_index(i.memory_segment());
                let ea = self.ea(i);
                self.write_val(segi, ea, 2, u64::from(t.limit), bus)?;
                let n = if self.state.code64() { 8 } else { 4 };
                self.write_val(segi, ea + 2, n, t.base, bus)?;
            }
            M::Lldt | M::Ltr => {
                self.require_cpl0()?;
                if !self.state.protected() || self.state.v86() {
                    return Err(Fault::ud());
                }
                let sel = self.read_op(i, 0, bus)? as u16;
                self.load_system_segment(i.mnemonic() == M::Ltr, sel, bus)?;
            }
            M::Sldt | M::Str => {
                let v = if i.mnemonic() == M::Sldt {
                    self.state.ldt.selector
                } else {
                    self.state.tr.selector
                };
                self.write_op(i, 0, u64::from(v), bus)?;
            }
            M::Smsw => {
                let v = self.state.cr0 & 0xffff_ffff;
                self.write_op(i, 0, v, bus)?;
            }
            M::Lmsw => {
                self.require_cpl0()?;
                let v = self.read_op(i, 0, bus)? & 0xf;
                // LMSW can set PE but never clear it.
                let keep = self.state.cr0 & cr::PE;
                let new = (self.state.cr0 & !0xf) | v | keep;
                self.write_cr0(new)?;
            }
            M::Clts => {
                self.require_cpl0()?;
                self.state.cr0 &= !cr::TS;
            }
            M::Invlpg => {
                self.require_cpl0()?;
                let lin = self
                    .linear(
                        seg_index(i.memory_segment()),
                        self.ea(i),
                        1,
                        crate::mmu::Access::Read,
                    )
                    .unwrap_or(0);
                self.tlb.flush_page(lin);
            }
            M::Invlpga | M::Invpcid => {
                self.require_cpl0()?;
                self.tlb.flush();
            }
            M::Rdmsr => {
                self.require_cpl0()?;
                let index = self.reg(Register::ECX) as u32;
                let v = self.rdmsr(index, bus)?;
                self.set_reg(Register::EAX, v & 0xffff_ffff);
                self.set_reg(Register::EDX, v >> 32);
            }
            M::Wrmsr => {
                self.require_cpl0()?;
                let index = self.reg(Register::ECX) as u32;
                let v = (self.reg(Register::EDX) << 32) | self.reg(Register::EAX);
                self.wrmsr(index, v, bus)?;
            }
            M::Rdtsc | M::Rdtscp => {
                if self.state.cr4 & (1 << 2) != 0 && self.state.cpl() != 0 {
                    return Err(Fault::gp(0));
                }
                let t = bus.tsc();
                self.set_reg(Register::EAX, t & 0xffff_ffff);
                self.set_reg(Register::EDX, t >> 32);
                if i.mnemonic() == M::Rdtscp {
                    let aux = self.state.msrs.get(&msr::TSC_AUX).copied().unwrap_or(0);
                    self.set_reg(Register::ECX, aux & 0xffff_ffff);
                }
            }
            M::Cpuid => {
                let (a, b, c, d) = crate::cpuid::cpuid(
                    self,
                    self.reg(Register::EAX) as u32,
                    self.reg(Register::ECX) as u32,
                );
                self.set_reg(Register::EAX, u64::from(a));
                self.set_reg(Register::EBX, u64::from(b));
                self.set_reg(Register::ECX, u64::from(c));
                self.set_reg(Register::EDX, u64::from(d));
            }
            M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => {
                let (sel, off) = self.read_far_pointer(i, bus)?;
                let segi = match i.mnemonic() {
                    M::Lds => seg::DS,
                    M::Les => seg::ES,
                    M::Lfs => seg::FS,
                    M::Lgs => seg::GS,
                    _ => seg::SS,
                };
                self.load_segment(segi, sel, bus)?;
                self.set_reg(i.op0_register(), off);
            }
            M::Lar | M::Lsl => {
                let sel = self.read_op(i, 1, bus)? as u16;
                match self.descriptor(sel, bus) {
                    Ok((_, raw)) if sel & !3 != 0 => {
                        let d = crate::interrupt::parse_descriptor(sel, raw);
                        let v = if i.mnemonic() == M::Lar {
                            raw >> 32 & 0x00f0_ff00
                        } else {
                            u64::from(d.limit)
                        };
                        self.write_op(i, 0, v, bus)?;
                        self.state.rflags |= ZF;
                    }
                    _ => self.state.rflags &= !ZF,
                }
            }
            M::Verr | M::Verw => {
                let sel = self.read_op(i, 0, bus)? as u16;
                let ok = match self.descriptor(sel, bus) {
                    Ok((_, raw)) if sel & !3 != 0 => {
                        let d = crate::interrupt::parse_descriptor(sel, raw);
                        let code = d.type_ & 8 != 0;
                        d.s && if i.mnemonic() == M::Verr {
                            !code || d.type_ & 2 != 0
                        } else {
                            !code && d.type_ & 2 != 0
                        }
                    }
                    _ => false,
                };
                self.set_flags(ZF, if ok { ZF } else { 0 });
            }
            M::Swapgs => {
                if !self.state.code64() {
                    return Err(Fault::ud());
                }
                self.require_cpl0()?;
                let k = self
                    .state
                    .msrs
                    .get(&msr::KERNEL_GS_BASE)
                    .copied()
                    .unwrap_or(0);
                let g = self.state.seg[seg::GS].base;
                self.state.seg[seg::GS].base = k;
                self.state.msrs.insert(msr::KERNEL_GS_BASE, g);
            }
            M::Syscall | M::Sysret | M::Sysretq | M::Sysenter | M::Sysexit | M::Sysexitq => {
                return self.fast_system_call(i, next, bus)
            }
            _ => {
                if let Some(r) = crate::x87::execute(self, i, bus) {
                    r?;
                } else if let Some(r) = crate::sse::execute(self, i, bus) {
                    r?;
                } else {
                    return Err(self.unimplemented(i));
                }
            }
        }
        if new_rip != next {
            let mask = self.ip_mask(self.osize_for_branch(i));
            self.jump(new_rip & mask)?;
        } else {
            self.state.rip = next;
        }
        Ok(())
    }

    fn osize_for_branch(&self, i: &Instruction) -> usize {
        if self.state.code64() {
            return 8;
        }
        match i.op_kind(0) {
            OpKind::NearBranch16 => 2,
            OpKind::NearBranch32 => 4,
            _ => self.osize(i).max(2),
        }
    }

    fn count_register(&self, i: &Instruction) -> Register {
        // LOOPcc counts with the address-size register, which the opcode variant names.
        use iced_x86::Code as C;
        match i.code() {
            C::Loop_rel8_16_CX
            | C::Loop_rel8_32_CX
            | C::Loope_rel8_16_CX
            | C::Loope_rel8_32_CX
            | C::Loopne_rel8_16_CX
            | C::Loopne_rel8_32_CX => Register::CX,
            C::Loop_rel8_16_RCX
            | C::Loop_rel8_64_RCX
            | C::Loope_rel8_16_RCX
            | C::Loope_rel8_64_RCX
            | C::Loopne_rel8_16_RCX
            | C::Loopne_rel8_64_RCX => Register::RCX,
            _ => Register::ECX,
        }
    }

    fn read_far_pointer(&mut self, i: &Instruction, bus: &mut dyn Bus) -> R<(u16, u64)> {
        let segi = seg_index(i.memory_segment());
        let ea = self.ea(i);
        let osize = i.memory_size().size() - 2;
        let off = self.read_val(segi, ea, osize, bus)?;
        let sel = self.read_val(segi, ea + osize as u64, 2, bus)? as u16;
        Ok((sel, off))
    }

    fn mov(&mut self, i: &Instruction, bus: &mut dyn Bus) -> R<()> {
        let dst = i.op0_kind();
        if dst == OpKind::Register && i.op0_register().is_cr() {
            self.require_cpl0()?;
            let v = self.reg(i.op1_register());
            return self.write_cr(i.op0_register(), v);
        }
        if i.op1_kind() == OpKind::Register && i.op1_register().is_cr() {
            self.require_cpl0()?;
            let v = match i.op1_register() {
                Register::CR0 => self.state.cr0,
                Register::CR2 => self.state.cr2,
                Register::CR3 => self.state.cr3,
                Register::CR4 => self.state.cr4,
                Register::CR8 => self.state.cr8,
                _ => return Err(Fault::ud()),
            };
            self.set_reg(i.op0_register(), v);
            return Ok(());
        }
        if dst == OpKind::Register && i.op0_register().is_dr() {
            self.require_cpl0()?;
            let n = i.op0_register() as usize - Register::DR0 as usize;
            let v = self.reg(i.op1_register());
            if let Some(d) = self.state.dr.get_mut(n) {
                *d = v;
            }
            return Ok(());
        }
        if i.op1_kind() == OpKind::Register && i.op1_register().is_dr() {
            self.require_cpl0()?;
            let n = i.op1_register() as usize - Register::DR0 as usize;
            let v = self.state.dr.get(n).copied().unwrap_or(0);
            self.set_reg(i.op0_register(), v);
            return Ok(());
        }
        if dst == OpKind::Register && i.op0_register() == Register::CS {
            return Err(Fault::ud());
        }
        let v = self.read_op(i, 1, bus)?;
        self.write_op(i, 0, v, bus)
    }

    pub(crate) fn write_cr0(&mut self, v: u64) -> R<()> {
        let v = v | cr::ET;
        if (v & cr::PG != 0 && v & cr::PE == 0)
            || (v & cr::NW != 0 && v & cr::CD == 0)
            || v >> 32 != 0
        {
            return Err(Fault::gp(0));
        }
        let s = &mut self.state;
        if v & cr::PG != 0 && s.cr0 & cr::PG == 0 && s.efer & efer::LME != 0 {
            if s.cr4 & cr::PAE == 0 {
                return Err(Fault::gp(0));
            }
            s.efer |= efer::LMA;
        }
        if v & cr::PG == 0 && s.cr0 & cr::PG != 0 && s.efer & efer::LMA != 0 {
            if s.code64() {
                return Err(Fault::gp(0));
            }
            s.efer &= !efer::LMA;
        }
        s.cr0 = v;
        self.tlb.flush();
        Ok(())
    }

    fn write_cr(&mut self, r: Register, v: u64) -> R<()> {
        match r {
            Register::CR0 => self.write_cr0(v),
            Register::CR2 => {
                self.state.cr2 = v;
                Ok(())
            }
            Register::CR3 => {
                self.state.cr3 = v;
                if self.state.cr4 & cr::PGE != 0 {
                    self.tlb.flush_local();
                } else {
                    self.tlb.flush();
                }
                Ok(())
            }
            Register::CR4 => {
                let supported = cr::PSE
                    | cr::PAE
                    | cr::PGE
                    | cr::OSFXSR
                    | cr::OSXMMEXCPT
                    | (1 << 2)
                    | (1 << 3)
                    | (1 << 8)
                    | (1 << 6);
                if v & !supported != 0 || (self.state.long_mode() && v & cr::PAE == 0) {
                    return Err(Fault::gp(0));
                }
                self.state.cr4 = v;
                self.tlb.flush();
                Ok(())
            }
            Register::CR8 => {
                self.state.cr8 = v & 0xf;
                Ok(())
            }
            _ => Err(Fault::ud()),
        }
    }

    fn load_system_segment(&mut self, task: bool, sel: u16, bus: &mut dyn Bus) -> R<()> {
        if sel & !3 == 0 {
            if task {
                return Err(Fault::gp(0));
            }
            self.state.ldt = hv::Segment {
                selector: sel,
                unusable: true,
                ..hv::Segment::default()
            };
            return Ok(());
        }
        if sel & 4 != 0 {
            return Err(Fault::gp(u32::from(sel & !3)));
        }
        let (addr, raw) = self.descriptor(sel, bus)?;
        let mut d = crate::interrupt::parse_descriptor(sel, raw);
        let ok = !d.s
            && if task {
                d.type_ == 1 || d.type_ == 9
            } else {
                d.type_ == 2
            };
        if !ok {
            return Err(Fault::gp(u32::from(sel & !3)));
        }
        if !d.present {
            return Err(Fault::np(u32::from(sel & !3)));
        }
        if self.state.long_mode() {
            d.base |= self.read_sys(addr + 8, 4, bus)? << 32;
        }
        if task {
            // Mark busy.
            self.write_sys(addr + 5, 1, ((raw >> 40) as u8 | 2).into(), bus)?;
            d.type_ |= 2;
            self.state.tr = d;
        } else {
            self.state.ldt = d;
        }
        Ok(())
    }

    fn rdmsr(&mut self, index: u32, bus: &mut dyn Bus) -> R<u64> {
        let s = &self.state;
        Ok(match index {
            msr::TSC => bus.tsc(),
            msr::APIC_BASE => s.apic_base,
            msr::EFER => s.efer,
            msr::FS_BASE => s.seg[seg::FS].base,
            msr::GS_BASE => s.seg[seg::GS].base,
            0xfe => 0x508, // MTRRCAP: 8 variable ranges, fixed ranges, write-combining
            msr::ARCH_CAPABILITIES => crate::cpuid::ARCH_CAPABILITIES,
            msr::PRED_CMD => return Err(Fault::gp(0)),
            _ => match s.msrs.get(&index) {
                Some(&v) => v,
                None => bus.rdmsr(index).ok_or_else(|| Fault::gp(0))?,
            },
        })
    }

    fn wrmsr(&mut self, index: u32, v: u64, bus: &mut dyn Bus) -> R<()> {
        match index {
            msr::TSC => {
                let _ = bus.wrmsr(index, v);
            }
            msr::APIC_BASE => {
                self.state.apic_base = v;
                let _ = bus.wrmsr(index, v);
            }
            msr::EFER => {
                let allowed = efer::SCE | efer::LME | efer::NXE | efer::LMA;
                if v & !allowed != 0 {
                    return Err(Fault::gp(0));
                }
                let lma = self.state.efer & efer::LMA;
                if self.state.cr0 & cr::PG != 0 && (v ^ self.state.efer) & efer::LME != 0 {
                    return Err(Fault::gp(0));
                }
                self.state.efer = (v & !efer::LMA) | lma;
                self.tlb.flush();
            }
            msr::FS_BASE => self.state.seg[seg::FS].base = v,
            msr::GS_BASE => self.state.seg[seg::GS].base = v,
            // IBRS is the only control; IBPB the only command.
            msr::SPEC_CTRL | msr::PRED_CMD if v & !1 != 0 => return Err(Fault::gp(0)),
            msr::PRED_CMD => {}
            msr::ARCH_CAPABILITIES => return Err(Fault::gp(0)),
            _ => {
                if let Some(slot) = self.state.msrs.get_mut(&index) {
                    *slot = v;
                } else if !bus.wrmsr(index, v) {
                    return Err(Fault::gp(0));
                }
            }
        }
        Ok(())
    }

    fn bit_op(&mut self, i: &Instruction, bus: &mut dyn Bus) -> R<()> {
        let size = Self::op_size(i, 0) as u32 * 8;
        let op = match i.mnemonic() {
            M::Bt => BitOp::Test,
            M::Bts => BitOp::Set,
            M::Btr => BitOp::Reset,
            _ => BitOp::Complement,
        };
        let raw = self.read_op(i, 1, bus)?;
        if i.op0_kind() == OpKind::Memory && i.op1_kind() == OpKind::Register {
            // The bit offset is signed and may reach outside the operand.
            let off = alu::sign_extend(raw, size) as i64;
            let bytes = i64::from(size / 8);
            let word = off.div_euclid(i64::from(size));
            let bit = off.rem_euclid(i64::from(size)) as u32;
            let segi = seg_index(i.memory_segment());
            let ea = self.ea(i).wrapping_add((word * bytes) as u64);
            let v = self.read_val(segi, ea, bytes as usize, bus)?;
            let (nv, f) = alu::bit(op, v, bit, self.state.rflags);
            if op != BitOp::Test {
                self.write_val(segi, ea, bytes as usize, nv, bus)?;
            }
            self.set_flags(STATUS, f);
            return Ok(());
        }
        let v = self.read_op(i, 0, bus)?;
        let (nv, f) = alu::bit(op, v, (raw % u64::from(size)) as u32, self.state.rflags);
        if op != BitOp::Test {
            self.write_op(i, 0, nv, bus)?;
        }
        self.set_flags(STATUS, f);
        Ok(())
    }

    /// String instructions, with REP/REPE/REPNE. Each iteration is restartable: a fault leaves
    /// the registers describing the remaining work.
    fn string_op(&mut self, i: &Instruction, next: u64, bus: &mut dyn Bus) -> R<()> {
        let (asize, count_reg, si, di) = {
            let k = if matches!(
                i.op0_kind(),
                OpKind::MemoryESDI | OpKind::MemoryESEDI | OpKind::MemoryESRDI
            ) {
                i.op0_kind()
            } else {
                i.op1_kind()
            };
            let k2 = if matches!(
                k,
                OpKind::MemoryESDI | OpKind::MemoryESEDI | OpKind::MemoryESRDI
            ) {
                k
            } else {
                i.op0_kind()
            };
            match (k, k2) {
                (OpKind::MemoryESDI, _)
                | (_, OpKind::MemoryESDI)
                | (OpKind::MemorySegSI, _)
                | (_, OpKind::MemorySegSI) => (2, Register::CX, Register::SI, Register::DI),
                (OpKind::MemoryESRDI, _)
                | (_, OpKind::MemoryESRDI)
                | (OpKind::MemorySegRSI, _)
                | (_, OpKind::MemorySegRSI) => (8, Register::RCX, Register::RSI, Register::RDI),
                _ => (4, Register::ECX, Register::ESI, Register::EDI),
            }
        };
        let size: usize = match i.mnemonic() {
            M::Movsb | M::Stosb | M::Lodsb | M::Cmpsb | M::Scasb | M::Insb | M::Outsb => 1,
            M::Movsw | M::Stosw | M::Lodsw | M::Cmpsw | M::Scasw | M::Insw | M::Outsw => 2,
            M::Movsd | M::Stosd | M::Lodsd | M::Cmpsd | M::Scasd | M::Insd | M::Outsd => 4,
            _ => 8,
        };
        let rep = i.has_rep_prefix() || i.has_repe_prefix() || i.has_repne_prefix();
        let src_seg = seg_index(i.memory_segment());
        let amask = alu::mask(asize * 8);
        let step = if self.state.rflags & flags::DF != 0 {
            (size as u64).wrapping_neg()
        } else {
            size as u64
        };
        let mnem = i.mnemonic();
        let is_io = matches!(
            mnem,
            M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd
        );
        if is_io {
            let port = self.reg(Register::DX) as u16;
            self.io_allowed(port, size, bus)?;
        }
        // Bound the work per step so a long REP cannot stall the vCPU loop.
        let mut budget = 4096u32;
        loop {
            if rep && self.reg(count_reg) & amask == 0 {
                break;
            }
            let bulk_op = matches!(
                mnem,
                M::Movsb
                    | M::Movsw
                    | M::Movsd
                    | M::Movsq
                    | M::Stosb
                    | M::Stosw
                    | M::Stosd
                    | M::Stosq
            );
            if rep && bulk_op && asize >= 4 {
                let stos = matches!(mnem, M::Stosb | M::Stosw | M::Stosd | M::Stosq);
                let back = step != size as u64;
                let regs = (si, di, count_reg);
                let n = self.string_bulk(stos, back, size, src_seg, regs, amask, bus);
                if n > 0 {
                    if self.reg(count_reg) & amask == 0 {
                        break;
                    }
                    budget = budget.saturating_sub(n as u32);
                    if budget == 0 {
                        return Ok(());
                    }
                    continue;
                }
            }
            let s_off = self.reg(si) & amask;
            let d_off = self.reg(di) & amask;
            let mut stop_cond = None;
            match mnem {
                M::Movsb | M::Movsw | M::Movsd | M::Movsq => {
                    let v = self.read_val(src_seg, s_off, size, bus)?;
                    self.write_val(seg::ES, d_off, size, v, bus)?;
                    self.set_reg(si, s_off.wrapping_add(step) & amask);
                    self.set_reg(di, d_off.wrapping_add(step) & amask);
                }
                M::Stosb | M::Stosw | M::Stosd | M::Stosq => {
                    let v = self.state.gpr[0];
                    self.write_val(seg::ES, d_off, size, v, bus)?;
                    self.set_reg(di, d_off.wrapping_add(step) & amask);
                }
                M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => {
                    let v = self.read_val(src_seg, s_off, size, bus)?;
                    self.set_reg(acc_register(size), v);
                    self.set_reg(si, s_off.wrapping_add(step) & amask);
                }
                M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => {
                    let a = self.read_val(src_seg, s_off, size, bus)?;
                    let b = self.read_val(seg::ES, d_off, size, bus)?;
                    let (_, f) = alu::sub(size as u32 * 8, a, b, false);
                    self.set_flags(STATUS, f);
                    self.set_reg(si, s_off.wrapping_add(step) & amask);
                    self.set_reg(di, d_off.wrapping_add(step) & amask);
                    stop_cond = Some(f & ZF != 0);
                }
                M::Scasb | M::Scasw | M::Scasd | M::Scasq => {
                    let a = self.reg(acc_register(size));
                    let b = self.read_val(seg::ES, d_off, size, bus)?;
                    let (_, f) = alu::sub(size as u32 * 8, a, b, false);
                    self.set_flags(STATUS, f);
                    self.set_reg(di, d_off.wrapping_add(step) & amask);
                    stop_cond = Some(f & ZF != 0);
                }
                M::Insb | M::Insw | M::Insd => {
                    // Check the destination before the port read has side effects.
                    let lin =
                        self.linear(seg::ES, d_off, size as u64, crate::mmu::Access::Write)?;
                    let user = self.state.cpl() == 3;
                    self.translate(lin, crate::mmu::Access::Write, user, bus)?;
                    let mut b = [0u8; 4];
                    bus.io_in(self.reg(Register::DX) as u16, &mut b[..size]);
                    self.write_val(seg::ES, d_off, size, u64::from(u32::from_le_bytes(b)), bus)?;
                    self.set_reg(di, d_off.wrapping_add(step) & amask);
                }
                _ => {
                    let v = self.read_val(src_seg, s_off, size, bus)? as u32;
                    bus.io_out(self.reg(Register::DX) as u16, &v.to_le_bytes()[..size]);
                    self.set_reg(si, s_off.wrapping_add(step) & amask);
                }
            }
            if !rep {
                break;
            }
            let c = (self.reg(count_reg) & amask).wrapping_sub(1) & amask;
            self.set_reg(count_reg, c);
            if let Some(zf) = stop_cond {
                if (i.has_repe_prefix() && !zf) || (i.has_repne_prefix() && zf) {
                    break;
                }
            }
            if c == 0 {
                break;
            }
            budget -= 1;
            if budget == 0 {
                // Resume the same instruction on the next step.
                return Ok(());
            }
        }
        self.state.rip = next;
        Ok(())
    }

    /// REP MOVS/STOS with 32- or 64-bit addresses: the whole elements that lie in the current
    /// source and destination pages (going down when `back`, DF=1), read and written directly
    /// in RAM one element after the other in the element loop's order (so overlapping copies
    /// behave the same). Returns how many elements it did; 0 leaves the work (and any fault)
    /// to the element loop.
    #[allow(clippy::too_many_arguments)]
    fn string_bulk(
        &mut self,
        stos: bool,
        back: bool,
        size: usize,
        src_seg: usize,
        (si, di, count_reg): (Register, Register, Register),
        amask: u64,
        bus: &mut dyn Bus,
    ) -> usize {
        if self.code.is_none() {
            return 0;
        }
        let count = self.reg(count_reg) & amask;
        let s_off = self.reg(si) & amask;
        let d_off = self.reg(di) & amask;
        let Some(dphys) = self.fast_phys(seg::ES, d_off, size, true) else {
            return 0;
        };
        // Elements from this one to the end (or, going down, the start) of its page.
        let room = |phys: u64| {
            if back {
                (phys & 0xfff) as usize / size + 1
            } else {
                (0x1000 - (phys & 0xfff)) as usize / size
            }
        };
        // ... and without the offsets wrapping around the address size.
        let span = |off: u64| {
            let elems = if back {
                u128::from(off) / size as u128 + 1
            } else {
                (u128::from(amask) - u128::from(off) + 1) / size as u128
            };
            usize::try_from(elems).unwrap_or(usize::MAX)
        };
        let mut n = room(dphys)
            .min(span(d_off))
            .min(usize::try_from(count).unwrap_or(usize::MAX));
        let sphys = if stos {
            0
        } else {
            let Some(p) = self.fast_phys(src_seg, s_off, size, false) else {
                return 0;
            };
            n = n.min(room(p)).min(span(s_off));
            p
        };
        if n == 0 {
            return 0;
        }
        let len = n * size;
        // The lowest address of the run.
        let low = |phys: u64| {
            if back {
                phys - (len - size) as u64
            } else {
                phys
            }
        };
        let regions = bus.ram();
        let Some(dm) = crate::mmu::ram_slice(regions, low(dphys), len, true) else {
            return 0;
        };
        if stos {
            let v = self.state.gpr[0];
            for e in dm.chunks_exact(size) {
                crate::mmu::store(e, v);
            }
        } else {
            let Some(sm) = crate::mmu::ram_slice(regions, low(sphys), len, false) else {
                return 0;
            };
            let pairs = dm.chunks_exact(size).zip(sm.chunks_exact(size));
            if back {
                for (d, s) in pairs.rev() {
                    crate::mmu::store(d, crate::mmu::load(s));
                }
            } else {
                for (d, s) in pairs {
                    crate::mmu::store(d, crate::mmu::load(s));
                }
            }
        }
        if let Some(t) = &self.code {
            t.note_write(low(dphys), len);
        }
        let adv = if back {
            (len as u64).wrapping_neg()
        } else {
            len as u64
        };
        self.set_reg(di, d_off.wrapping_add(adv) & amask);
        if !stos {
            self.set_reg(si, s_off.wrapping_add(adv) & amask);
        }
        self.set_reg(count_reg, count - n as u64);
        n
    }

    fn fast_system_call(&mut self, i: &Instruction, next: u64, bus: &mut dyn Bus) -> R<()> {
        let _ = bus;
        let s = &mut self.state;
        let flat = hv::Segment::flat;
        match i.mnemonic() {
            M::Syscall => {
                if s.efer & efer::SCE == 0 || !s.long_mode() {
                    return Err(Fault::ud());
                }
                let star = s.msrs.get(&msr::STAR).copied().unwrap_or(0);
                let sel = ((star >> 32) & 0xfffc) as u16;
                s.gpr[1] = next;
                s.gpr[11] = s.rflags & !flags::RF;
                let mask = s.msrs.get(&msr::SFMASK).copied().unwrap_or(0);
                s.rflags = (s.rflags & !mask & !flags::RF) | flags::FIXED;
                let code64 = s.code64();
                s.seg[seg::CS] = flat(sel, true, true, 0);
                s.seg[seg::SS] = flat(sel + 8, false, false, 0);
                s.rip = if code64 {
                    s.msrs.get(&msr::LSTAR).copied().unwrap_or(0)
                } else {
                    s.msrs.get(&msr::CSTAR).copied().unwrap_or(0)
                };
            }
            M::Sysret | M::Sysretq => {
                if s.efer & efer::SCE == 0 || !s.long_mode() {
                    return Err(Fault::ud());
                }
                if s.cpl() != 0 {
                    return Err(Fault::gp(0));
                }
                let star = s.msrs.get(&msr::STAR).copied().unwrap_or(0);
                let base = ((star >> 48) & 0xffff) as u16;
                let to64 = i.mnemonic() == M::Sysretq;
                if to64 {
                    if !crate::mmu::canonical(s.gpr[1]) {
                        return Err(Fault::gp(0));
                    }
                    s.seg[seg::CS] = flat((base + 16) | 3, true, true, 3);
                    s.rip = s.gpr[1];
                } else {
                    s.seg[seg::CS] = flat(base | 3, true, false, 3);
                    s.rip = s.gpr[1] & 0xffff_ffff;
                }
                s.seg[seg::SS] = flat((base + 8) | 3, false, false, 3);
                s.rflags = (s.gpr[11] & 0x3c_7fd7) | flags::FIXED;
            }
            M::Sysenter => {
                let cs = s.msrs.get(&msr::SYSENTER_CS).copied().unwrap_or(0) as u16 & 0xfffc;
                if !s.protected() || cs == 0 {
                    return Err(Fault::gp(0));
                }
                let l = s.long_mode();
                s.rflags &= !(flags::VM | flags::IF | flags::RF);
                s.seg[seg::CS] = flat(cs, true, l, 0);
                s.seg[seg::SS] = flat(cs + 8, false, false, 0);
                s.rip = s.msrs.get(&msr::SYSENTER_EIP).copied().unwrap_or(0);
                s.gpr[4] = s.msrs.get(&msr::SYSENTER_ESP).copied().unwrap_or(0);
                if !l {
                    s.rip &= 0xffff_ffff;
                    s.gpr[4] &= 0xffff_ffff;
                }
            }
            _ => {
                let cs = s.msrs.get(&msr::SYSENTER_CS).copied().unwrap_or(0) as u16 & 0xfffc;
                if !s.protected() || cs == 0 || s.cpl() != 0 {
                    return Err(Fault::gp(0));
                }
                let to64 = i.mnemonic() == M::Sysexitq;
                let sel = if to64 { cs + 32 } else { cs + 16 };
                s.seg[seg::CS] = flat(sel | 3, true, to64, 3);
                s.seg[seg::SS] = flat((sel + 8) | 3, false, false, 3);
                s.rip = s.gpr[2];
                s.gpr[4] = s.gpr[1];
                if !to64 {
                    s.rip &= 0xffff_ffff;
                    s.gpr[4] &= 0xffff_ffff;
                }
            }
        }
        Ok(())
    }
}

/// The (low, high) register pair of a `size`-bit MUL/DIV: AL/AH, AX/DX, EAX/EDX or RAX/RDX.
fn acc_pair(size: u32) -> (Register, Register) {
    match size {
        8 => (Register::AL, Register::AH),
        16 => (Register::AX, Register::DX),
        32 => (Register::EAX, Register::EDX),
        _ => (Register::RAX, Register::RDX),
    }
}

impl Cpu {
    /// Writes a MUL/DIV result pair into the accumulator pair of `size` bits.
    fn set_acc_pair(&mut self, size: u32, lo: u64, hi: u64) {
        let (l, h) = acc_pair(size);
        self.set_reg(l, lo);
        self.set_reg(h, hi);
    }
}

fn is_far_pointer(m: iced_x86::MemorySize) -> bool {
    use iced_x86::MemorySize as S;
    matches!(m, S::SegPtr16 | S::SegPtr32 | S::SegPtr64)
}

fn acc_register(size: usize) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}
