//! The block engine's fast paths checked against the per-instruction interpreter (`Cpu::run`
//! without a code tracker runs every instruction through `Cpu::step`, without direct RAM
//! copies): deferred status flags (after every flag producer of the fast forms, every kind of
//! flag consumer must see exactly the flags the interpreter computes, and the exported state
//! must be identical, whether producer and consumer share a block, sit in different blocks, or
//! run in separate calls of `Cpu::run`), the direct memory path's segment checks, and REP
//! MOVS/STOS copied directly in RAM.

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
        &self.regions
    }
}

const SIZE: usize = 0x3000;

fn ram() -> Vec<AtomicU8> {
    (0..SIZE).map(|_| AtomicU8::new(0)).collect()
}

fn put(ram: &[AtomicU8], at: usize, bytes: &[u8]) {
    for (k, b) in bytes.iter().enumerate() {
        ram[at + k].store(*b, Ordering::Relaxed);
    }
}

fn dump(ram: &[AtomicU8]) -> Vec<u8> {
    ram.iter().map(|b| b.load(Ordering::Relaxed)).collect()
}

/// Real-mode code at 0000:1000 with the stack at 0x1ff0. The IVT sends #DE (0) and INTO (4)
/// to 0x700, which pops IP, CS and FLAGS into SI and halts.
fn setup(code: &[u8]) -> Vec<AtomicU8> {
    let mem = ram();
    put(&mem, 0x1000, code);
    put(&mem, 0x0, &[0x00, 0x07, 0x00, 0x00]);
    put(&mem, 0x10, &[0x00, 0x07, 0x00, 0x00]);
    put(&mem, 0x700, &[0x5e, 0x5e, 0x5e, 0xf4]);
    put(&mem, 0x600, &[0x34, 0x92, 0x01, 0x80]);
    mem
}

fn real_mode_cpu() -> Cpu {
    let mut cpu = Cpu::new(true);
    let cs = &mut cpu.state.seg[1];
    cs.base = 0;
    cs.selector = 0;
    cpu.state.rip = 0x1000;
    cpu.state.gpr[4] = 0x1ff0;
    cpu
}

/// Runs `cpu` (with `budget` instructions per `Cpu::run`) until it halts.
fn run(cpu: &mut Cpu, mem: &[AtomicU8], tracker: Option<Arc<CodeTracker>>, budget: u32) -> Step {
    let mut bus = Mem {
        regions: [RamRegion {
            start: 0,
            bytes: mem,
            writable: true,
        }],
        tracker,
    };
    for _ in 0..1000 {
        match cpu.run(&mut bus, budget, &mut |_| false) {
            Step::Executed => {}
            s => return s,
        }
    }
    panic!("no HLT (rip {:#x})", cpu.state.rip);
}

/// Runs `code` with the block engine (at several budgets) and with the interpreter; the
/// final state and memory must agree.
fn check(code: &[u8], what: &str) {
    let mem = setup(code);
    let mut reference = real_mode_cpu();
    let want = run(&mut reference, &mem, None, 64);
    for budget in [1000, 1] {
        let mem2 = setup(code);
        let tracker = Arc::new(CodeTracker::new(SIZE as u64));
        let mut cpu = real_mode_cpu();
        cpu.set_code_tracker(tracker.clone());
        let got = run(&mut cpu, &mem2, Some(tracker), budget);
        assert_eq!(got, want, "{what} (budget {budget}): stop");
        assert_eq!(
            cpu.state.rflags, reference.state.rflags,
            "{what} (budget {budget}): rflags"
        );
        assert_eq!(
            cpu.state, reference.state,
            "{what} (budget {budget}): state"
        );
        assert!(
            dump(&mem2) == dump(&mem),
            "{what} (budget {budget}): memory"
        );
    }
}

/// Flag producers that have fast forms (ALU register/immediate/memory forms, INC/DEC, shifts,
/// IMUL, CMOV source reads), in 8-, 16- and 32-bit widths.
fn producers() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("add ax,bx", vec![0x01, 0xd8]),
        ("adc ax,bx", vec![0x11, 0xd8]),
        ("sub ax,bx", vec![0x29, 0xd8]),
        ("sbb ax,bx", vec![0x19, 0xd8]),
        ("cmp ax,bx", vec![0x39, 0xd8]),
        ("and ax,bx", vec![0x21, 0xd8]),
        ("or ax,bx", vec![0x09, 0xd8]),
        ("xor ax,bx", vec![0x31, 0xd8]),
        ("test ax,bx", vec![0x85, 0xd8]),
        ("add al,bl", vec![0x00, 0xd8]),
        ("cmp al,bl", vec![0x38, 0xd8]),
        ("sub ah,bl", vec![0x28, 0xdc]),
        ("test al,bl", vec![0x84, 0xd8]),
        ("add eax,ebx", vec![0x66, 0x01, 0xd8]),
        ("sub eax,ebx", vec![0x66, 0x29, 0xd8]),
        ("cmp eax,ebx", vec![0x66, 0x39, 0xd8]),
        ("xor eax,ebx", vec![0x66, 0x31, 0xd8]),
        ("add ax,0x7fff", vec![0x05, 0xff, 0x7f]),
        ("sub ax,1", vec![0x83, 0xe8, 0x01]),
        ("cmp ax,-1", vec![0x83, 0xf8, 0xff]),
        ("and ax,0x8000", vec![0x25, 0x00, 0x80]),
        ("add ax,[0x600]", vec![0x03, 0x06, 0x00, 0x06]),
        ("cmp ax,[0x600]", vec![0x3b, 0x06, 0x00, 0x06]),
        ("sub [0x600],ax", vec![0x29, 0x06, 0x00, 0x06]),
        ("cmp [0x602],bx", vec![0x39, 0x1e, 0x02, 0x06]),
        ("add word [0x600],0x70", vec![0x83, 0x06, 0x00, 0x06, 0x70]),
        ("adc word [0x600],0x70", vec![0x83, 0x16, 0x00, 0x06, 0x70]),
        ("inc ax", vec![0x40]),
        ("dec ax", vec![0x48]),
        ("inc al", vec![0xfe, 0xc0]),
        ("dec eax", vec![0x66, 0x48]),
        ("shl ax,1", vec![0xd1, 0xe0]),
        ("shr ax,3", vec![0xc1, 0xe8, 0x03]),
        ("sar ax,cl", vec![0xd3, 0xf8]),
        ("rol ax,0", vec![0xc1, 0xc0, 0x00]),
        ("rcr ax,1", vec![0xd1, 0xd8]),
        ("imul ax,bx", vec![0x0f, 0xaf, 0xc3]),
        ("imul ax,[0x600]", vec![0x0f, 0xaf, 0x06, 0x00, 0x06]),
        ("dec ax; inc bx", vec![0x48, 0x43]),
        ("cmp ax,bx; inc cx", vec![0x39, 0xd8, 0x41]),
        (
            "cmp ax,bx; mov dx,[0x600]",
            vec![0x39, 0xd8, 0x8b, 0x16, 0x00, 0x06],
        ),
    ];
    v.sort_by_key(|p| p.0);
    v
}

/// Flag consumers: every Jcc, SETcc and CMOVcc, PUSHF, LAHF, ADC, SBB, RCL, RCR, INTO, an
/// exception delivery (#DE, which pushes FLAGS), and HLT (the exported state).
fn consumers() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for cc in 0..16u8 {
        // jcc +2 over `mov cl, 1`
        v.push((format!("j{cc:x}"), vec![0x70 + cc, 0x02, 0xb1, 0x01]));
        v.push((format!("set{cc:x} dl"), vec![0x0f, 0x90 + cc, 0xc2]));
        v.push((format!("cmov{cc:x} dx,bx"), vec![0x0f, 0x40 + cc, 0xd3]));
        v.push((
            format!("cmov{cc:x} edx,[0x600]"),
            vec![0x66, 0x0f, 0x40 + cc, 0x16, 0x00, 0x06],
        ));
    }
    for (name, code) in [
        ("pushf; pop si", vec![0x9c, 0x5e]),
        ("lahf", vec![0x9f]),
        ("adc ax,bx", vec![0x11, 0xd8]),
        ("sbb ax,bx", vec![0x19, 0xd8]),
        ("rcl ax,1", vec![0xd1, 0xd0]),
        ("rcr ax,1", vec![0xd1, 0xd8]),
        ("into", vec![0xce]),
        ("div ch (#DE)", vec![0xf6, 0xf5]),
        ("none", vec![]),
    ] {
        v.push((name.to_string(), code));
    }
    v
}

/// Operand pairs (AX/EAX, BX/EBX) around the carry, overflow and sign boundaries.
const OPERANDS: [(u32, u32); 9] = [
    (0, 0),
    (1, 1),
    (0x7fff, 1),
    (0x8000, 1),
    (0xffff, 1),
    (0, 1),
    (0x1234, 0x8765),
    (0x7fff_ff80, 0x80),
    (0xffff_ffff, 0xffff_ffff),
];

#[test]
fn every_consumer_sees_the_flags_of_every_producer() {
    let producers = producers();
    let consumers = consumers();
    for (a, b) in OPERANDS {
        for carry in [0xf8u8, 0xf9] {
            for (pname, p) in &producers {
                for (cname, c) in &consumers {
                    // Same block, and the consumer in the next block (`jmp $+2` ends one).
                    for split in [false, true] {
                        let mut code = vec![carry, 0x66, 0xb8];
                        code.extend_from_slice(&a.to_le_bytes());
                        code.extend_from_slice(&[0x66, 0xbb]);
                        code.extend_from_slice(&b.to_le_bytes());
                        // cx = 3 (shift count; CH = 0 for the #DE consumer)
                        code.extend_from_slice(&[0xb9, 0x03, 0x00]);
                        code.extend_from_slice(p);
                        if split {
                            code.extend_from_slice(&[0xeb, 0x00]);
                        }
                        code.extend_from_slice(c);
                        code.push(0xf4);
                        check(
                            &code,
                            &format!(
                                "{pname} / {cname} (a {a:#x} b {b:#x} cf {carry:#x} split {split})"
                            ),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn loop_counters_and_flags_across_many_blocks() {
    // mov cx, 300; 1: add ax, cx; adc dx, 0; cmp ax, 0x4000; jb 2; xor ax, 0x5555
    // 2: dec cx; jnz 1; pushf; pop si; hlt
    let code = [
        0xb9, 0x2c, 0x01, // mov cx, 300
        0x01, 0xc8, // add ax, cx
        0x83, 0xd2, 0x00, // adc dx, 0
        0x3d, 0x00, 0x40, // cmp ax, 0x4000
        0x72, 0x03, // jb +3
        0x35, 0x55, 0x55, // xor ax, 0x5555
        0x49, // dec cx
        0x75, 0xf0, // jnz -16
        0x9c, 0x5e, 0xf4,
    ];
    check(&code, "loop");
}

/// A protected-mode CPU at `ip` with flat 32-bit code and data, paging off, and no IDT (a
/// fault shuts it down).
fn protected_cpu(data_limit: u32, data_type: u8) -> Cpu {
    let mut cpu = Cpu::new(true);
    let s = &mut cpu.state;
    s.cr0 |= 1;
    let seg = |code: bool, limit: u32, type_: u8| hv::Segment {
        base: 0,
        limit,
        selector: if code { 8 } else { 16 },
        type_,
        present: true,
        dpl: 0,
        db: true,
        s: true,
        l: false,
        g: true,
        avl: false,
        unusable: false,
    };
    let data = seg(false, data_limit, data_type);
    s.seg = [
        data,
        seg(true, u32::MAX, 0xb),
        seg(false, u32::MAX, 3),
        data,
        data,
        data,
    ];
    s.idt.limit = 0;
    s.rip = 0x1000;
    s.gpr[4] = 0x1ff0;
    cpu
}

#[test]
fn segment_checks_on_the_direct_memory_path() {
    // mov eax, [ebx]; mov [ebx+2], eax; hlt
    let code = [0x8b, 0x03, 0x89, 0x43, 0x02, 0xf4];
    // (limit, type, ebx): flat; within and beyond a limit; a read-only segment; expand-down;
    // the last dword below 4 GiB (no RAM there: the bus path); a dword crossing 4 GiB.
    let cases: [(u32, u8, u32); 7] = [
        (u32::MAX, 3, 0x600),
        (0x700, 3, 0x600),
        (0x603, 3, 0x600),
        (u32::MAX, 1, 0x600),
        (0xfff, 7, 0x600),
        (u32::MAX, 3, 0xffff_fff8),
        (u32::MAX, 3, 0xffff_fffe),
    ];
    for (limit, type_, ebx) in cases {
        let run_one = |tracker: Option<Arc<CodeTracker>>| {
            let mem = setup(&code);
            let mut cpu = protected_cpu(limit, type_);
            cpu.state.gpr[3] = u64::from(ebx);
            if let Some(t) = &tracker {
                cpu.set_code_tracker(t.clone());
            }
            let stop = run(&mut cpu, &mem, tracker, 64);
            (stop, cpu.state, dump(&mem))
        };
        let want = run_one(None);
        let got = run_one(Some(Arc::new(CodeTracker::new(SIZE as u64))));
        let what = format!("limit {limit:#x} type {type_} ebx {ebx:#x}");
        assert_eq!(got.0, want.0, "{what}: stop");
        assert_eq!(got.1, want.1, "{what}: state");
        assert!(got.2 == want.2, "{what}: memory");
    }
}

/// DF set, instruction bytes, ESI, EDI, ECX, description.
type RepCase = (bool, &'static [u8], u32, u32, u32, &'static str);

#[test]
fn rep_movs_and_stos_in_ram_match_the_element_loop() {
    let cases: [RepCase; 12] = [
        (false, &[0xf3, 0xa4], 0x1c00, 0x1d00, 0x80, "movsb"),
        (
            false,
            &[0xf3, 0xa4],
            0x1c00,
            0x1c01,
            0x200,
            "movsb overlapping up by 1",
        ),
        (
            false,
            &[0xf3, 0xa5],
            0x1c03,
            0x1c00,
            0x100,
            "movsd overlapping down by 3",
        ),
        (
            false,
            &[0xf3, 0xa5],
            0x1c00,
            0x1ff6,
            0x40,
            "movsd across a page",
        ),
        (
            false,
            &[0xf3, 0xa5],
            0x1ffd,
            0x1d00,
            0x40,
            "movsd source across a page",
        ),
        (
            true,
            &[0xf3, 0xa5],
            0x1f00,
            0x1f02,
            0x100,
            "std movsd overlapping",
        ),
        (
            true,
            &[0xf3, 0xa4],
            0x2010,
            0x2100,
            0x300,
            "std movsb across a page",
        ),
        (false, &[0xf3, 0xab], 0, 0x1ff1, 0x10, "stosd across a page"),
        (
            false,
            &[0xf3, 0xaa],
            0,
            0x2f80,
            0x100,
            "stosb past the end of RAM",
        ),
        (
            false,
            &[0xf3, 0xaa],
            0,
            0x1040,
            0x8,
            "stosb over the following code",
        ),
        (false, &[0xf3, 0xab], 0, 0x1d00, 0, "stosd with ecx 0"),
        (
            true,
            &[0xf3, 0xab],
            0,
            0x6,
            0x10,
            "std stosd below address 0",
        ),
    ];
    for (std, insn, esi, edi, ecx, what) in cases {
        // mov esi; mov edi; mov ecx; mov eax, 0x90909090; [std]; rep ...; cld; hlt
        let mut code = vec![0xbe];
        code.extend_from_slice(&esi.to_le_bytes());
        code.push(0xbf);
        code.extend_from_slice(&edi.to_le_bytes());
        code.push(0xb9);
        code.extend_from_slice(&ecx.to_le_bytes());
        code.extend_from_slice(&[0xb8, 0x90, 0x90, 0x90, 0x90]);
        if std {
            code.push(0xfd);
        }
        code.extend_from_slice(insn);
        code.extend_from_slice(&[0xfc, 0xb0, 0x05, 0xf4]);
        let run_one = |tracker: Option<Arc<CodeTracker>>| {
            let mem = setup(&code);
            for (k, b) in mem.iter().enumerate().take(0x2400).skip(0x1c00) {
                b.store((k * 7) as u8, Ordering::Relaxed);
            }
            let mut cpu = protected_cpu(u32::MAX, 3);
            if let Some(t) = &tracker {
                cpu.set_code_tracker(t.clone());
            }
            let stop = run(&mut cpu, &mem, tracker, 64);
            (stop, cpu.state, dump(&mem))
        };
        let want = run_one(None);
        let got = run_one(Some(Arc::new(CodeTracker::new(SIZE as u64))));
        assert_eq!(got.0, want.0, "{what}: stop");
        assert_eq!(got.1, want.1, "{what}: state");
        assert!(got.2 == want.2, "{what}: memory");
    }
}

#[test]
fn direct_ram_entries_follow_invlpg_and_cr3_loads() {
    // 32-bit paging: linear 0..0x4000 identity, linear 0x8000 → 0x4000, then 0x5000.
    let code: &[u8] = &[
        0x8b, 0x05, 0x00, 0x80, 0x00, 0x00, // mov eax, [0x8000]
        0x8b, 0x0d, 0x00, 0x80, 0x00, 0x00, // mov ecx, [0x8000]
        0x89, 0x05, 0x04, 0x80, 0x00, 0x00, // mov [0x8004], eax
        0xc7, 0x05, 0x20, 0x30, 0x00, 0x00, 0x03, 0x50, 0x00, 0x00, // PTE 8 := 0x5003
        0x0f, 0x01, 0x3d, 0x00, 0x80, 0x00, 0x00, // invlpg [0x8000]
        0x8b, 0x35, 0x00, 0x80, 0x00, 0x00, // mov esi, [0x8000]
        0xc7, 0x05, 0x08, 0x80, 0x00, 0x00, 0x33, 0x33, 0x33, 0x33, // mov dword [0x8008], ..
        0xc7, 0x05, 0x20, 0x30, 0x00, 0x00, 0x03, 0x40, 0x00, 0x00, // PTE 8 := 0x4003
        0x0f, 0x20, 0xdb, // mov ebx, cr3
        0x0f, 0x22, 0xdb, // mov cr3, ebx
        0x8b, 0x3d, 0x00, 0x80, 0x00, 0x00, // mov edi, [0x8000]
        0xf4, // hlt
    ];
    let setup = || {
        let mem: Vec<AtomicU8> = (0..0x6000).map(|_| AtomicU8::new(0)).collect();
        put(&mem, 0x1000, code);
        put(&mem, 0x2000, &0x3003u32.to_le_bytes());
        for page in 0..4u32 {
            put(
                &mem,
                0x3000 + page as usize * 4,
                &(page << 12 | 3).to_le_bytes(),
            );
        }
        put(&mem, 0x3020, &0x4003u32.to_le_bytes());
        put(&mem, 0x4000, &0x1111_1111u32.to_le_bytes());
        put(&mem, 0x5000, &0x2222_2222u32.to_le_bytes());
        mem
    };
    let cpu = || {
        let mut cpu = protected_cpu(u32::MAX, 3);
        cpu.state.cr3 = 0x2000;
        cpu.state.cr0 |= 1 << 31;
        cpu
    };
    let mem = setup();
    let mut reference = cpu();
    assert_eq!(run(&mut reference, &mem, None, 64), Step::Halted);
    for budget in [1000, 1] {
        let mem2 = setup();
        let tracker = Arc::new(CodeTracker::new(0x6000));
        let mut engine = cpu();
        engine.set_code_tracker(tracker.clone());
        assert_eq!(run(&mut engine, &mem2, Some(tracker), budget), Step::Halted);
        let g = engine.state.gpr;
        assert_eq!((g[0], g[1]), (0x1111_1111, 0x1111_1111), "budget {budget}");
        assert_eq!(g[6], 0x2222_2222, "after INVLPG (budget {budget})");
        assert_eq!(g[7], 0x1111_1111, "after the CR3 load (budget {budget})");
        let at = |a: usize| u32::from_le_bytes(dump(&mem2)[a..a + 4].try_into().unwrap());
        assert_eq!(at(0x4004), 0x1111_1111, "budget {budget}");
        assert_eq!(
            at(0x5008),
            0x3333_3333,
            "write after INVLPG (budget {budget})"
        );
        assert_eq!(
            at(0x4008),
            0,
            "no write through the old mapping (budget {budget})"
        );
        assert_eq!(engine.state, reference.state, "budget {budget}");
        assert!(dump(&mem2) == dump(&mem), "memory (budget {budget})");
    }
}
