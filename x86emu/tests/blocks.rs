//! Block execution (`Cpu::run`) with direct RAM access and the code tracker: self-modifying
//! code inside the running block, instructions crossing a page, precise faults in the middle
//! of a block, and the interrupt shadow between blocks.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use x86emu::{Bus, CodeTracker, Cpu, RamRegion, Step};

/// Flat RAM offered to the CPU for direct access; writes through the bus are reported.
struct Mem<'a> {
    regions: [RamRegion<'a>; 1],
    tracker: Arc<CodeTracker>,
    direct: bool,
}

impl<'a> Mem<'a> {
    fn new(bytes: &'a [AtomicU8], tracker: Arc<CodeTracker>, direct: bool) -> Self {
        Self {
            regions: [RamRegion {
                start: 0,
                bytes,
                writable: true,
            }],
            tracker,
            direct,
        }
    }
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
        self.tracker.note_write(a, d.len());
    }
    fn io_in(&mut self, _: u16, d: &mut [u8]) {
        d.fill(0xff);
    }
    fn io_out(&mut self, _: u16, _: &[u8]) {}
    fn tsc(&mut self) -> u64 {
        0
    }
    fn ram(&self) -> &[RamRegion<'_>] {
        if self.direct {
            &self.regions
        } else {
            &[]
        }
    }
}

fn ram(size: usize) -> Vec<AtomicU8> {
    (0..size).map(|_| AtomicU8::new(0)).collect()
}

fn put(ram: &[AtomicU8], at: usize, bytes: &[u8]) {
    for (k, b) in bytes.iter().enumerate() {
        ram[at + k].store(*b, Ordering::Relaxed);
    }
}

fn get(ram: &[AtomicU8], at: usize) -> u8 {
    ram[at].load(Ordering::Relaxed)
}

/// A real-mode CPU at 0000:`ip` with SP 0x8000, running blocks against a tracker.
fn cpu16(ip: u64, tracker: &Arc<CodeTracker>) -> Cpu {
    let mut cpu = Cpu::new(true);
    cpu.set_code_tracker(tracker.clone());
    let cs = &mut cpu.state.seg[1];
    cs.base = 0;
    cs.selector = 0;
    cpu.state.rip = ip;
    cpu.state.gpr[4] = 0x8000;
    cpu
}

/// Runs until HLT (or `limit` instructions).
fn run_to_halt(cpu: &mut Cpu, bus: &mut dyn Bus, limit: u32) {
    let mut left = limit;
    while left > 0 {
        if cpu.run(bus, 64, &mut |_| false) == Step::Halted {
            return;
        }
        left = left.saturating_sub(64);
    }
    panic!(
        "no HLT within {limit} instructions (rip {:#x})",
        cpu.state.rip
    );
}

#[test]
fn store_into_the_running_block_is_executed() {
    for direct in [true, false] {
        let mem = ram(0x10000);
        let tracker = Arc::new(CodeTracker::new(0x10000));
        // 1000: mov byte [0x1006], 0x05   (c6 06 06 10 05)
        // 1005: mov al, 0x01              (b0 01) -- its immediate is at 0x1006
        // 1007: hlt
        put(
            &mem,
            0x1000,
            &[0xc6, 0x06, 0x06, 0x10, 0x05, 0xb0, 0x01, 0xf4],
        );
        let mut bus = Mem::new(&mem, tracker.clone(), direct);
        let mut cpu = cpu16(0x1000, &tracker);
        run_to_halt(&mut cpu, &mut bus, 100);
        assert_eq!(
            cpu.state.gpr[0] & 0xff,
            5,
            "the patched immediate ran (direct {direct})"
        );
        assert_eq!(cpu.state.rip, 0x1008);
    }
}

#[test]
fn loop_sees_code_patched_by_a_previous_iteration() {
    let mem = ram(0x10000);
    let tracker = Arc::new(CodeTracker::new(0x10000));
    // 1000: mov cx, 3
    // 1003: add bx, 1            (83 c3 01) -- immediate at 0x1005, patched to 0x10
    // 1006: mov byte [0x1005], 0x10
    // 100b: loop 1003
    // 100d: hlt
    put(
        &mem,
        0x1000,
        &[
            0xb9, 0x03, 0x00, 0x83, 0xc3, 0x01, 0xc6, 0x06, 0x05, 0x10, 0x10, 0xe2, 0xf6, 0xf4,
        ],
    );
    let mut bus = Mem::new(&mem, tracker.clone(), true);
    let mut cpu = cpu16(0x1000, &tracker);
    run_to_halt(&mut cpu, &mut bus, 100);
    assert_eq!(cpu.state.gpr[3] & 0xffff, 1 + 0x10 + 0x10);
}

#[test]
fn instruction_crossing_a_page_runs_after_a_block() {
    let mem = ram(0x10000);
    let tracker = Arc::new(CodeTracker::new(0x10000));
    // 1ffa: inc si; inc si; nop
    // 1ffd: mov eax, 0x11223344 (66 b8 44 33 22 11), crossing into the next page at 0x2000
    // 2003: inc di
    // 2004: hlt
    put(&mem, 0x1ffa, &[0x46, 0x46, 0x90]);
    put(
        &mem,
        0x1ffd,
        &[0x66, 0xb8, 0x44, 0x33, 0x22, 0x11, 0x47, 0xf4],
    );
    let mut bus = Mem::new(&mem, tracker.clone(), true);
    let mut cpu = cpu16(0x1ffa, &tracker);
    run_to_halt(&mut cpu, &mut bus, 100);
    assert_eq!(cpu.state.gpr[0], 0x1122_3344);
    assert_eq!(cpu.state.gpr[6], 2);
    assert_eq!(cpu.state.gpr[7], 1);
    // Patching the part of the crossing instruction in the second page is seen.
    put(&mem, 0x2000, &[0x55]);
    tracker.note_write(0x2000, 1);
    cpu.state.halted = false;
    cpu.state.rip = 0x1ffa;
    run_to_halt(&mut cpu, &mut bus, 100);
    assert_eq!(cpu.state.gpr[6], 4);
    assert_eq!(cpu.state.gpr[0], 0x1122_5544);
}

#[test]
fn fault_in_the_middle_of_a_block_is_precise() {
    let mem = ram(0x10000);
    let tracker = Arc::new(CodeTracker::new(0x10000));
    // IVT vector 0 (#DE) -> 0000:3000, where the handler halts.
    put(&mem, 0, &[0x00, 0x30, 0x00, 0x00]);
    put(&mem, 0x3000, &[0xf4]);
    // 1000: mov ax, 100; mov bx, 7; mov word [0x4000], 0xbeef; div cl (cl = 0); mov dx, 1; hlt
    put(
        &mem,
        0x1000,
        &[
            0xb8, 0x64, 0x00, // mov ax, 100
            0xbb, 0x07, 0x00, // mov bx, 7
            0xc7, 0x06, 0x00, 0x40, 0xef, 0xbe, // mov word [0x4000], 0xbeef
            0xf6, 0xf1, // div cl
            0xba, 0x01, 0x00, // mov dx, 1
            0xf4,
        ],
    );
    let mut bus = Mem::new(&mem, tracker.clone(), true);
    let mut cpu = cpu16(0x1000, &tracker);
    run_to_halt(&mut cpu, &mut bus, 100);
    assert_eq!(cpu.state.rip, 0x3001, "the #DE handler ran");
    assert_eq!(
        cpu.state.gpr[0] & 0xffff,
        100,
        "AX unchanged by the faulting DIV"
    );
    assert_eq!(
        cpu.state.gpr[3] & 0xffff,
        7,
        "instructions before the fault completed"
    );
    assert_eq!(cpu.state.gpr[2] & 0xffff, 0, "nothing after the fault ran");
    assert_eq!((get(&mem, 0x4000), get(&mem, 0x4001)), (0xef, 0xbe));
    // The frame holds the address of the DIV: IP, CS, FLAGS at SP.
    let sp = (cpu.state.gpr[4] & 0xffff) as usize;
    assert_eq!(sp, 0x8000 - 6);
    assert_eq!(
        u16::from_le_bytes([get(&mem, sp), get(&mem, sp + 1)]),
        0x100c
    );
}

#[test]
fn stop_is_asked_when_the_interrupt_shadow_ends() {
    let mem = ram(0x10000);
    let tracker = Arc::new(CodeTracker::new(0x10000));
    // 1000: cli; mov ax, 1; sti; mov bx, 2; mov cx, 3; hlt
    put(
        &mem,
        0x1000,
        &[
            0xfa, 0xb8, 0x01, 0x00, 0xfb, 0xbb, 0x02, 0x00, 0xb9, 0x03, 0x00, 0xf4,
        ],
    );
    let mut bus = Mem::new(&mem, tracker.clone(), true);
    let mut cpu = cpu16(0x1000, &tracker);
    let step = cpu.run(&mut bus, 100, &mut |c: &Cpu| c.interrupts_enabled());
    assert_eq!(step, Step::Executed);
    // STI's shadow covers `mov bx, 2`; interrupts are deliverable right after it.
    assert_eq!(cpu.state.rip, 0x1008);
    assert_eq!(cpu.state.gpr[3] & 0xffff, 2);
    assert_eq!(cpu.state.gpr[1] & 0xffff, 0);
}

#[test]
fn blocks_and_single_steps_agree() {
    // A loop with memory traffic, flags and branches, run once through blocks with direct
    // RAM and once instruction by instruction through the bus.
    let program: &[u8] = &[
        0xb9, 0x40, 0x00, // mov cx, 64
        0x31, 0xc0, // xor ax, ax
        0xbe, 0x00, 0x40, // mov si, 0x4000
        // 1008:
        0x01, 0xc8, // add ax, cx
        0x89, 0x04, // mov [si], ax
        0x83, 0xc6, 0x02, // add si, 2
        0x8b, 0x5c, 0xfe, // mov bx, [si-2]
        0x31, 0xda, // xor dx, bx
        0xd1, 0xe2, // shl dx, 1
        0x83, 0xf9, 0x20, // cmp cx, 32
        0x77, 0x01, // ja +1
        0x42, // inc dx
        0x49, // dec cx
        0x75, 0xe9, // jnz 1008
        0xf4,
    ];
    let run = |blocks: bool| {
        let mem = ram(0x10000);
        let tracker = Arc::new(CodeTracker::new(0x10000));
        put(&mem, 0x1000, program);
        let mut bus = Mem::new(&mem, tracker.clone(), blocks);
        let mut cpu = cpu16(0x1000, &tracker);
        if blocks {
            run_to_halt(&mut cpu, &mut bus, 10_000);
        } else {
            while cpu.step(&mut bus) != Step::Halted {}
        }
        let data: Vec<u8> = (0x4000..0x4080).map(|a| get(&mem, a)).collect();
        (cpu.state, data)
    };
    let (a, da) = run(true);
    let (b, db) = run(false);
    assert_eq!(a, b);
    assert_eq!(da, db);
}
