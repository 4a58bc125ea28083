//! A guest can never crash the VMM: random bytes executed as code, in real mode, 32-bit protected
//! mode and 64-bit long mode, with random registers, must only ever raise guest exceptions.

use x86emu::{Bus, Cpu, Step};

struct Ram(Vec<u8>);

impl Bus for Ram {
    fn read(&mut self, a: u64, d: &mut [u8]) {
        for (k, b) in d.iter_mut().enumerate() {
            *b = self
                .0
                .get((a as usize).wrapping_add(k))
                .copied()
                .unwrap_or(0xff);
        }
    }
    fn write(&mut self, a: u64, d: &[u8]) {
        for (k, b) in d.iter().enumerate() {
            if let Some(x) = self.0.get_mut((a as usize).wrapping_add(k)) {
                *x = *b;
            }
        }
    }
    fn io_in(&mut self, _: u16, d: &mut [u8]) {
        d.fill(0xff);
    }
    fn io_out(&mut self, _: u16, _: &[u8]) {}
    fn tsc(&mut self) -> u64 {
        0
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
}

const RAM: usize = 1 << 20;
const GDT: usize = 0x500;
const PML4: usize = 0x2000;
const IDT: usize = 0x6000;

/// An IVT or IDT whose every vector lands somewhere in the random code.
fn interrupt_table(ram: &mut [u8], mode: u32, rng: &mut Rng) -> hv::TableRegister {
    match mode {
        16 => {
            for v in 0..256 {
                let off = (rng.next() & 0xfff) as u16;
                ram[v * 4..v * 4 + 2].copy_from_slice(&off.to_le_bytes());
                ram[v * 4 + 2..v * 4 + 4].copy_from_slice(&0x1000u16.to_le_bytes());
            }
            hv::TableRegister {
                base: 0,
                limit: 0x3ff,
            }
        }
        32 => {
            for v in 0..256 {
                let target = 0x10000 + (rng.next() & 0xffff);
                let gate =
                    (target & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((target >> 16) << 48);
                ram[IDT + v * 8..IDT + v * 8 + 8].copy_from_slice(&gate.to_le_bytes());
            }
            hv::TableRegister {
                base: IDT as u64,
                limit: 256 * 8 - 1,
            }
        }
        _ => {
            for v in 0..256 {
                let target = 0x10000 + (rng.next() & 0xffff);
                let ist = rng.next() & 7;
                let low = (target & 0xffff)
                    | (0x18 << 16)
                    | (ist << 32)
                    | (0x8e00u64 << 32)
                    | (((target >> 16) & 0xffff) << 48);
                ram[IDT + v * 16..IDT + v * 16 + 8].copy_from_slice(&low.to_le_bytes());
                ram[IDT + v * 16 + 8..IDT + v * 16 + 16].copy_from_slice(&0u64.to_le_bytes());
            }
            hv::TableRegister {
                base: IDT as u64,
                limit: 256 * 16 - 1,
            }
        }
    }
}

/// Flat GDT (32-bit code 0x08, data 0x10, 64-bit code 0x18) and identity page tables for 1 GiB.
fn tables(ram: &mut [u8]) {
    for (i, d) in [
        0u64,
        0x00cf_9a00_0000_ffff,
        0x00cf_9200_0000_ffff,
        0x00af_9a00_0000_ffff,
    ]
    .iter()
    .enumerate()
    {
        ram[GDT + i * 8..GDT + i * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    ram[PML4..PML4 + 8].copy_from_slice(&((PML4 as u64 + 0x1000) | 3).to_le_bytes());
    ram[PML4 + 0x1000..PML4 + 0x1008].copy_from_slice(&((PML4 as u64 + 0x2000) | 3).to_le_bytes());
    for i in 0..512u64 {
        let e = (i << 21) | 0x83;
        let o = PML4 + 0x2000 + i as usize * 8;
        ram[o..o + 8].copy_from_slice(&e.to_le_bytes());
    }
}

fn flat(selector: u16, code: bool, long: bool) -> hv::Segment {
    hv::Segment::flat(selector, code, long, 0)
}

fn run(mode: u32, seed: u64, programs: u32, steps: u32) {
    // RANDOM_CODE_PROGRAMS raises the count for longer local hunts.
    let programs = std::env::var("RANDOM_CODE_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(programs);
    let seed = std::env::var("RANDOM_CODE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(seed);
    let mut rng = Rng(seed);
    for _ in 0..programs {
        let mut ram = Ram(vec![0u8; RAM]);
        for chunk in ram.0[0x10000..0x20000].chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        tables(&mut ram.0);
        let mut cpu = Cpu::new(true);
        for g in cpu.state.gpr.iter_mut() {
            *g = match rng.next() % 4 {
                0 => rng.next(),
                1 => rng.next() & 0xffff,
                2 => 0x18000 + (rng.next() & 0x7fff),
                _ => 0,
            };
        }
        cpu.state.rflags = 2 | (rng.next() & 0xcd5);
        cpu.state.rip = 0x10000 + (rng.next() & 0xfff);
        match mode {
            16 => {
                cpu.state.seg[1] = hv::Segment::real_mode(0x1000, true);
                cpu.state.rip &= 0xffff;
            }
            32 => {
                cpu.state.cr0 |= 1;
                cpu.state.seg = [
                    flat(0x10, false, false),
                    flat(0x08, true, false),
                    flat(0x10, false, false),
                    flat(0x10, false, false),
                    flat(0x10, false, false),
                    flat(0x10, false, false),
                ];
            }
            _ => {
                cpu.state.cr0 |= 1 | (1 << 31);
                cpu.state.cr4 |= 1 << 5;
                cpu.state.cr3 = PML4 as u64;
                cpu.state.efer |= (1 << 8) | (1 << 10);
                cpu.state.seg = [
                    flat(0x10, false, false),
                    flat(0x18, true, true),
                    flat(0x10, false, false),
                    flat(0x10, false, false),
                    flat(0x10, false, false),
                    flat(0x10, false, false),
                ];
            }
        }
        cpu.state.cr4 |= 1 << 9; // OSFXSR: SSE reachable
        cpu.state.gdt = hv::TableRegister {
            base: GDT as u64,
            limit: 31,
        };
        cpu.state.idt = interrupt_table(&mut ram.0, mode, &mut rng);
        for _ in 0..steps {
            match cpu.step(&mut ram) {
                Step::Executed => {}
                Step::Halted => {
                    // Wake it as an interrupt would, so execution goes on.
                    let v = rng.next() as u8;
                    if cpu.interrupts_enabled()
                        && cpu.inject_interrupt(v, &mut ram) == Step::TripleFault
                    {
                        break;
                    }
                    cpu.state.halted = false;
                }
                Step::TripleFault => break,
            }
        }
    }
}

#[test]
fn random_code_real_mode() {
    run(16, 0x1234_5678_9abc_def1, 600, 3000);
}

#[test]
fn random_code_protected_mode() {
    run(32, 0x0fed_cba9_8765_4321, 600, 3000);
}

#[test]
fn random_code_long_mode() {
    run(64, 0x5555_aaaa_3333_cccc, 600, 3000);
}
