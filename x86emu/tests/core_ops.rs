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

/// A ring-3 far call through a call gate into ring 0: the TSS supplies the ring-0 stack, the
/// gate's parameter is copied, and RETF 4 returns to ring 3 with the caller's stack restored.
#[test]
fn call_gate_raises_privilege_and_returns() {
    let mut ram = Ram(vec![0; 0x20000]);
    let gdt: [u64; 7] = [
        0,
        0x00cf_9a00_0000_ffff, // 0x08 ring-0 code
        0x00cf_9200_0000_ffff, // 0x10 ring-0 data
        0x00cf_fa00_0000_ffff, // 0x18 ring-3 code
        0x00cf_f200_0000_ffff, // 0x20 ring-3 data
        // 0x28 32-bit call gate, DPL 3, 1 parameter, target 0x08:0x3000
        0x0000_ec01_0008_3000,
        // 0x30 32-bit available TSS at 0x5000, limit 0x67
        0x0000_8950_0000_0067,
    ];
    for (k, d) in gdt.iter().enumerate() {
        ram.0[0x500 + k * 8..0x508 + k * 8].copy_from_slice(&d.to_le_bytes());
    }
    // TSS: ESP0 = 0x9000, SS0 = 0x10.
    ram.0[0x5004..0x5008].copy_from_slice(&0x9000u32.to_le_bytes());
    ram.0[0x5008..0x500a].copy_from_slice(&0x10u16.to_le_bytes());
    // Ring 3 at 0x1000: push 0x12345678; call 0x2b:0; hlt (privileged: #GP, ends the test)
    let ring3 = [
        0x68, 0x78, 0x56, 0x34, 0x12, 0x9a, 0, 0, 0, 0, 0x2b, 0x00, 0xf4,
    ];
    ram.0[0x1000..0x1000 + ring3.len()].copy_from_slice(&ring3);
    // Ring 0 at 0x3000: mov eax, [esp+8]; mov ebx, cs; retf 4
    let ring0 = [0x8b, 0x44, 0x24, 0x08, 0x8c, 0xcb, 0xca, 0x04, 0x00];
    ram.0[0x3000..0x3000 + ring0.len()].copy_from_slice(&ring0);
    let mut cpu = Cpu::new(true);
    let seg = |sel: u16, code: bool| hv::Segment::flat(sel, code, false, 3);
    let s = &mut cpu.state;
    s.cr0 |= 1;
    s.gdt = hv::TableRegister {
        base: 0x500,
        limit: 7 * 8 - 1,
    };
    s.tr = hv::Segment {
        base: 0x5000,
        limit: 0x67,
        selector: 0x30,
        type_: 0xb,
        present: true,
        ..Default::default()
    };
    s.seg = [
        seg(0x23, false),
        seg(0x1b, true),
        seg(0x23, false),
        seg(0x23, false),
        seg(0x23, false),
        seg(0x23, false),
    ];
    s.rip = 0x1000;
    s.gpr[4] = 0x7000;
    // push, call (→ ring 0), mov, mov, retf (→ ring 3)
    for _ in 0..5 {
        assert_eq!(cpu.step(&mut ram), Step::Executed);
    }
    assert_eq!(
        cpu.state.gpr[0], 0x1234_5678,
        "parameter copied to the ring-0 stack"
    );
    assert_eq!(cpu.state.gpr[3] & 0xffff, 0x08, "ran in ring 0");
    assert_eq!(cpu.state.cpl(), 3, "back in ring 3");
    assert_eq!(cpu.state.rip, 0x100c, "returned after the call");
    assert_eq!(cpu.state.gpr[4], 0x7000, "RETF 4 released the parameter");
    assert_eq!(
        cpu.state.seg[2].selector, 0x23,
        "ring-3 stack segment restored"
    );
    assert_eq!(
        u32::from_le_bytes(ram.0[0x8ff4..0x8ff8].try_into().unwrap()),
        0x1234_5678,
        "copy on the TSS stack"
    );
}

/// IRET into virtual-8086 mode runs real-mode-style code (segment × 16 addressing); INT n there
/// with IOPL < 3 raises #GP, which enters the ring-0 handler on the TSS stack with the v86
/// segment registers pushed and zeroed.
#[test]
fn virtual_8086_mode_entry_and_exit() {
    let mut ram = Ram(vec![0; 0x30000]);
    let gdt: [u64; 4] = [
        0,
        0x00cf_9a00_0000_ffff, // 0x08 ring-0 code
        0x00cf_9200_0000_ffff, // 0x10 ring-0 data
        0x0000_8950_0000_0067, // 0x18 TSS at 0x5000
    ];
    for (k, d) in gdt.iter().enumerate() {
        ram.0[0x500 + k * 8..0x508 + k * 8].copy_from_slice(&d.to_le_bytes());
    }
    ram.0[0x5004..0x5008].copy_from_slice(&0x9000u32.to_le_bytes()); // ESP0
    ram.0[0x5008..0x500a].copy_from_slice(&0x10u16.to_le_bytes()); // SS0
                                                                   // IDT at 0x6000: #GP (13) → 0x08:0x3000, 32-bit interrupt gate.
    let gate: u64 = 0x3000 | (0x08 << 16) | (0x8e00u64 << 32);
    ram.0[0x6000 + 13 * 8..0x6000 + 14 * 8].copy_from_slice(&gate.to_le_bytes());
    // Ring 0 at 0x1000: push v86 frame (GS FS DS ES SS ESP EFLAGS CS EIP) and IRETD.
    let mut ring0 = Vec::new();
    for v in [
        0x2000u32,
        0x2000,
        0x2000,
        0x2000,
        0x2000,
        0x0800,
        0x0002_0002,
        0x2000,
        0x0010,
    ] {
        ring0.push(0x68);
        ring0.extend_from_slice(&v.to_le_bytes());
    }
    ring0.push(0xcf); // iretd
    ram.0[0x1000..0x1000 + ring0.len()].copy_from_slice(&ring0);
    // v86 code at 2000:0010 (linear 0x20010): mov ax, 0x1234; mov [0x20], ax; int 0x21
    let v86 = [0xb8, 0x34, 0x12, 0xa3, 0x20, 0x00, 0xcd, 0x21];
    ram.0[0x20010..0x20010 + v86.len()].copy_from_slice(&v86);
    // #GP handler at 0x3000: hlt
    ram.0[0x3000] = 0xf4;
    let mut cpu = Cpu::new(true);
    let flat = |sel: u16, code: bool| hv::Segment::flat(sel, code, false, 0);
    let s = &mut cpu.state;
    s.cr0 |= 1;
    s.gdt = hv::TableRegister {
        base: 0x500,
        limit: 31,
    };
    s.idt = hv::TableRegister {
        base: 0x6000,
        limit: 0x7ff,
    };
    s.tr = hv::Segment {
        base: 0x5000,
        limit: 0x67,
        selector: 0x18,
        type_: 0xb,
        present: true,
        ..Default::default()
    };
    s.seg = [
        flat(0x10, false),
        flat(0x08, true),
        flat(0x10, false),
        flat(0x10, false),
        flat(0x10, false),
        flat(0x10, false),
    ];
    s.rip = 0x1000;
    s.gpr[4] = 0x8000;
    for _ in 0..20 {
        if cpu.step(&mut ram) == Step::Halted {
            break;
        }
    }
    assert!(cpu.state.halted, "reached the #GP handler");
    assert_eq!(
        u16::from_le_bytes([ram.0[0x20020], ram.0[0x20021]]),
        0x1234,
        "v86 store at DS*16+0x20"
    );
    assert_eq!(cpu.state.cpl(), 0);
    assert_eq!(cpu.state.rflags & (1 << 17), 0, "VM cleared in the handler");
    // Ring-0 stack from ESP0 down: GS FS DS ES SS ESP EFLAGS CS EIP error.
    let word = |a: usize| u32::from_le_bytes(ram.0[a..a + 4].try_into().unwrap());
    assert_eq!(word(0x9000 - 4), 0x2000, "GS pushed");
    assert_ne!(word(0x9000 - 28) & (1 << 17), 0, "pushed EFLAGS has VM set");
    assert_eq!(word(0x9000 - 32), 0x2000, "pushed CS");
    assert_eq!(word(0x9000 - 36), 0x16, "pushed EIP at the INT instruction");
    assert_eq!(word(0x9000 - 40), 0, "error code");
    assert!(cpu.state.seg[3].unusable, "DS zeroed on the way out of v86");
}

#[test]
fn mul_and_div_write_their_register_pairs() {
    // mov al,200; mov bl,3; mul bl (AX=600); mov cx,1000; mov ax,0xffff; mul cx (DX:AX=0x3e7_fc18)
    // mov dx,0; mov ax,1000; mov cx,7; div cx (AX=142, DX=6); mov ax,100; mov bl,7; div bl (AL=14, AH=2)
    let (cpu, _) = run16(&[
        0xb0, 200, 0xb3, 3, 0xf6, 0xe3, // mul bl
        0xbe, 0x00, 0x00, 0x89, 0xc6, // mov si,0; mov si,ax (keep 600)
        0xb9, 0xe8, 0x03, 0xb8, 0xff, 0xff, 0xf7, 0xe1, // mov cx,1000; mov ax,0xffff; mul cx
        0x89, 0xc7, 0x89, 0xd5, // mov di,ax; mov bp,dx
        0xba, 0x00, 0x00, 0xb8, 0xe8, 0x03, 0xb9, 0x07, 0x00, 0xf7, 0xf1, // div cx
        0x89, 0x16, 0x00, 0x50, 0xa3, 0x02, 0x50, // mov [0x5000],dx; mov [0x5002],ax
        0xb8, 100, 0x00, 0xb3, 7, 0xf6, 0xf3, // mov ax,100; mov bl,7; div bl
        0xf4,
    ]);
    let g = &cpu.state.gpr;
    assert_eq!(g[6] & 0xffff, 600, "MUL r/m8 writes AX");
    assert_eq!(
        (g[5] & 0xffff) << 16 | (g[7] & 0xffff),
        0xffff * 1000,
        "MUL r/m16 writes DX:AX"
    );
    assert_eq!(
        g[0] & 0xffff,
        2 << 8 | 14,
        "DIV r/m8 writes AL (quotient) and AH (remainder)"
    );
}

/// CALL to a TSS switches tasks (registers saved and loaded, back link, busy bits, NT, CR0.TS);
/// IRET with NT returns to the calling task.
#[test]
fn task_switch_by_call_and_back_by_iret() {
    let mut ram = Ram(vec![0; 0x20000]);
    let tss =
        |base: u64| 0x0000_8900_0000_0067u64 | ((base & 0xff_ffff) << 16) | ((base >> 24) << 56);
    let gdt: [u64; 5] = [
        0,
        0x00cf_9a00_0000_ffff,
        0x00cf_9200_0000_ffff,
        tss(0x5000) | (2 << 40),
        tss(0x5100),
    ];
    for (k, d) in gdt.iter().enumerate() {
        ram.0[0x500 + k * 8..0x508 + k * 8].copy_from_slice(&d.to_le_bytes());
    }
    // Task B's TSS: EIP 0x3000, EFLAGS 2, EAX 0x77, ESP 0x9000, CS 0x08, data 0x10.
    let b = 0x5100;
    let put = |ram: &mut Ram, a: usize, v: u32| ram.0[a..a + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut ram, b + 0x20, 0x3000);
    put(&mut ram, b + 0x24, 2);
    put(&mut ram, b + 0x28, 0x77);
    put(&mut ram, b + 0x38, 0x9000);
    for (k, sel) in [0x10u32, 0x08, 0x10, 0x10, 0x10, 0x10].iter().enumerate() {
        put(&mut ram, b + 0x48 + k * 4, *sel);
    }
    // Task A at 0x1000: mov eax, 0x1234; call 0x20:0; hlt
    let a_code = [
        0xb8, 0x34, 0x12, 0x00, 0x00, 0x9a, 0, 0, 0, 0, 0x20, 0x00, 0xf4,
    ];
    ram.0[0x1000..0x1000 + a_code.len()].copy_from_slice(&a_code);
    // Task B at 0x3000: mov [0x7000], eax; iretd
    let b_code = [0xa3, 0x00, 0x70, 0x00, 0x00, 0xcf];
    ram.0[0x3000..0x3000 + b_code.len()].copy_from_slice(&b_code);
    let mut cpu = Cpu::new(true);
    let flat = |sel: u16, code: bool| hv::Segment::flat(sel, code, false, 0);
    let s = &mut cpu.state;
    s.cr0 |= 1;
    s.gdt = hv::TableRegister {
        base: 0x500,
        limit: 5 * 8 - 1,
    };
    s.tr = hv::Segment {
        base: 0x5000,
        limit: 0x67,
        selector: 0x18,
        type_: 0xb,
        present: true,
        ..Default::default()
    };
    s.seg = [
        flat(0x10, false),
        flat(0x08, true),
        flat(0x10, false),
        flat(0x10, false),
        flat(0x10, false),
        flat(0x10, false),
    ];
    s.rip = 0x1000;
    s.gpr[4] = 0x8000;
    for _ in 0..4 {
        assert_eq!(cpu.step(&mut ram), Step::Executed);
    }
    assert_eq!(
        u32::from_le_bytes(ram.0[0x7000..0x7004].try_into().unwrap()),
        0x77,
        "task B ran with its EAX"
    );
    assert_eq!(cpu.state.tr.selector, 0x18, "back in task A");
    assert_eq!(cpu.state.rip, 0x100c, "after the CALL");
    assert_eq!(
        cpu.state.gpr[0], 0x1234,
        "task A's EAX restored from its TSS"
    );
    assert_eq!(cpu.state.gpr[4], 0x8000, "task A's ESP restored");
    assert_eq!(cpu.state.rflags & (1 << 14), 0, "NT clear in task A");
    assert_ne!(cpu.state.cr0 & 8, 0, "CR0.TS set by the switch");
    assert_eq!(
        u16::from_le_bytes([ram.0[0x5100], ram.0[0x5101]]),
        0x18,
        "B's back link names A"
    );
    assert_eq!(ram.0[0x500 + 4 * 8 + 5] & 2, 0, "B no longer busy");
    assert_ne!(ram.0[0x500 + 3 * 8 + 5] & 2, 0, "A still busy");
    assert_eq!(cpu.step(&mut ram), Step::Halted);
}

#[test]
fn the_cpu_reports_no_speculative_execution_weaknesses() {
    let (cpu, _) = run16(&[
        0x66, 0xb9, 0x0a, 0x01, 0x00, 0x00, // mov ecx, 0x10a (ARCH_CAPABILITIES)
        0x0f, 0x32, // rdmsr
        0x66, 0x89, 0xc7, // mov edi, eax
        0x66, 0xb8, 0x07, 0x00, 0x00, 0x00, // mov eax, 7
        0x66, 0x31, 0xc9, // xor ecx, ecx
        0x0f, 0xa2, // cpuid
        0x66, 0x89, 0xd6, // mov esi, edx
        0x66, 0xb9, 0x48, 0x00, 0x00, 0x00, // mov ecx, 0x48 (SPEC_CTRL)
        0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (IBRS)
        0x66, 0x31, 0xd2, // xor edx, edx
        0x0f, 0x30, // wrmsr
        0x66, 0x31, 0xc0, // xor eax, eax
        0x0f, 0x32, // rdmsr
        0xf4, // hlt
    ]);
    let caps = cpu.state.gpr[7];
    assert_eq!(caps & 1, 1, "RDCL_NO: no Meltdown");
    assert_eq!(caps & 2, 2, "IBRS_ALL");
    assert_eq!(caps & (1 << 5), 1 << 5, "MDS_NO");
    let leaf7_edx = cpu.state.gpr[6];
    assert_ne!(leaf7_edx & (1 << 29), 0, "ARCH_CAPABILITIES enumerated");
    assert_ne!(leaf7_edx & (1 << 26), 0, "IBRS/IBPB enumerated");
    assert_eq!(cpu.state.gpr[0] & 0xffff_ffff, 1, "SPEC_CTRL keeps IBRS");
}
