//! x87 behaviour checked on the emulator alone: faults, stack overflow, save/restore layouts.

use x86emu::{Bus, Cpu};

struct Ram(Vec<u8>);

impl Bus for Ram {
    fn read(&mut self, address: u64, data: &mut [u8]) {
        let a = address as usize;
        data.copy_from_slice(&self.0[a..a + data.len()]);
    }
    fn write(&mut self, address: u64, data: &[u8]) {
        let a = address as usize;
        self.0[a..a + data.len()].copy_from_slice(data);
    }
    fn io_in(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn io_out(&mut self, _port: u16, _data: &[u8]) {}
    fn tsc(&mut self) -> u64 {
        0
    }
}

/// Real-mode CPU with `code` at 0:1000, BX=0x2000 (memory operands use [bx+si]) and IVT
/// entries for #NM (→ 0:6000) and #MF (→ 0:5000).
fn setup(code: &[u8]) -> (Cpu, Ram) {
    let mut ram = Ram(vec![0u8; 0x10000]);
    ram.0[0x1000..0x1000 + code.len()].copy_from_slice(code);
    ram.0[7 * 4..7 * 4 + 4].copy_from_slice(&[0x00, 0x60, 0, 0]);
    ram.0[16 * 4..16 * 4 + 4].copy_from_slice(&[0x00, 0x50, 0, 0]);
    let mut cpu = Cpu::new(true);
    cpu.state.seg[1].base = 0;
    cpu.state.seg[1].selector = 0;
    cpu.state.rip = 0x1000;
    cpu.state.gpr[3] = 0x2000;
    cpu.state.gpr[4] = 0x8000;
    (cpu, ram)
}

fn run(cpu: &mut Cpu, ram: &mut Ram, n: usize) {
    for _ in 0..n {
        cpu.step(ram);
    }
}

#[test]
fn device_not_available() {
    let (mut cpu, mut ram) = setup(&[0xd9, 0xe8, 0x9b]);
    cpu.state.cr0 |= 1 << 3; // TS
    run(&mut cpu, &mut ram, 1);
    assert_eq!(cpu.state.rip, 0x6000);
    // WAIT faults only with TS and MP.
    let (mut cpu, mut ram) = setup(&[0x9b]);
    cpu.state.cr0 |= 1 << 3;
    run(&mut cpu, &mut ram, 1);
    assert_eq!(cpu.state.rip, 0x1001);
    let (mut cpu, mut ram) = setup(&[0x9b]);
    cpu.state.cr0 |= (1 << 3) | (1 << 1);
    run(&mut cpu, &mut ram, 1);
    assert_eq!(cpu.state.rip, 0x6000);
}

#[test]
fn math_fault_on_next_waiting_instruction() {
    // fldz; fldz; fdiv st,st1 (0/0, IE unmasked); fnstsw ax; fld1
    let code = [0xd9, 0xee, 0xd9, 0xee, 0xd8, 0xf1, 0xdf, 0xe0, 0xd9, 0xe8];
    let (mut cpu, mut ram) = setup(&code);
    cpu.state.cr0 |= 1 << 5; // NE
    cpu.state.fpu.fcw = 0x37e;
    run(&mut cpu, &mut ram, 3);
    assert_eq!(cpu.state.fpu.fsw & 0x8081, 0x8081, "IE, ES and B");
    // The 0/0 result is not written with IE unmasked.
    assert_eq!(&cpu.state.fpu.st[0][..10], &[0u8; 10]);
    run(&mut cpu, &mut ram, 1); // FNSTSW does not wait.
    assert_eq!(cpu.state.rip, 0x1008);
    assert_eq!(cpu.state.gpr[0] as u16, cpu.state.fpu.fsw);
    run(&mut cpu, &mut ram, 1);
    assert_eq!(cpu.state.rip, 0x5000, "#MF delivered");
}

#[test]
fn stack_overflow_masked() {
    let code = [0xd9, 0xe8].repeat(9);
    let (mut cpu, mut ram) = setup(&code);
    run(&mut cpu, &mut ram, 9);
    let f = &cpu.state.fpu;
    assert_eq!(f.fsw & 0x0241, 0x0241, "IE, SF, C1");
    assert_eq!(f.ftw, 0xff);
    assert_eq!(&f.st[0][..10], &[0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0xff]);
    assert_eq!((f.fsw >> 11) & 7, 7);
}

#[test]
fn fsave_frstor_round_trip() {
    // fld1; fldpi; fnsave [bx+si]; fnstsw ax; frstor [bx+si]
    let code = [0xd9, 0xe8, 0xd9, 0xeb, 0xdd, 0x30, 0xdf, 0xe0, 0xdd, 0x20];
    let (mut cpu, mut ram) = setup(&code);
    run(&mut cpu, &mut ram, 2);
    let before = cpu.state.fpu;
    run(&mut cpu, &mut ram, 1);
    // Real-mode 16-bit image: FCW, FSW, full tag word, then ST0..ST7.
    assert_eq!(&ram.0[0x2000..0x2002], &0x037fu16.to_le_bytes());
    assert_eq!(&ram.0[0x2002..0x2004], &before.fsw.to_le_bytes());
    assert_eq!(&ram.0[0x2004..0x2006], &0x0fffu16.to_le_bytes());
    assert_eq!(&ram.0[0x200e..0x2018], &before.st[0][..10]);
    assert_eq!(cpu.state.fpu.ftw, 0, "FNSAVE reinitializes");
    run(&mut cpu, &mut ram, 2);
    let after = cpu.state.fpu;
    assert_eq!(after.fsw, before.fsw);
    assert_eq!(after.ftw, before.ftw);
    assert_eq!(after.fcw, before.fcw);
    assert_eq!(after.st[0], before.st[0]);
    assert_eq!(after.st[1], before.st[1]);
}

#[test]
fn fcomi_and_fcmov() {
    // fld1; fldz; fcomi st,st1 (0 < 1: CF); fcmovb st,st1
    let code = [0xd9, 0xe8, 0xd9, 0xee, 0xdb, 0xf1, 0xda, 0xc1];
    let (mut cpu, mut ram) = setup(&code);
    run(&mut cpu, &mut ram, 3);
    assert_eq!(cpu.state.rflags & 0x45, 1);
    run(&mut cpu, &mut ram, 1);
    assert_eq!(&cpu.state.fpu.st[0][..10], &cpu.state.fpu.st[1][..10]);
}
