//! The block engine, with and without native blocks, against the per-instruction interpreter
//! on random programs.
//!
//! Each program is a random sequence of the instructions the block engine runs as fast forms
//! (ALU, MOV/MOVZX/MOVSX/MOVSXD, LEA, INC/DEC, PUSH/POP, shifts and rotates, IMUL, CMOVcc) mixed
//! with flag readers that go through the generic path (ADC/SBB, SETcc, PUSHF, Jcc over the
//! next instructions) and near CALL/RET, on registers and on memory, in 64-bit and 32-bit
//! code, run a few times in a loop that crosses a page boundary (so native blocks are linked
//! and their links followed). The same program from the same state runs once through
//! `Cpu::run` without a code tracker (every instruction through `Cpu::step`) and through the
//! block engine with direct RAM (with large and tiny budgets, so deferred flags also cross
//! calls), once interpreting its blocks and once running them as host code from their first
//! run; registers, flags and memory must agree.

use backend_emu::ExecMemory;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use x86emu::{Bus, CodeTracker, Cpu, RamRegion, Step};

struct Mem<'a> {
    regions: [RamRegion<'a>; 1],
    tracker: Option<Arc<CodeTracker>>,
}

impl Bus for Mem<'_> {
    fn read(&mut self, a: u64, d: &mut [u8]) {
        for (k, b) in d.iter_mut().enumerate() {
            *b = self.regions[0]
                .bytes
                .get(a as usize + k)
                .map_or(0xff, |x| x.load(Ordering::Relaxed));
        }
    }
    fn write(&mut self, a: u64, d: &[u8]) {
        for (k, b) in d.iter().enumerate() {
            if let Some(x) = self.regions[0].bytes.get(a as usize + k) {
                x.store(*b, Ordering::Relaxed);
            }
        }
        if let Some(t) = &self.tracker {
            t.note_write(a, d.len());
        }
    }
    fn io_in(&mut self, _: u16, d: &mut [u8]) {
        d.fill(0xff);
    }
    fn io_out(&mut self, _: u16, _: &[u8]) {}
    fn tsc(&mut self) -> u64 {
        0
    }
    fn ram(&self) -> &[RamRegion<'_>] {
        if self.tracker.is_some() {
            &self.regions
        } else {
            &[]
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const RAM: usize = 0x40_0000;
const GDT: usize = 0x500;
const PML4: usize = 0x2000;
/// Programs start shortly before a page boundary, so that their blocks also cross pages.
const CODE: u64 = 0x10f40;
const STACK_TOP: u64 = 0x30000;
/// RBX/EBX points here; memory operands are [rbx + disp8] and [rbx + rsi*scale + disp8] with
/// RSI kept small.
const DATA: u64 = 0x20000;
/// The loop counter: above the stack, beyond what memory operands reach (even when a byte
/// write to BH moved RBX in 32-bit code).
const COUNTER: u32 = 0x38000;
/// Times each program's instructions run.
const ROUNDS: u8 = 3;

/// Registers a program may write: not RSP (stack), RBX (data pointer) or RSI (index).
fn dst_reg(rng: &mut Rng, long: bool) -> u8 {
    let choices: &[u8] = if long {
        &[0, 1, 2, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    } else {
        &[0, 1, 2, 5, 7]
    };
    choices[rng.below(choices.len() as u64) as usize]
}

fn any_reg(rng: &mut Rng, long: bool) -> u8 {
    (rng.below(if long { 16 } else { 8 })) as u8
}

/// Operand size: 1, 2, 4 or (64-bit code) 8 bytes.
fn size(rng: &mut Rng, long: bool) -> u8 {
    match rng.below(if long { 4 } else { 3 }) {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => 8,
    }
}

/// Prefixes for `size`, register fields `reg`/`rm` (REX in 64-bit code), then `op`.
fn prefixed(long: bool, size: u8, reg: u8, rm: u8, index: u8, op: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    if size == 2 {
        v.push(0x66);
    }
    if long {
        let rex = 0x40
            | if size == 8 { 8 } else { 0 }
            | if reg >= 8 { 4 } else { 0 }
            | if index >= 8 { 2 } else { 0 }
            | if rm >= 8 { 1 } else { 0 };
        // Byte registers 4-7 mean SPL..DIL with any REX and AH..BH without; either is fine,
        // but both engines must see the same bytes, so always emit REX for byte operands.
        if rex != 0x40 || size == 1 {
            v.push(rex);
        }
    }
    v.extend_from_slice(op);
    v
}

/// ModRM (and SIB/displacement) for a register or a memory operand at RBX (+RSI*scale) + disp8.
fn modrm(rng: &mut Rng, reg: u8, rm: Option<u8>) -> (Vec<u8>, u8, u8) {
    match rm {
        Some(r) => (vec![0xc0 | ((reg & 7) << 3) | (r & 7)], r, 0),
        None => {
            let disp = (rng.below(0x70)) as u8;
            if rng.below(2) == 0 {
                (vec![0x40 | ((reg & 7) << 3) | 3, disp], 3, 0)
            } else {
                let scale = rng.below(4) as u8;
                (
                    vec![0x44 | ((reg & 7) << 3), (scale << 6) | (6 << 3) | 3, disp],
                    3,
                    6,
                )
            }
        }
    }
}

/// One random instruction (an ALU/move/shift form with a register or memory operand, or a
/// flag reader).
fn instruction(rng: &mut Rng, long: bool) -> Vec<u8> {
    let sz = size(rng, long);
    let wide = u8::from(sz != 1);
    let d = dst_reg(rng, long);
    let s = any_reg(rng, long);
    let mem = rng.below(3) == 0;
    let rm = if mem { None } else { Some(d) };
    let enc = |rng: &mut Rng, reg: u8, rm: Option<u8>, op: &[u8]| {
        let (m, rmr, idx) = modrm(rng, reg, rm);
        let mut v = prefixed(long, sz, reg, rmr, idx, op);
        v.extend(m);
        v
    };
    let imm = |rng: &mut Rng, n: u8| -> Vec<u8> {
        let x = rng.next().to_le_bytes();
        x[..usize::from(n.min(4))].to_vec()
    };
    match rng.below(16) {
        // ALU r/m, reg and reg, r/m: ADD OR ADC SBB AND SUB XOR CMP.
        0 | 1 => {
            let op = (rng.below(8) as u8) << 3;
            if rng.below(2) == 0 {
                enc(rng, s, rm, &[op | wide])
            } else {
                enc(rng, d, if mem { None } else { Some(s) }, &[op | 2 | wide])
            }
        }
        // ALU r/m, imm (81/83/80).
        2 => {
            let op = rng.below(8) as u8;
            let short = sz != 1 && rng.below(2) == 0;
            let opc = if sz == 1 {
                0x80
            } else if short {
                0x83
            } else {
                0x81
            };
            let mut v = enc(rng, op, rm, &[opc]);
            v.extend(imm(rng, if short || sz == 1 { 1 } else { sz.min(4) }));
            v
        }
        // TEST r/m, reg and TEST r/m, imm.
        3 => {
            if rng.below(2) == 0 {
                enc(rng, s, rm, &[0x84 | wide])
            } else {
                let mut v = enc(rng, 0, rm, &[0xf6 | wide]);
                v.extend(imm(rng, sz.min(4)));
                v
            }
        }
        // MOV r/m, reg / reg, r/m / r/m, imm.
        4 => match rng.below(3) {
            0 => enc(rng, s, rm, &[0x88 | wide]),
            1 => enc(rng, d, if mem { None } else { Some(s) }, &[0x8a | wide]),
            _ => {
                let mut v = enc(rng, 0, rm, &[0xc6 | wide]);
                v.extend(imm(rng, sz));
                v
            }
        },
        // INC/DEC r/m, NEG/NOT r/m.
        5 => {
            let which = rng.below(2) as u8;
            if rng.below(2) == 0 {
                enc(rng, which, rm, &[0xfe | wide])
            } else {
                enc(rng, 2 + which, rm, &[0xf6 | wide])
            }
        }
        // Shifts and rotates by 1, imm8 and CL.
        6 => {
            let op = rng.below(8) as u8;
            match rng.below(3) {
                0 => enc(rng, op, rm, &[0xd0 | wide]),
                1 => enc(rng, op, rm, &[0xd2 | wide]),
                _ => {
                    let mut v = enc(rng, op, rm, &[0xc0 | wide]);
                    v.push(rng.below(70) as u8);
                    v
                }
            }
        }
        // MOVZX/MOVSX from a byte or word, MOVSXD.
        7 => {
            let (m, rmr, idx) = modrm(rng, d, if mem { None } else { Some(s) });
            let dsz = if long && rng.below(2) == 0 { 8 } else { 4 };
            let op: &[u8] = match rng.below(if long { 5 } else { 4 }) {
                0 => &[0x0f, 0xb6],
                1 => &[0x0f, 0xb7],
                2 => &[0x0f, 0xbe],
                3 => &[0x0f, 0xbf],
                _ => &[0x63],
            };
            let mut v = prefixed(long, dsz, d, rmr, idx, op);
            v.extend(m);
            v
        }
        // LEA reg, [rbx + rsi*scale + disp8].
        8 => {
            let lsz = if sz == 1 { 4 } else { sz };
            let (m, rmr, idx) = modrm(rng, d, None);
            let mut v = prefixed(long, lsz, d, rmr, idx, &[0x8d]);
            v.extend(m);
            v
        }
        // PUSH reg; POP reg (balanced, through the stack).
        9 => {
            let mut v = Vec::new();
            if long && s >= 8 {
                v.push(0x41);
            }
            v.push(0x50 | (s & 7));
            if long && d >= 8 {
                v.push(0x41);
            }
            v.push(0x58 | (d & 7));
            v
        }
        // IMUL reg, r/m (16/32/64-bit).
        10 => {
            let isz = if sz == 1 { 4 } else { sz };
            let (m, rmr, idx) = modrm(rng, d, if mem { None } else { Some(s) });
            let mut v = prefixed(long, isz, d, rmr, idx, &[0x0f, 0xaf]);
            v.extend(m);
            v
        }
        // CMOVcc reg, r/m.
        11 => {
            let csz = if sz == 1 { 4 } else { sz };
            let (m, rmr, idx) = modrm(rng, d, if mem { None } else { Some(s) });
            let cc = rng.below(16) as u8;
            let mut v = prefixed(long, csz, d, rmr, idx, &[0x0f, 0x40 | cc]);
            v.extend(m);
            v
        }
        // SETcc r/m8.
        12 => {
            let cc = rng.below(16) as u8;
            let (m, rmr, idx) = modrm(rng, 0, rm);
            let mut v = prefixed(long, 1, 0, rmr, idx, &[0x0f, 0x90 | cc]);
            v.extend(m);
            v
        }
        // PUSHF; POP reg: the whole flags image in a register.
        13 => {
            let mut v = vec![0x9c];
            if long && d >= 8 {
                v.push(0x41);
            }
            v.push(0x58 | (d & 7));
            v
        }
        // XCHG reg, r/m and XADD.
        14 => {
            if rng.below(2) == 0 {
                let other = dst_reg(rng, long);
                enc(rng, d, if mem { None } else { Some(other) }, &[0x86 | wide])
            } else {
                let (m, rmr, idx) = modrm(rng, s, rm);
                let mut v = prefixed(long, sz, s, rmr, idx, &[0x0f, 0xc0 | wide]);
                v.extend(m);
                // XADD writes its source register too; keep RBX/RSI/RSP intact.
                if matches!(s, 3 | 4 | 6) {
                    return instruction(rng, long);
                }
                v
            }
        }
        // CLC/STC/CMC, NOP (one byte, or 0F 1F /0 with a register or memory operand), a
        // CALL to a RET that returns to a JMP over it, BSWAP, PUSH imm; POP reg,
        // CBW/CWDE/CDQE, PREFETCHT0, MUL and DIV, indirect CALL and JMP.
        _ => match rng.below(11) {
            0 => vec![0x90],
            1 => enc(rng, 0, rm, &[0x0f, 0x1f]),
            2 => vec![0xe8, 2, 0, 0, 0, 0xeb, 1, 0xc3],
            3 => {
                let bsz = if long && rng.below(2) == 0 { 8 } else { 4 };
                prefixed(long, bsz, 0, d, 0, &[0x0f, 0xc8 | (d & 7)])
            }
            4 => {
                let mut v = if rng.below(2) == 0 {
                    vec![0x6a, rng.next() as u8]
                } else {
                    let mut v = vec![0x68];
                    v.extend(imm(rng, 4));
                    v
                };
                if long && d >= 8 {
                    v.push(0x41);
                }
                v.push(0x58 | (d & 7));
                v
            }
            5 => prefixed(long, if sz == 1 { 4 } else { sz }, 0, 0, 0, &[0x98]),
            6 => enc(rng, 1, None, &[0x0f, 0x18]),
            7 => {
                // MUL r/m, or OR r/m, 1; XOR EDX, EDX; DIV r/m (a divisor of at least 1, a
                // quotient that fits). A register divisor is not RDX.
                let wsz = if sz == 8 { 8 } else { 4 };
                let r = if d == 2 { 1 } else { d };
                let (m, rmr, idx) = modrm(rng, 4, if mem { None } else { Some(r) });
                let with = |reg: u8, op: &[u8]| {
                    let mut v = prefixed(long, wsz, 0, rmr, idx, op);
                    let mut m = m.clone();
                    m[0] = (m[0] & !0x38) | (reg << 3);
                    v.extend(m);
                    v
                };
                if rng.below(2) == 0 {
                    with(4, &[0xf7])
                } else {
                    let mut v = with(1, &[0x83]);
                    v.push(1);
                    v.extend_from_slice(&[0x31, 0xd2]);
                    v.extend(with(6, &[0xf7]));
                    v
                }
            }
            8 => indirect_branch(rng, long),
            _ => vec![[0xf8, 0xf9, 0xf5][rng.below(3) as usize]],
        },
    }
}

/// An indirect CALL or JMP through a register or the stack: the address of the sequence's own
/// code from CALL/POP, then CALL reg to a RET that returns to a JMP over it, JMP reg over a
/// HLT, or the same through `[rSP]` after pushing the target.
fn indirect_branch(rng: &mut Rng, long: bool) -> Vec<u8> {
    let r = [0u8, 1, 2, 5, 7][rng.below(5) as usize];
    let add_len = if long { 4 } else { 3 };
    // From the POP (the CALL's return address) to the target.
    let (tail, to_target): (Vec<u8>, usize) = match rng.below(4) {
        0 => (vec![0xff, 0xd0 | r, 0xeb, 0x01, 0xc3], 4),
        1 => (vec![0xff, 0xe0 | r, 0xf4], 3),
        2 => (
            vec![0x50 | r, 0xff, 0x14, 0x24, 0xeb, 0x01, 0xc3, 0x58 | r],
            6,
        ),
        _ => (vec![0x50 | r, 0xff, 0x24, 0x24, 0xf4, 0x58 | r], 5),
    };
    let k = 1 + add_len + to_target;
    let mut v = vec![0xe8, 0, 0, 0, 0, 0x58 | r];
    if long {
        v.push(0x48);
    }
    v.extend_from_slice(&[0x83, 0xc0 | r, k as u8]);
    v.extend(tail);
    v
}

/// A random program: instructions, some preceded by a Jcc over the next one to three, run
/// [`ROUNDS`] times (a loop on a counter in memory), then HLT.
fn program(rng: &mut Rng, long: bool, len: usize) -> Vec<u8> {
    let insns: Vec<Vec<u8>> = (0..len).map(|_| instruction(rng, long)).collect();
    // Which instructions get a Jcc in front, over how many instructions (with their own Jcc).
    let jumps: Vec<Option<(u8, usize)>> = (0..len)
        .map(|_| (rng.below(6) == 0).then(|| (rng.below(16) as u8, 1 + rng.below(3) as usize)))
        .collect();
    let unit = |j: usize| insns[j].len() + if jumps[j].is_some() { 2 } else { 0 };
    let mut code = Vec::new();
    for (i, insn) in insns.iter().enumerate() {
        if let Some((cc, over)) = jumps[i] {
            let skip = insn.len() + (i + 1..(i + over).min(len)).map(unit).sum::<usize>();
            match u8::try_from(skip) {
                Ok(rel) if rel < 0x80 => code.extend_from_slice(&[0x70 | cc, rel]),
                // Too far: a Jcc over nothing keeps the layout.
                _ => code.extend_from_slice(&[0x70 | cc, 0]),
            }
        }
        code.extend_from_slice(insn);
    }
    // DEC dword [COUNTER] (absolute, through a SIB byte without base or index); JNZ rel32
    // back to the start.
    code.extend_from_slice(&[0xff, 0x0c, 0x25]);
    code.extend_from_slice(&COUNTER.to_le_bytes());
    let back = -(code.len() as i32 + 6);
    code.extend_from_slice(&[0x0f, 0x85]);
    code.extend_from_slice(&back.to_le_bytes());
    code.push(0xf4);
    code
}

fn tables(ram: &[AtomicU8]) {
    let put = |at: usize, bytes: &[u8]| {
        for (k, b) in bytes.iter().enumerate() {
            ram[at + k].store(*b, Ordering::Relaxed);
        }
    };
    for (i, d) in [
        0u64,
        0x00cf_9a00_0000_ffff,
        0x00cf_9200_0000_ffff,
        0x00af_9a00_0000_ffff,
    ]
    .iter()
    .enumerate()
    {
        put(GDT + i * 8, &d.to_le_bytes());
    }
    put(PML4, &((PML4 as u64 + 0x1000) | 3).to_le_bytes());
    put(PML4 + 0x1000, &((PML4 as u64 + 0x2000) | 3).to_le_bytes());
    put(PML4 + 0x2000, &0x83u64.to_le_bytes());
}

fn cpu(long: bool, rng: &mut Rng) -> Cpu {
    let flat = hv::Segment::flat;
    let mut cpu = Cpu::new(true);
    for (i, g) in cpu.state.gpr.iter_mut().enumerate() {
        *g = match rng.below(4) {
            0 => rng.next(),
            1 => rng.next() & 0xff,
            2 => rng.next() | (1 << 63),
            _ => 0,
        };
        if !long {
            *g &= 0xffff_ffff;
        }
        match i {
            3 => *g = DATA,
            4 => *g = STACK_TOP,
            6 => *g = rng.below(0x40),
            _ => {}
        }
    }
    cpu.state.rflags = 2 | (rng.next() & 0x8d5);
    cpu.state.rip = CODE;
    cpu.state.cr0 |= 1;
    cpu.state.gdt = hv::TableRegister {
        base: GDT as u64,
        limit: 31,
    };
    let data = flat(0x10, false, false, 0);
    cpu.state.seg = [data, flat(0x08, true, false, 0), data, data, data, data];
    if long {
        cpu.state.cr0 |= 1 << 31;
        cpu.state.cr4 |= 1 << 5;
        cpu.state.cr3 = PML4 as u64;
        cpu.state.efer |= (1 << 8) | (1 << 10);
        cpu.state.seg[1] = flat(0x18, true, true, 0);
    }
    cpu
}

fn run_to_halt(cpu: &mut Cpu, mem: &[AtomicU8], tracker: Option<Arc<CodeTracker>>, budget: u32) {
    let mut bus = Mem {
        regions: [RamRegion {
            start: 0,
            bytes: mem,
            writable: true,
        }],
        tracker,
    };
    for _ in 0..100_000 {
        match cpu.run(&mut bus, budget, &mut |_| false) {
            Step::Executed => {}
            Step::Halted => return,
            Step::TripleFault => {
                let at = cpu.state.rip as usize;
                let bytes: Vec<u8> = mem[at..at + 12]
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                panic!(
                    "triple fault at {:#x}: {:02x?} regs {:x?}",
                    cpu.state.rip, bytes, cpu.state.gpr
                )
            }
        }
    }
    panic!("no HLT (rip {:#x})", cpu.state.rip);
}

fn memory(code: &[u8], rng: &mut Rng) -> Vec<AtomicU8> {
    let mem: Vec<AtomicU8> = (0..RAM).map(|_| AtomicU8::new(0)).collect();
    tables(&mem);
    for (k, b) in code.iter().enumerate() {
        mem[CODE as usize + k].store(*b, Ordering::Relaxed);
    }
    for k in 0..0x200 {
        mem[DATA as usize + k].store(rng.next() as u8, Ordering::Relaxed);
    }
    mem[COUNTER as usize].store(ROUNDS, Ordering::Relaxed);
    mem
}

fn differential(long: bool, seed: u64, programs: u32, len: usize) {
    let programs = std::env::var("ENGINE_DIFF_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(programs);
    let mut rng = Rng(seed);
    for n in 0..programs {
        let code = program(&mut rng, long, len);
        let state_seed = rng.next() | 1;
        let mut reference = cpu(long, &mut Rng(state_seed));
        let ref_mem = memory(&code, &mut Rng(state_seed));
        run_to_halt(&mut reference, &ref_mem, None, 64);
        let want_mem: Vec<u8> = ref_mem.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        for (budget, native) in [(10_000, false), (3, false), (10_000, true), (3, true)] {
            let mut engine = cpu(long, &mut Rng(state_seed));
            let mem = memory(&code, &mut Rng(state_seed));
            let tracker = Arc::new(CodeTracker::new(RAM as u64));
            engine.set_code_tracker(tracker.clone());
            if native {
                let code = ExecMemory::new().expect("executable memory");
                engine.set_native_code(Box::new(code), 0);
            }
            run_to_halt(&mut engine, &mem, Some(tracker), budget);
            let what = format!(
                "program {n} ({}-bit, budget {budget}, native {native}): {:02x?}",
                if long { 64 } else { 32 },
                code
            );
            assert_eq!(engine.state.gpr, reference.state.gpr, "registers: {what}");
            assert_eq!(engine.state.rflags, reference.state.rflags, "flags: {what}");
            assert_eq!(engine.state.rip, reference.state.rip, "rip: {what}");
            let got: Vec<u8> = mem.iter().map(|b| b.load(Ordering::Relaxed)).collect();
            assert!(got == want_mem, "memory: {what}");
        }
    }
}

#[test]
fn random_programs_in_64_bit_code() {
    differential(true, 0x9e37_79b9_7f4a_7c15, 400, 48);
}

#[test]
fn random_programs_in_32_bit_code() {
    differential(false, 0xc2b2_ae3d_27d4_eb4f, 400, 48);
}

/// The IDT of [`run_linked`] (256 empty gates unless a piece fills some).
const IDT: usize = 0x6000;

/// Runs `pieces` (address, bytes) in 64-bit code from 0x10000 with native blocks from their
/// first run and a budget that lets links be followed; returns EDX at HLT.
fn run_linked(pieces: &[(usize, &[u8])], page_table: bool) -> u64 {
    let mut cpu = cpu(true, &mut Rng(7));
    cpu.state.rip = 0x10000;
    cpu.state.gpr[2] = 0;
    cpu.state.idt = hv::TableRegister {
        base: IDT as u64,
        limit: 0xfff,
    };
    let mem: Vec<AtomicU8> = (0..RAM).map(|_| AtomicU8::new(0)).collect();
    tables(&mem);
    let put = |at: usize, bytes: &[u8]| {
        for (k, b) in bytes.iter().enumerate() {
            mem[at + k].store(*b, Ordering::Relaxed);
        }
    };
    if page_table {
        // 4 KiB pages for the first 2 MiB (identity), table at 0x5000.
        put(PML4 + 0x2000, &0x5003u64.to_le_bytes());
        for page in 0..512u64 {
            put(
                0x5000 + page as usize * 8,
                &((page << 12) | 3).to_le_bytes(),
            );
        }
    }
    for (at, bytes) in pieces {
        put(*at, bytes);
    }
    let tracker = Arc::new(CodeTracker::new(RAM as u64));
    cpu.set_code_tracker(tracker.clone());
    cpu.set_native_code(Box::new(ExecMemory::new().expect("executable memory")), 0);
    run_to_halt(&mut cpu, &mem, Some(tracker), 10_000);
    cpu.state.gpr[2]
}

#[test]
fn native_divisions_the_host_would_fault_on_raise_divide_error_in_the_guest() {
    // #DE: an interrupt gate to a handler at 0x11000 that sets EDX to 0xde.
    let gate: u64 = 0x1000 | (0x18 << 16) | (0x8e00 << 32) | (1 << 48);
    let handler: &[u8] = &[0xba, 0xde, 0, 0, 0, 0xf4];
    let cases: [&[u8]; 3] = [
        // xor edx, edx; xor ecx, ecx; mov eax, 5; div rcx
        &[
            0x31, 0xd2, 0x31, 0xc9, 0xb8, 5, 0, 0, 0, 0x48, 0xf7, 0xf1, 0xf4,
        ],
        // mov edx, 1; mov ecx, 1; mov eax, 5; div rcx (the quotient needs 65 bits)
        &[
            0xba, 1, 0, 0, 0, 0xb9, 1, 0, 0, 0, 0xb8, 5, 0, 0, 0, 0x48, 0xf7, 0xf1, 0xf4,
        ],
        // the same with div ecx (33 bits)
        &[
            0xba, 1, 0, 0, 0, 0xb9, 1, 0, 0, 0, 0xb8, 5, 0, 0, 0, 0xf7, 0xf1, 0xf4,
        ],
    ];
    for code in cases {
        let edx = run_linked(
            &[
                (IDT, &gate.to_le_bytes()),
                (0x11000, handler),
                (0x10000, code),
            ],
            false,
        );
        assert_eq!(edx, 0xde, "{code:02x?}");
    }
}

#[test]
fn linked_code_sees_a_rewritten_target_block() {
    // A loop of four rounds jumps to a block that adds its MOV immediate to EDX; the second
    // round rewrites that immediate. The jump is linked in the first round and followed in
    // the second; the third must run the new bytes.
    let edx = run_linked(
        &[(
            0x10000,
            &[
                0xb9, 4, 0, 0, 0, // mov ecx, 4
                0xeb, 0x09, // jmp 0x10010
                0, 0, 0, 0, 0, 0, 0, 0, 0, //
                0xeb, 0x0e, // 10010: jmp 0x10020
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
                0xb8, 0x11, 0x11, 0x11, 0x11, // 10020: mov eax, 0x11111111
                0x01, 0xc2, // add edx, eax
                0x83, 0xf9, 0x03, // cmp ecx, 3
                0x75, 0x0b, // jne 0x10037
                0xc7, 0x04, 0x25, 0x21, 0x00, 0x01, 0x00, 0x22, 0x22, 0x22,
                0x22, // mov dword [0x10021], 0x22222222
                0xff, 0xc9, // 10037: dec ecx
                0x75, 0xd5, // jnz 0x10010
                0xf4, // hlt
            ],
        )],
        false,
    );
    assert_eq!(edx, 0x6666_6666);
}

#[test]
fn linked_code_follows_a_changed_translation() {
    // A loop of four rounds calls linear 0x11000, whose code loads EAX; the second round maps
    // that page to other code and flushes it with INVLPG. The call is linked in the first
    // round and followed in the second; the third must reach the new page.
    let edx = run_linked(
        &[
            (
                0x10000,
                &[
                    0xb9, 4, 0, 0, 0, // mov ecx, 4
                    0xeb, 0x09, // jmp 0x10010
                    0, 0, 0, 0, 0, 0, 0, 0, 0, //
                    0xe8, 0xeb, 0x0f, 0x00, 0x00, // 10010: call 0x11000
                    0x01, 0xc2, // add edx, eax
                    0x83, 0xf9, 0x03, // cmp ecx, 3
                    0x75, 0x14, // jne 0x10030
                    0x48, 0xc7, 0x04, 0x25, 0x88, 0x50, 0x00, 0x00, 0x03, 0x20, 0x01,
                    0x00, // mov qword [0x5088], 0x12003
                    0x0f, 0x01, 0x3c, 0x25, 0x00, 0x10, 0x01, 0x00, // invlpg [0x11000]
                    0xff, 0xc9, // 10030: dec ecx
                    0x75, 0xdc, // jnz 0x10010
                    0xf4, // hlt
                ],
            ),
            (0x11000, &[0xb8, 0x11, 0x11, 0x11, 0x11, 0xc3]),
            (0x12000, &[0xb8, 0x22, 0x22, 0x22, 0x22, 0xc3]),
        ],
        true,
    );
    assert_eq!(edx, 0x6666_6666);
}

#[test]
fn returns_see_a_rewritten_return_target() {
    // A loop of four rounds calls a RET whose return target adds its MOV immediate to EDX;
    // the second round rewrites that immediate. The return goes through the jump cache from
    // the second round on; the third must run the new bytes.
    let edx = run_linked(
        &[
            (
                0x10000,
                &[
                    0xb9, 4, 0, 0, 0, // mov ecx, 4
                    0xeb, 0x09, // jmp 0x10010
                    0, 0, 0, 0, 0, 0, 0, 0, 0, //
                    0xe8, 0xeb, 0x0f, 0x00, 0x00, // 10010: call 0x11000
                    0xb8, 0x11, 0x11, 0x11, 0x11, // 10015: mov eax, 0x11111111
                    0x01, 0xc2, // add edx, eax
                    0x83, 0xf9, 0x03, // cmp ecx, 3
                    0x75, 0x0b, // jne 0x1002c
                    0xc7, 0x04, 0x25, 0x16, 0x00, 0x01, 0x00, 0x22, 0x22, 0x22,
                    0x22, // mov dword [0x10016], 0x22222222
                    0xff, 0xc9, // 1002c: dec ecx
                    0x75, 0xe0, // jnz 0x10010
                    0xf4, // hlt
                ],
            ),
            (0x11000, &[0xc3]),
        ],
        false,
    );
    assert_eq!(edx, 0x6666_6666);
}

#[test]
fn returns_keep_to_their_data_view() {
    // A loop of four rounds calls a RET whose return target adds the dword at GS:0 to EBP;
    // the second round moves the GS base (WRMSR). Code made for the old base is in the jump
    // cache; the returns after the move must reach code made for the new one.
    let edx = run_linked(
        &[
            (
                0x10000,
                &[
                    0xb9, 0x01, 0x01, 0x00, 0xc0, // mov ecx, 0xc0000101 (GS base)
                    0xb8, 0x00, 0x00, 0x02, 0x00, // mov eax, 0x20000
                    0x31, 0xd2, // xor edx, edx
                    0x0f, 0x30, // wrmsr
                    0xbb, 0x04, 0x00, 0x00, 0x00, // mov ebx, 4
                    0x31, 0xed, // xor ebp, ebp
                    0xeb, 0x09, // jmp 0x10020
                    0, 0, 0, 0, 0, 0, 0, 0, 0, //
                    0xe8, 0xdb, 0x0f, 0x00, 0x00, // 10020: call 0x11000
                    0x65, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, // mov eax, gs:[0]
                    0x01, 0xc5, // add ebp, eax
                    0x83, 0xfb, 0x03, // cmp ebx, 3
                    0x75, 0x0e, // jne 0x10042
                    0xb9, 0x01, 0x01, 0x00, 0xc0, // mov ecx, 0xc0000101
                    0xb8, 0x00, 0x00, 0x03, 0x00, // mov eax, 0x30000
                    0x31, 0xd2, // xor edx, edx
                    0x0f, 0x30, // wrmsr
                    0xff, 0xcb, // 10042: dec ebx
                    0x75, 0xda, // jnz 0x10020
                    0x89, 0xea, // mov edx, ebp
                    0xf4, // hlt
                ],
            ),
            (0x11000, &[0xc3]),
            (0x20000, &[0x11, 0x11, 0x11, 0x11]),
            (0x30000, &[0x22, 0x22, 0x22, 0x22]),
        ],
        false,
    );
    assert_eq!(edx, 0x6666_6666);
}

#[test]
fn native_loads_that_cross_a_page_see_both_translations() {
    // A loop of four rounds loads from linear page 0x20000 (so its RAM entry is filled) and
    // then the dword at 0x20ffe, whose second half lies on linear 0x21000, mapped to physical
    // 0x23000 (not the physical page after 0x20000).
    let edx = run_linked(
        &[
            (
                0x10000,
                &[
                    0xb9, 4, 0, 0, 0, // mov ecx, 4
                    0x8b, 0x1c, 0x25, 0x00, 0x00, 0x02, 0x00, // 10005: mov ebx, [0x20000]
                    0x8b, 0x04, 0x25, 0xfe, 0x0f, 0x02, 0x00, // mov eax, [0x20ffe]
                    0x01, 0xc2, // add edx, eax
                    0xff, 0xc9, // dec ecx
                    0x75, 0xec, // jnz 0x10005
                    0xf4, // hlt
                ],
            ),
            (0x5000 + 0x21 * 8, &0x23003u64.to_le_bytes()),
            (0x20ffe, &[0x11, 0x11, 0x11, 0x11]),
            (0x23000, &[0x22, 0x22]),
        ],
        true,
    );
    assert_eq!(edx, 0x8888_4444);
}

#[test]
fn native_stores_see_code_that_came_after_their_ram_entry() {
    // A loop of four rounds stores to data at 0x11800 (so the page's RAM entry allows writes)
    // and calls 0x11000 on the same page, which loads EAX; the second round rewrites that
    // immediate through the RAM entry made before the page held code. The third must run the
    // new bytes.
    let edx = run_linked(
        &[
            (
                0x10000,
                &[
                    0xb9, 4, 0, 0, 0, // mov ecx, 4
                    0xeb, 0x09, // jmp 0x10010
                    0, 0, 0, 0, 0, 0, 0, 0, 0, //
                    0xc7, 0x04, 0x25, 0x00, 0x18, 0x01, 0x00, 0x01, 0x00, 0x00,
                    0x00, // 10010: mov dword [0x11800], 1
                    0xe8, 0xe0, 0x0f, 0x00, 0x00, // call 0x11000
                    0x01, 0xc2, // add edx, eax
                    0x83, 0xf9, 0x03, // cmp ecx, 3
                    0x75, 0x0b, // jne 0x10032
                    0xc7, 0x04, 0x25, 0x01, 0x10, 0x01, 0x00, 0x22, 0x22, 0x22,
                    0x22, // mov dword [0x11001], 0x22222222
                    0xff, 0xc9, // 10032: dec ecx
                    0x75, 0xda, // jnz 0x10010
                    0xf4, // hlt
                ],
            ),
            (0x11000, &[0xb8, 0x11, 0x11, 0x11, 0x11, 0xc3]),
        ],
        false,
    );
    assert_eq!(edx, 0x6666_6666);
}

#[test]
fn a_loaded_register_serves_as_base_beside_another_index() {
    // A loop of four rounds loads RSI from memory and then uses it as the base, with RDI as
    // the index, of the next load: native code takes RSI from the host register the first
    // load left it in, before it loads the index. (RDI + RDI would land on the page of the
    // first load, which has a RAM entry.)
    let edx = run_linked(
        &[
            (
                0x10000,
                &[
                    0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
                    0xbf, 0x08, 0x00, 0x01, 0x00, // mov edi, 0x10008
                    0xb9, 0x04, 0x00, 0x00, 0x00, // mov ecx, 4
                    0x48, 0x8b, 0x33, // 10011: mov rsi, [rbx]
                    0x8b, 0x04, 0x3e, // mov eax, [rsi + rdi]
                    0x01, 0xc2, // add edx, eax
                    0xff, 0xc9, // dec ecx
                    0x75, 0xf4, // jnz 0x10011
                    0xf4, // hlt
                ],
            ),
            (0x20000, &0x11000u64.to_le_bytes()),
            (0x21008, &[0x11, 0x11, 0x11, 0x11]),
        ],
        false,
    );
    assert_eq!(edx, 0x4444_4444);
}

#[test]
fn a_register_the_interpreter_loaded_is_seen_by_the_instructions_after_it() {
    // The first round's load of RSI misses the RAM entries, so the native code leaves before
    // it and the interpreter runs it; the ADD after it must see RSI as loaded (in later rounds
    // native code hands it over in a host register).
    let edx = run_linked(
        &[
            (
                0x10000,
                &[
                    0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
                    0xb9, 0x04, 0x00, 0x00, 0x00, // mov ecx, 4
                    0x48, 0x8b, 0x33, // 1000c: mov rsi, [rbx]
                    0x01, 0xf2, // add edx, esi
                    0xff, 0xc9, // dec ecx
                    0x75, 0xf7, // jnz 0x1000c
                    0xf4, // hlt
                ],
            ),
            (0x20000, &[0x11, 0x11, 0x11, 0x11]),
        ],
        false,
    );
    assert_eq!(edx, 0x4444_4444);
}
