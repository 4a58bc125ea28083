//! Instruction-level checks of the integer core on small real- and long-mode programs.

use x86emu::{Bus, Cpu, Step};

/// Flat RAM with the debug port recorded.
struct Ram(Vec<u8>);

impl Bus for Ram {
    fn read(&mut self, a: u64, d: &mut [u8]) {
        for (k, b) in d.iter_mut().enumerate() {
            *b = self.0.get(a as usize + k).copied().unwrap_or(0xff);
        }
    }
    fn write(&mut self, a: u64, d: &[u8]) {
        for (k, b) in d.iter().enumerate() {
            if let Some(x) = self.0.get_mut(a as usize + k) {
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

/// Runs `code` placed at 0x1000 in real mode until HLT; returns the CPU.
fn run16(code: &[u8]) -> (Cpu, Ram) {
    let mut ram = Ram(vec![0; 0x10000]);
    ram.0[0x1000..0x1000 + code.len()].copy_from_slice(code);
    let mut cpu = Cpu::new(true);
    let cs = &mut cpu.state.seg[1];
    cs.base = 0;
    cs.selector = 0;
    cpu.state.rip = 0x1000;
    cpu.state.gpr[4] = 0x8000;
    for _ in 0..1000 {
        if cpu.step(&mut ram) == Step::Halted {
            break;
        }
    }
    (cpu, ram)
}

#[test]
fn enter_and_leave_restore_the_frame() {
    // mov bp,0x1234; enter 8,0; mov [bp-2],ax; leave; hlt
    let (cpu, ram) = run16(&[
        0xbd, 0x34, 0x12, 0xc8, 0x08, 0x00, 0x00, 0x89, 0x46, 0xfe, 0xc9, 0xf4,
    ]);
    assert_eq!(cpu.state.gpr[5] & 0xffff, 0x1234, "BP restored by LEAVE");
    assert_eq!(cpu.state.gpr[4] & 0xffff, 0x8000, "SP back to the start");
    assert_eq!(
        u16::from_le_bytes([ram.0[0x7ffe], ram.0[0x7fff]]),
        0x1234,
        "ENTER pushed BP"
    );
}

#[test]
fn leave_32_bit_operand_size() {
    // mov ebp,0x7ff0; push dword 0xaabbccdd (at 0x7ffc); mov ebp,esp; leave (o32); hlt
    let (cpu, _) = run16(&[
        0x66, 0xbd, 0xf0, 0x7f, 0x00, 0x00, // mov ebp, 0x7ff0
        0x66, 0x68, 0xdd, 0xcc, 0xbb, 0xaa, // push dword 0xaabbccdd
        0x66, 0x89, 0xe5, // mov ebp, esp
        0x66, 0xc9, // leave (32-bit)
        0xf4,
    ]);
    assert_eq!(cpu.state.gpr[5], 0xaabb_ccdd, "EBP popped as a dword");
    assert_eq!(cpu.state.gpr[4] & 0xffff, 0x8000);
}

#[test]
fn string_ops_honour_the_direction_flag() {
    // ES=DS=0. Copy 4 bytes backwards with STD; REP MOVSB from 0x3003 down to 0x4003.
    // Then SCASB backwards for 0x22 and LODSW forwards after CLD.
    let code = [
        0xbe, 0x03, 0x30, // mov si, 0x3003
        0xbf, 0x03, 0x40, // mov di, 0x4003
        0xb9, 0x04, 0x00, // mov cx, 4
        0xfd, // std
        0xf3, 0xa4, // rep movsb
        0xbf, 0x03, 0x40, // mov di, 0x4003
        0xb0, 0x22, // mov al, 0x22
        0xb9, 0x04, 0x00, // mov cx, 4
        0xf2, 0xae, // repne scasb
        0xfc, // cld
        0xbe, 0x00, 0x40, // mov si, 0x4000
        0xad, // lodsw
        0xf4, // hlt
    ];
    let mut ram = Ram(vec![0; 0x10000]);
    ram.0[0x1000..0x1000 + code.len()].copy_from_slice(&code);
    ram.0[0x3000..0x3004].copy_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    let mut cpu = Cpu::new(true);
    cpu.state.seg[1].base = 0;
    cpu.state.seg[1].selector = 0;
    cpu.state.rip = 0x1000;
    cpu.state.gpr[4] = 0x8000;
    for _ in 0..100 {
        if cpu.step(&mut ram) == Step::Halted {
            break;
        }
    }
    assert_eq!(
        &ram.0[0x4000..0x4004],
        &[0x11, 0x22, 0x33, 0x44],
        "copied backwards"
    );
    let g = &cpu.state.gpr;
    // REPNE SCASB from 0x4003 down: 0x44, 0x33, 0x22 (match) → DI = 0x4000, CX = 1, ZF = 1.
    assert_eq!(g[7] & 0xffff, 0x4000, "DI after backwards scan");
    assert_eq!(g[1] & 0xffff, 1, "CX after REPNE SCASB stops on the match");
    assert_ne!(cpu.state.rflags & 0x40, 0, "ZF set by the match");
    // LODSW after CLD reads 0x2211 and advances SI by 2.
    assert_eq!(g[0] & 0xffff, 0x2211);
    assert_eq!(g[6] & 0xffff, 0x4002);
}
