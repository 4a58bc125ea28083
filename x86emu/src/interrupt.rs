//! Descriptors, segment loads, stacks, interrupt/exception delivery, IRET and far transfers.

use crate::cpu::{Bus, Cpu, EventKind, Fault, R};
use crate::mmu::Access;
use crate::state::{flags, seg};
use hv::Segment;

/// What started a task switch (it decides the busy bits, back link and NT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskSwitch {
    /// JMP to a TSS or task gate.
    Jump,
    /// CALL, INT n or an exception through a task gate (nests: back link, NT).
    Call,
    /// IRET with NT set (returns to the back-linked task).
    Iret,
}

impl TaskSwitch {
    fn from_call(call: bool) -> Self {
        if call {
            Self::Call
        } else {
            Self::Jump
        }
    }
}

/// Decodes an 8-byte segment descriptor.
pub fn parse_descriptor(selector: u16, raw: u64) -> Segment {
    let g = raw & (1 << 55) != 0;
    let mut limit = ((raw & 0xffff) | ((raw >> 32) & 0xf_0000)) as u32;
    if g {
        limit = (limit << 12) | 0xfff;
    }
    Segment {
        base: ((raw >> 16) & 0xff_ffff) | (((raw >> 56) & 0xff) << 24),
        limit,
        selector,
        type_: ((raw >> 40) & 0xf) as u8,
        s: raw & (1 << 44) != 0,
        dpl: ((raw >> 45) & 3) as u8,
        present: raw & (1 << 47) != 0,
        avl: raw & (1 << 52) != 0,
        l: raw & (1 << 53) != 0,
        db: raw & (1 << 54) != 0,
        g,
        unusable: false,
    }
}

fn is_code(d: &Segment) -> bool {
    d.s && d.type_ & 8 != 0
}

impl Cpu {
    /// Reads the 8-byte descriptor for `selector` from the GDT or LDT; returns (address, raw).
    pub(crate) fn descriptor(&mut self, selector: u16, bus: &mut dyn Bus) -> R<(u64, u64)> {
        let table = if selector & 4 != 0 {
            if self.state.ldt.unusable {
                return Err(Fault::gp(u32::from(selector & !3)));
            }
            (self.state.ldt.base, self.state.ldt.limit)
        } else {
            (self.state.gdt.base, u32::from(self.state.gdt.limit))
        };
        let index = u64::from(selector & !7);
        if index + 7 > u64::from(table.1) {
            return Err(Fault::gp(u32::from(selector & !3)));
        }
        let addr = table.0.wrapping_add(index);
        Ok((addr, self.read_sys(addr, 8, bus)?))
    }

    fn set_accessed(&mut self, addr: u64, raw: u64, bus: &mut dyn Bus) -> R<()> {
        if raw & (1 << 40) == 0 {
            self.write_sys(addr + 5, 1, ((raw >> 40) as u8 | 1).into(), bus)?;
        }
        Ok(())
    }

    /// MOV/POP/LxS to a data segment register or SS, with the protected-mode checks.
    pub(crate) fn load_segment(&mut self, segi: usize, selector: u16, bus: &mut dyn Bus) -> R<()> {
        let s = &mut self.state;
        if !s.protected() || s.v86() {
            let v86 = s.v86();
            let sg = &mut s.seg[segi];
            sg.selector = selector;
            sg.base = u64::from(selector) << 4;
            if v86 {
                *sg = Segment::real_mode(selector, segi == seg::CS);
                sg.dpl = 3;
            }
            if segi == seg::SS {
                self.new_shadow = true;
            }
            return Ok(());
        }
        let cpl = s.cpl();
        let rpl = (selector & 3) as u8;
        let err = u32::from(selector & !3);
        if selector & !3 == 0 {
            if segi == seg::SS && !(s.code64() && cpl < 3 && rpl == cpl) {
                return Err(Fault::gp(0));
            }
            let sg = &mut s.seg[segi];
            *sg = Segment {
                selector,
                unusable: true,
                dpl: rpl,
                ..Segment::default()
            };
            if segi == seg::SS {
                sg.db = true;
                self.new_shadow = true;
            }
            return Ok(());
        }
        let (addr, raw) = self.descriptor(selector, bus)?;
        let d = parse_descriptor(selector, raw);
        if segi == seg::SS {
            if rpl != cpl || d.dpl != cpl || !d.s || is_code(&d) || d.type_ & 2 == 0 {
                return Err(Fault::gp(err));
            }
            if !d.present {
                return Err(Fault::ss(err));
            }
            self.new_shadow = true;
        } else {
            let readable_code = is_code(&d) && d.type_ & 2 != 0;
            if !d.s || (is_code(&d) && !readable_code) {
                return Err(Fault::gp(err));
            }
            let conforming = is_code(&d) && d.type_ & 4 != 0;
            if !conforming && d.dpl < cpl.max(rpl) {
                return Err(Fault::gp(err));
            }
            if !d.present {
                return Err(Fault::np(err));
            }
        }
        self.set_accessed(addr, raw, bus)?;
        let mut d = d;
        d.type_ |= 1;
        self.state.seg[segi] = d;
        Ok(())
    }

    /// Loads CS for a far transfer to a code segment at privilege `cpl`.
    fn load_cs(&mut self, selector: u16, d: Segment, cpl: u8) {
        let mut d = d;
        d.selector = (selector & !3) | u16::from(cpl);
        d.type_ |= 1;
        self.state.seg[seg::CS] = d;
    }

    /// Mask of the stack pointer's width (SS.B or 64-bit mode).
    pub(crate) fn stack_mask(&self) -> u64 {
        match self.state.stack_size() {
            16 => 0xffff,
            32 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }

    /// Pushes `size` bytes onto the current stack.
    pub(crate) fn push(&mut self, size: usize, value: u64, bus: &mut dyn Bus) -> R<()> {
        let mask = self.stack_mask();
        let rsp = self.state.gpr[4];
        let new = rsp.wrapping_sub(size as u64) & mask;
        self.write_val(seg::SS, new, size, value, bus)?;
        self.state.gpr[4] = (rsp & !mask) | new;
        Ok(())
    }

    /// Pops `size` bytes from the current stack.
    pub(crate) fn pop(&mut self, size: usize, bus: &mut dyn Bus) -> R<u64> {
        let mask = self.stack_mask();
        let rsp = self.state.gpr[4];
        let v = self.read_val(seg::SS, rsp & mask, size, bus)?;
        self.state.gpr[4] = (rsp & !mask) | (rsp.wrapping_add(size as u64) & mask);
        Ok(v)
    }

    /// Reads the value `depth` bytes above the stack pointer without popping.
    pub(crate) fn peek(&mut self, depth: u64, size: usize, bus: &mut dyn Bus) -> R<u64> {
        let mask = self.stack_mask();
        let rsp = self.state.gpr[4];
        self.read_val(seg::SS, rsp.wrapping_add(depth) & mask, size, bus)
    }

    /// Delivers an interrupt or exception through the IVT or IDT.
    pub(crate) fn deliver(
        &mut self,
        vector: u8,
        error: Option<u32>,
        kind: EventKind,
        bus: &mut dyn Bus,
    ) -> R<()> {
        let ext = u32::from(kind != EventKind::Software);
        if !self.state.protected() {
            let idx = u64::from(vector) * 4;
            if idx + 3 > u64::from(self.state.idt.limit) {
                return Err(Fault::gp(0));
            }
            let entry = self.read_sys(self.state.idt.base + idx, 4, bus)?;
            let fl = self.state.rflags;
            self.push(2, fl, bus)?;
            self.push(2, self.reg(iced_x86::Register::CS), bus)?;
            self.push(2, self.state.rip, bus)?;
            self.state.rflags &= !(flags::IF | flags::TF | flags::AC | flags::RF);
            let sel = (entry >> 16) as u16;
            let cs = &mut self.state.seg[seg::CS];
            cs.selector = sel;
            cs.base = u64::from(sel) << 4;
            self.state.rip = entry & 0xffff;
            return Ok(());
        }
        let gate_err = u32::from(vector) * 8 + 2 + ext;
        let long = self.state.long_mode();
        let esize = if long { 16 } else { 8 };
        let idx = u64::from(vector) * esize;
        if idx + esize - 1 > u64::from(self.state.idt.limit) {
            return Err(Fault::gp(gate_err));
        }
        let gate = self.read_sys(self.state.idt.base + idx, 8, bus)?;
        let gtype = ((gate >> 40) & 0x1f) as u8;
        let gdpl = ((gate >> 45) & 3) as u8;
        let present = gate & (1 << 47) != 0;
        if !long && gtype == 0x5 {
            let cpl = self.state.cpl();
            if kind == EventKind::Software && gdpl < cpl {
                return Err(Fault::gp(gate_err));
            }
            if !present {
                return Err(Fault::np(gate_err));
            }
            let rip = self.state.rip;
            return self.task_switch((gate >> 16) as u16, TaskSwitch::Call, rip, error, bus);
        }
        let (gate32, trap) = match (long, gtype) {
            (true, 0xe) => (true, false),
            (true, 0xf) => (true, true),
            (false, 0x6) => (false, false),
            (false, 0x7) => (false, true),
            (false, 0xe) => (true, false),
            (false, 0xf) => (true, true),
            _ => return Err(Fault::gp(gate_err)),
        };
        let cpl = self.state.cpl();
        if kind == EventKind::Software && gdpl < cpl {
            return Err(Fault::gp(gate_err));
        }
        if !present {
            return Err(Fault::np(gate_err));
        }
        let selector = (gate >> 16) as u16;
        let mut offset = (gate & 0xffff) | ((gate >> 32) & 0xffff_0000);
        if long {
            offset |= self.read_sys(self.state.idt.base + idx + 8, 4, bus)? << 32;
        } else if !gate32 {
            offset &= 0xffff;
        }
        if selector & !3 == 0 {
            return Err(Fault::gp(ext));
        }
        let (_, raw) = self.descriptor(selector, bus)?;
        let d = parse_descriptor(selector, raw);
        let sel_err = u32::from(selector & !3) + ext;
        if !is_code(&d) || d.dpl > cpl || (long && !d.l) {
            return Err(Fault::gp(sel_err));
        }
        if !d.present {
            return Err(Fault::np(sel_err));
        }
        let conforming = d.type_ & 4 != 0;
        let new_cpl = if conforming { cpl } else { d.dpl };
        let old_flags = self.state.rflags;
        let old_cs = u64::from(self.state.seg[seg::CS].selector);
        let old_ss = u64::from(self.state.seg[seg::SS].selector);
        let old_rsp = self.state.gpr[4];
        let v86 = self.state.v86();
        let old_rip = self.state.rip;
        if long {
            let ist = (gate >> 32) & 7;
            let tss = self.state.tr.base;
            let rsp = if ist != 0 {
                self.read_sys(tss + 0x1c + ist * 8, 8, bus)?
            } else if new_cpl < cpl {
                self.read_sys(tss + 4 + u64::from(new_cpl) * 8, 8, bus)?
            } else {
                old_rsp
            };
            if new_cpl < cpl {
                self.state.seg[seg::SS] = Segment {
                    selector: u16::from(new_cpl),
                    unusable: true,
                    dpl: new_cpl,
                    db: true,
                    ..Segment::default()
                };
            }
            self.load_cs(selector, d, new_cpl);
            self.state.gpr[4] = rsp & !0xf;
            for v in [old_ss, old_rsp, old_flags, old_cs, old_rip] {
                self.push(8, v, bus)?;
            }
            if let Some(e) = error {
                self.push(8, u64::from(e), bus)?;
            }
        } else {
            let size = if gate32 { 4 } else { 2 };
            if new_cpl < cpl {
                let tss = self.state.tr.base;
                let tss32 = self.state.tr.type_ & 8 != 0;
                let (sp, ss) = if tss32 {
                    let off = 4 + u64::from(new_cpl) * 8;
                    (
                        self.read_sys(tss + off, 4, bus)?,
                        self.read_sys(tss + off + 4, 2, bus)? as u16,
                    )
                } else {
                    let off = 2 + u64::from(new_cpl) * 4;
                    (
                        self.read_sys(tss + off, 2, bus)?,
                        self.read_sys(tss + off + 2, 2, bus)? as u16,
                    )
                };
                let (ss_addr, ss_raw) = self
                    .descriptor(ss, bus)
                    .map_err(|_| Fault::ts(u32::from(ss & !3)))?;
                let ssd = parse_descriptor(ss, ss_raw);
                if (ss & 3) as u8 != new_cpl || ssd.dpl != new_cpl || is_code(&ssd) || !ssd.s {
                    return Err(Fault::ts(u32::from(ss & !3)));
                }
                if !ssd.present {
                    return Err(Fault::ss(u32::from(ss & !3)));
                }
                self.set_accessed(ss_addr, ss_raw, bus)?;
                let saved_segs = self.state.seg;
                self.load_cs(selector, d, new_cpl);
                self.state.seg[seg::SS] = ssd;
                self.state.gpr[4] = sp;
                if v86 {
                    for s in [seg::GS, seg::FS, seg::DS, seg::ES] {
                        self.push(size, u64::from(saved_segs[s].selector), bus)?;
                    }
                    for s in [seg::GS, seg::FS, seg::DS, seg::ES] {
                        self.state.seg[s] = Segment {
                            unusable: true,
                            ..Segment::default()
                        };
                    }
                }
                self.push(size, old_ss, bus)?;
                self.push(size, old_rsp, bus)?;
            } else {
                if v86 {
                    return Err(Fault::gp(u32::from(selector & !3)));
                }
                self.load_cs(selector, d, new_cpl);
            }
            self.push(size, old_flags, bus)?;
            self.push(size, old_cs, bus)?;
            self.push(size, old_rip, bus)?;
            if let Some(e) = error {
                self.push(size, u64::from(e), bus)?;
            }
        }
        self.state.rip = offset;
        self.state.rflags &= !(flags::TF | flags::NT | flags::RF | flags::VM);
        if !trap {
            self.state.rflags &= !flags::IF;
        }
        Ok(())
    }

    /// IRET / IRETD / IRETQ with operand size `size` bytes.
    pub(crate) fn iret(&mut self, size: usize, bus: &mut dyn Bus) -> R<()> {
        self.state.nmi_masked = false;
        let s = &self.state;
        if !s.protected() || s.v86() {
            if s.v86() && (s.rflags & flags::IOPL) >> 12 != 3 {
                return Err(Fault::gp(0));
            }
            let ip = self.pop(size, bus)?;
            let cs = self.pop(size, bus)? as u16;
            let fl = self.pop(size, bus)?;
            let keep = if self.state.v86() {
                flags::IOPL | flags::VM
            } else {
                flags::VM
            };
            let mask = if size == 2 { 0xffff } else { 0x3f_7fd5 };
            let mask = mask & !keep;
            self.state.rflags = ((self.state.rflags & !mask) | (fl & mask)) | flags::FIXED;
            self.load_segment(seg::CS, cs, bus)?;
            self.state.rip = ip & if size == 2 { 0xffff } else { 0xffff_ffff };
            return Ok(());
        }
        if s.rflags & flags::NT != 0 && !s.long_mode() {
            // Return to the task that called this one (the TSS back link).
            let back = self.read_sys(self.state.tr.base, 2, bus)? as u16;
            let rip = self.state.rip;
            return self.task_switch(back, TaskSwitch::Iret, rip, None, bus);
        }
        let cpl = s.cpl();
        let rip = self.pop(size, bus)?;
        let cs = self.pop(size, bus)? as u16;
        let fl = self.pop(size, bus)?;
        if fl & flags::VM != 0 && cpl == 0 && !self.state.long_mode() && size == 4 {
            // Return to virtual-8086 mode.
            let esp = self.pop(4, bus)?;
            let ss = self.pop(4, bus)? as u16;
            let es = self.pop(4, bus)? as u16;
            let ds = self.pop(4, bus)? as u16;
            let fs = self.pop(4, bus)? as u16;
            let gs = self.pop(4, bus)? as u16;
            self.state.rflags = (fl & 0x3f_7fd5) | flags::FIXED;
            for (i, sel) in [
                (seg::CS, cs),
                (seg::SS, ss),
                (seg::ES, es),
                (seg::DS, ds),
                (seg::FS, fs),
                (seg::GS, gs),
            ] {
                let mut d = Segment::real_mode(sel, i == seg::CS);
                d.dpl = 3;
                self.state.seg[i] = d;
            }
            self.state.gpr[4] = esp & 0xffff_ffff;
            self.state.rip = rip & 0xffff;
            return Ok(());
        }
        let rpl = (cs & 3) as u8;
        if cs & !3 == 0 || rpl < cpl {
            return Err(Fault::gp(u32::from(cs & !3)));
        }
        let (_, raw) = self.descriptor(cs, bus)?;
        let d = parse_descriptor(cs, raw);
        if !is_code(&d) || (d.type_ & 4 == 0 && d.dpl != rpl) || (d.type_ & 4 != 0 && d.dpl > rpl) {
            return Err(Fault::gp(u32::from(cs & !3)));
        }
        if !d.present {
            return Err(Fault::np(u32::from(cs & !3)));
        }
        let to_64 = self.state.code64() || (self.state.long_mode() && size == 8);
        let (new_rsp, new_ss) = if rpl > cpl || to_64 {
            (
                Some(self.pop(size, bus)?),
                Some(self.pop(size, bus)? as u16),
            )
        } else {
            (None, None)
        };
        // Flags: IOPL only at CPL 0, IF only when CPL <= IOPL; VM/VIF/VIP never from here.
        let iopl = ((self.state.rflags & flags::IOPL) >> 12) as u8;
        let mut mask: u64 =
            0x25_4dd5 | flags::TF | flags::DF | flags::NT | flags::RF | flags::AC | flags::ID;
        if cpl == 0 {
            mask |= flags::IOPL | flags::VIF | flags::VIP;
        }
        if cpl <= iopl {
            mask |= flags::IF;
        }
        if size == 2 {
            mask &= 0xffff;
        }
        self.state.rflags = ((self.state.rflags & !mask) | (fl & mask)) | flags::FIXED;
        self.load_cs(cs, d, rpl);
        if let (Some(rsp), Some(ss)) = (new_rsp, new_ss) {
            if ss & !3 == 0 && self.state.long_mode() && d.l {
                self.state.seg[seg::SS] = Segment {
                    selector: ss,
                    unusable: true,
                    dpl: rpl,
                    db: true,
                    ..Segment::default()
                };
            } else {
                self.load_segment(seg::SS, ss, bus)?;
            }
            self.state.gpr[4] = rsp;
            if rpl > cpl {
                for s in [seg::ES, seg::DS, seg::FS, seg::GS] {
                    let d = self.state.seg[s];
                    let data_or_nc = !is_code(&d) || d.type_ & 4 == 0;
                    if !d.unusable && data_or_nc && d.dpl < rpl {
                        self.state.seg[s] = Segment {
                            unusable: true,
                            ..Segment::default()
                        };
                    }
                }
            }
        }
        self.state.rip = if self.state.code64() {
            rip
        } else {
            rip & 0xffff_ffff
        };
        if size == 2 {
            self.state.rip &= 0xffff;
        }
        Ok(())
    }

    /// JMP FAR / CALL FAR to `selector:offset`; `call` pushes the return address with `size`.
    pub(crate) fn far_transfer(
        &mut self,
        selector: u16,
        offset: u64,
        size: usize,
        call: bool,
        next_ip: u64,
        bus: &mut dyn Bus,
    ) -> R<()> {
        if !self.state.protected() || self.state.v86() {
            if call {
                self.push(size, self.reg(iced_x86::Register::CS), bus)?;
                self.push(size, next_ip, bus)?;
            }
            self.load_segment(seg::CS, selector, bus)?;
            self.state.rip = offset;
            return Ok(());
        }
        let err = u32::from(selector & !3);
        if selector & !3 == 0 {
            return Err(Fault::gp(0));
        }
        let (addr, raw) = self.descriptor(selector, bus)?;
        let d = parse_descriptor(selector, raw);
        if !d.s {
            return match d.type_ {
                // Available 32-bit TSS, or a task gate naming one.
                0x9 => self.task_switch(selector, TaskSwitch::from_call(call), next_ip, None, bus),
                0x5 if !self.state.long_mode() => {
                    let gdpl = ((raw >> 45) & 3) as u8;
                    if gdpl < self.state.cpl().max((selector & 3) as u8) {
                        return Err(Fault::gp(err));
                    }
                    if raw & (1 << 47) == 0 {
                        return Err(Fault::np(err));
                    }
                    self.task_switch(
                        (raw >> 16) as u16,
                        TaskSwitch::from_call(call),
                        next_ip,
                        None,
                        bus,
                    )
                }
                _ => self.through_call_gate(selector, addr, raw, call, next_ip, bus),
            };
        }
        if !is_code(&d) {
            return Err(Fault::gp(err));
        }
        let cpl = self.state.cpl();
        let rpl = (selector & 3) as u8;
        let conforming = d.type_ & 4 != 0;
        if (conforming && d.dpl > cpl) || (!conforming && (rpl > cpl || d.dpl != cpl)) {
            return Err(Fault::gp(err));
        }
        if !d.present {
            return Err(Fault::np(err));
        }
        if call {
            self.push(size, self.reg(iced_x86::Register::CS), bus)?;
            self.push(size, next_ip, bus)?;
        }
        self.load_cs(selector, d, cpl);
        self.state.rip = offset;
        Ok(())
    }

    /// Far CALL/JMP through a call gate (16/32-bit gates; 64-bit gates in long mode). A CALL to a
    /// more privileged non-conforming segment switches to the TSS stack of that level and
    /// copies the gate's parameters. Task gates (task switches) raise #GP.
    fn through_call_gate(
        &mut self,
        selector: u16,
        addr: u64,
        raw: u64,
        call: bool,
        next_ip: u64,
        bus: &mut dyn Bus,
    ) -> R<()> {
        let err = u32::from(selector & !3);
        let long = self.state.long_mode();
        let gtype = ((raw >> 40) & 0xf) as u8;
        let gate_size = match (long, gtype) {
            (false, 0x4) => 2,
            (false, 0xc) => 4,
            (true, 0xc) => 8,
            _ => return Err(Fault::gp(err)),
        };
        let cpl = self.state.cpl();
        let rpl = (selector & 3) as u8;
        let gdpl = ((raw >> 45) & 3) as u8;
        if gdpl < cpl.max(rpl) {
            return Err(Fault::gp(err));
        }
        if raw & (1 << 47) == 0 {
            return Err(Fault::np(err));
        }
        let target_sel = (raw >> 16) as u16;
        let mut offset = (raw & 0xffff) | ((raw >> 32) & 0xffff_0000);
        if long {
            offset |= self.read_sys(addr + 8, 4, bus)? << 32;
        } else if gate_size == 2 {
            offset &= 0xffff;
        }
        let params = ((raw >> 32) & 0x1f) as usize;
        let terr = u32::from(target_sel & !3);
        if target_sel & !3 == 0 {
            return Err(Fault::gp(0));
        }
        let (_, traw) = self.descriptor(target_sel, bus)?;
        let t = parse_descriptor(target_sel, traw);
        if !is_code(&t) || t.dpl > cpl || (long && !t.l) {
            return Err(Fault::gp(terr));
        }
        if !t.present {
            return Err(Fault::np(terr));
        }
        let conforming = t.type_ & 4 != 0;
        if !call {
            if !conforming && t.dpl != cpl {
                return Err(Fault::gp(terr));
            }
            self.load_cs(target_sel, t, cpl);
            self.state.rip = offset;
            return Ok(());
        }
        let old_cs = u64::from(self.state.seg[seg::CS].selector);
        if conforming || t.dpl == cpl {
            self.push(gate_size, old_cs, bus)?;
            self.push(gate_size, next_ip, bus)?;
            self.load_cs(target_sel, t, cpl);
            self.state.rip = offset;
            return Ok(());
        }
        // More privileged: new stack from the TSS, then old SS:ESP, parameters, CS:EIP.
        let new_cpl = t.dpl;
        let old_ss = u64::from(self.state.seg[seg::SS].selector);
        let old_sp = self.state.gpr[4];
        let tss = self.state.tr.base;
        let mut copied = Vec::with_capacity(params);
        for k in 0..params {
            let mask = if self.state.seg[seg::SS].db {
                0xffff_ffff
            } else {
                0xffff
            };
            let at = old_sp.wrapping_add((k * gate_size) as u64) & mask;
            copied.push(self.read_val(seg::SS, at, gate_size, bus)?);
        }
        if long {
            let rsp = self.read_sys(tss + 4 + u64::from(new_cpl) * 8, 8, bus)?;
            self.load_cs(target_sel, t, new_cpl);
            self.state.seg[seg::SS] = Segment {
                selector: u16::from(new_cpl),
                unusable: true,
                dpl: new_cpl,
                db: true,
                ..Segment::default()
            };
            self.state.gpr[4] = rsp;
        } else {
            let tss32 = self.state.tr.type_ & 8 != 0;
            let (sp, ss) = if tss32 {
                let off = 4 + u64::from(new_cpl) * 8;
                (
                    self.read_sys(tss + off, 4, bus)?,
                    self.read_sys(tss + off + 4, 2, bus)? as u16,
                )
            } else {
                let off = 2 + u64::from(new_cpl) * 4;
                (
                    self.read_sys(tss + off, 2, bus)?,
                    self.read_sys(tss + off + 2, 2, bus)? as u16,
                )
            };
            let (ss_addr, ss_raw) = self
                .descriptor(ss, bus)
                .map_err(|_| Fault::ts(u32::from(ss & !3)))?;
            let ssd = parse_descriptor(ss, ss_raw);
            if (ss & 3) as u8 != new_cpl
                || ssd.dpl != new_cpl
                || is_code(&ssd)
                || !ssd.s
                || ssd.type_ & 2 == 0
            {
                return Err(Fault::ts(u32::from(ss & !3)));
            }
            if !ssd.present {
                return Err(Fault::ss(u32::from(ss & !3)));
            }
            self.set_accessed(ss_addr, ss_raw, bus)?;
            self.load_cs(target_sel, t, new_cpl);
            self.state.seg[seg::SS] = ssd;
            self.state.gpr[4] = sp;
        }
        self.push(gate_size, old_ss, bus)?;
        self.push(gate_size, old_sp, bus)?;
        for v in copied.into_iter().rev() {
            self.push(gate_size, v, bus)?;
        }
        self.push(gate_size, old_cs, bus)?;
        self.push(gate_size, next_ip, bus)?;
        self.state.rip = offset;
        Ok(())
    }

    /// Hardware task switch to the 32-bit TSS `selector` (SDM vol. 3, 7.3): saves the current
    /// task's registers into its TSS, manages the busy bits, back link and NT, loads the new
    /// task's CR3, LDT, segments and registers, and sets CR0.TS. `next_ip` is the EIP saved for
    /// the old task; an `error` code (exception through a task gate) is pushed on the new stack.
    /// 16-bit TSSs raise #GP.
    pub(crate) fn task_switch(
        &mut self,
        selector: u16,
        how: TaskSwitch,
        next_ip: u64,
        error: Option<u32>,
        bus: &mut dyn Bus,
    ) -> R<()> {
        let err = u32::from(selector & !3);
        if selector & 4 != 0 || selector & !3 == 0 {
            return Err(Fault::ts(err));
        }
        let (addr, raw) = self.descriptor(selector, bus)?;
        let d = parse_descriptor(selector, raw);
        let want_busy = how == TaskSwitch::Iret;
        let ok_type = if want_busy {
            d.type_ == 0xb
        } else {
            d.type_ == 0x9
        };
        if d.s || !ok_type {
            return Err(if want_busy {
                Fault::ts(err)
            } else {
                Fault::gp(err)
            });
        }
        if !d.present {
            return Err(Fault::np(err));
        }
        if d.limit < 0x67 {
            return Err(Fault::ts(err));
        }
        // Save the outgoing task.
        let old = self.state.tr;
        let ob = old.base;
        let mut out_flags = self.state.rflags;
        if how != TaskSwitch::Call {
            out_flags &= !flags::NT;
        }
        self.write_sys(ob + 0x20, 4, next_ip & 0xffff_ffff, bus)?;
        self.write_sys(ob + 0x24, 4, out_flags & 0xffff_ffff, bus)?;
        for k in 0..8 {
            self.write_sys(
                ob + 0x28 + k * 4,
                4,
                self.state.gpr[k as usize] & 0xffff_ffff,
                bus,
            )?;
        }
        let out_sels = self.state.seg.map(|sg| sg.selector);
        for (k, sel) in out_sels.iter().enumerate() {
            self.write_sys(ob + 0x48 + k as u64 * 4, 2, u64::from(*sel), bus)?;
        }
        // Busy bits and the back link.
        if how != TaskSwitch::Call {
            let (oaddr, oraw) = self.descriptor(old.selector, bus)?;
            self.write_sys(oaddr + 5, 1, (oraw >> 40) & 0xfd, bus)?;
        }
        if how != TaskSwitch::Iret {
            self.write_sys(addr + 5, 1, ((raw >> 40) & 0xff) | 2, bus)?;
        }
        let nb = d.base;
        if how == TaskSwitch::Call {
            self.write_sys(nb, 2, u64::from(old.selector), bus)?;
        }
        // Load the incoming task.
        let mut tr = d;
        tr.type_ = 0xb;
        self.state.tr = tr;
        let cr3 = self.read_sys(nb + 0x1c, 4, bus)?;
        let eip = self.read_sys(nb + 0x20, 4, bus)?;
        let mut eflags = self.read_sys(nb + 0x24, 4, bus)? | flags::FIXED;
        if how == TaskSwitch::Call {
            eflags |= flags::NT;
        }
        let mut gpr = [0u64; 8];
        for (k, g) in gpr.iter_mut().enumerate() {
            *g = self.read_sys(nb + 0x28 + k as u64 * 4, 4, bus)?;
        }
        let mut sels = [0u16; 6];
        for (k, sel) in sels.iter_mut().enumerate() {
            *sel = self.read_sys(nb + 0x48 + k as u64 * 4, 2, bus)? as u16;
        }
        let ldt = self.read_sys(nb + 0x60, 2, bus)? as u16;
        if self.state.cr0 & crate::state::cr::PG != 0 {
            self.state.cr3 = cr3;
        }
        self.tlb.flush();
        self.state.gpr[..8].copy_from_slice(&gpr);
        self.state.rflags = eflags;
        self.state.rip = eip;
        self.state.cr0 |= crate::state::cr::TS;
        self.load_task_ldt(ldt, bus)?;
        if eflags & flags::VM != 0 {
            for (k, sel) in sels.iter().enumerate() {
                let mut sg = Segment::real_mode(*sel, k == seg::CS);
                sg.dpl = 3;
                self.state.seg[k] = sg;
            }
        } else {
            let cs = sels[seg::CS];
            let (_, craw) = self
                .descriptor(cs, bus)
                .map_err(|_| Fault::ts(u32::from(cs & !3)))?;
            let cd = parse_descriptor(cs, craw);
            if !is_code(&cd) {
                return Err(Fault::ts(u32::from(cs & !3)));
            }
            if !cd.present {
                return Err(Fault::np(u32::from(cs & !3)));
            }
            self.load_cs(cs, cd, (cs & 3) as u8);
            for k in [seg::SS, seg::DS, seg::ES, seg::FS, seg::GS] {
                self.load_segment(k, sels[k], bus)
                    .map_err(|f| Fault { vector: 10, ..f })?;
            }
            self.new_shadow = false;
        }
        if let Some(e) = error {
            let size = 4;
            self.push(size, u64::from(e), bus)?;
        }
        Ok(())
    }

    fn load_task_ldt(&mut self, sel: u16, bus: &mut dyn Bus) -> R<()> {
        if sel & !3 == 0 {
            self.state.ldt = Segment {
                selector: sel,
                unusable: true,
                ..Segment::default()
            };
            return Ok(());
        }
        let (_, raw) = self
            .descriptor(sel & !4, bus)
            .map_err(|_| Fault::ts(u32::from(sel & !3)))?;
        let d = parse_descriptor(sel, raw);
        if d.s || d.type_ != 2 || !d.present {
            return Err(Fault::ts(u32::from(sel & !3)));
        }
        self.state.ldt = d;
        Ok(())
    }

    /// RETF [imm] with operand size `size`.
    pub(crate) fn far_return(&mut self, size: usize, imm: u64, bus: &mut dyn Bus) -> R<()> {
        let ip = self.pop(size, bus)?;
        let cs = self.pop(size, bus)? as u16;
        if !self.state.protected() || self.state.v86() {
            self.load_segment(seg::CS, cs, bus)?;
            self.state.rip = ip;
            let mask = self.stack_mask();
            self.state.gpr[4] =
                (self.state.gpr[4] & !mask) | (self.state.gpr[4].wrapping_add(imm) & mask);
            return Ok(());
        }
        let cpl = self.state.cpl();
        let rpl = (cs & 3) as u8;
        if cs & !3 == 0 || rpl < cpl {
            return Err(Fault::gp(u32::from(cs & !3)));
        }
        let (_, raw) = self.descriptor(cs, bus)?;
        let d = parse_descriptor(cs, raw);
        if !is_code(&d) {
            return Err(Fault::gp(u32::from(cs & !3)));
        }
        if !d.present {
            return Err(Fault::np(u32::from(cs & !3)));
        }
        let mask = self.stack_mask();
        self.state.gpr[4] =
            (self.state.gpr[4] & !mask) | (self.state.gpr[4].wrapping_add(imm) & mask);
        if rpl > cpl {
            let rsp = self.pop(size, bus)?;
            let ss = self.pop(size, bus)? as u16;
            self.load_cs(cs, d, rpl);
            self.load_segment(seg::SS, ss, bus)?;
            self.state.gpr[4] = rsp.wrapping_add(imm);
        } else {
            self.load_cs(cs, d, rpl);
        }
        self.state.rip = ip;
        Ok(())
    }

    /// Reads a linear-address pseudo-descriptor (LGDT/LIDT operand): (limit, base).
    pub(crate) fn read_pseudo_descriptor(
        &mut self,
        segi: usize,
        offset: u64,
        bus: &mut dyn Bus,
    ) -> R<(u16, u64)> {
        let limit = self.read_val(segi, offset, 2, bus)? as u16;
        let base = if self.state.code64() {
            self.read_val(segi, offset + 2, 8, bus)?
        } else {
            self.read_val(segi, offset + 2, 4, bus)?
        };
        Ok((limit, base))
    }

    /// Fetch-checks a linear address (used by branch targets in 64-bit mode).
    pub(crate) fn check_canonical(&self, target: u64) -> R<()> {
        if self.state.code64() && !crate::mmu::canonical(target) {
            return Err(Fault::gp(0));
        }
        let _ = Access::Fetch;
        Ok(())
    }
}
