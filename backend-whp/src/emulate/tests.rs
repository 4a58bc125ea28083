use super::*;
use crate::exit::{ExecutionState, IoPortAccessInfo, MemoryAccessInfo, MemoryAccessType};
use crate::memory::GuestRam;
use crate::regs::interruption_type;
use crate::testutil::{ram, Recorder};
use hv::Segment;
use vm_memory::{Bytes, GuestAddress};

const CODE: u64 = 0x100;

/// Protected-mode flat 32-bit state (paging off) at `CODE`.
fn flat32() -> CpuState {
    let mut s = CpuState::power_on(true);
    s.seg = [
        Segment::flat(0x10, false, false, 0),
        Segment::flat(0x8, true, false, 0),
        Segment::flat(0x10, false, false, 0),
        Segment::flat(0x10, false, false, 0),
        Segment::flat(0x10, false, false, 0),
        Segment::flat(0x10, false, false, 0),
    ];
    s.cr0 = 0x11;
    s.rip = CODE;
    s.rflags = 0x2;
    s
}

/// The register read the backend would make for `s`.
fn regs_of(s: &CpuState) -> RegisterList {
    let mut l = RegisterList::new();
    for (i, n) in GPR_NAMES.iter().enumerate() {
        l.push(*n, RegisterValue::from_u64(s.gpr[i]));
    }
    l.push(RegisterName::RIP, RegisterValue::from_u64(s.rip));
    l.push(RegisterName::RFLAGS, RegisterValue::from_u64(s.rflags));
    for (i, n) in SEG_NAMES.iter().enumerate() {
        l.push(*n, segment_value(&s.seg[i]));
    }
    l.push(RegisterName::LDTR, segment_value(&s.ldt));
    l.push(RegisterName::TR, segment_value(&s.tr));
    l.push(RegisterName::IDTR, table_value(&s.idt));
    l.push(RegisterName::GDTR, table_value(&s.gdt));
    for (n, v) in [
        (RegisterName::CR0, s.cr0),
        (RegisterName::CR2, s.cr2),
        (RegisterName::CR3, s.cr3),
        (RegisterName::CR4, s.cr4),
        (RegisterName::EFER, s.efer),
    ] {
        l.push(n, RegisterValue::from_u64(v));
    }
    l.push(
        RegisterName::INTERRUPT_STATE,
        interrupt_state_value(s.interrupt_shadow, s.nmi_masked),
    );
    assert_eq!(l.names, EMULATION_REGISTERS.to_vec());
    l
}

fn mem_ctx(bytes: &[u8], gpa: u64, access: MemoryAccessType) -> MemoryAccessContext {
    let mut b = [0u8; 16];
    b[..bytes.len()].copy_from_slice(bytes);
    MemoryAccessContext {
        instruction_byte_count: bytes.len() as u8,
        instruction_bytes: b,
        access_info: MemoryAccessInfo {
            access,
            gpa_unmapped: true,
            gva_valid: false,
        },
        gpa,
        gva: 0,
    }
}

struct World {
    ram: GuestRam,
    io: Recorder,
}

impl World {
    fn new() -> Self {
        Self {
            ram: GuestRam::from_slots(&[(ram(0, 0x10000), false), (ram(0xf_0000, 0x1000), true)])
                .unwrap(),
            io: Recorder::default(),
        }
    }

    fn poke(&self, at: u64, bytes: &[u8]) {
        self.ram
            .memory()
            .write_slice(bytes, GuestAddress(at))
            .unwrap();
    }

    fn peek(&self, at: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.ram
            .memory()
            .read_slice(&mut b, GuestAddress(at))
            .unwrap();
        b
    }

    fn run(&self, s: &CpuState, bytes: &[u8]) -> Completion {
        let mut bus = ExitBus {
            vp: 0,
            ram: &self.ram,
            io: &self.io,
            tsc: 0,
        };
        Emulator::new(0, 1).emulate(&regs_of(s), bytes, &mut bus)
    }
}

#[test]
fn mmio_write_goes_to_cpuio_and_rip_advances() {
    let w = World::new();
    let mut s = flat32();
    s.gpr[0] = 0x1234_5678; // EAX
    s.gpr[7] = 0xfee0_00b0; // EDI
                            // mov [edi], eax
    let c = w.run(&s, &[0x89, 0x07]);
    assert_eq!(
        w.io.take(),
        vec![(
            "mmio_write".into(),
            0xfee0_00b0,
            vec![0x78, 0x56, 0x34, 0x12]
        )]
    );
    assert_eq!(c.exception, None);
    assert_eq!(c.registers.names, vec![RegisterName::RIP]);
    assert_eq!(c.registers.u64(RegisterName::RIP), CODE + 2);
}

#[test]
fn mmio_read_fills_the_register() {
    let w = World::new();
    w.io.answer(0xfee0_0020, &[0x00, 0x00, 0x00, 0x03]);
    let mut s = flat32();
    s.gpr[0] = 0xffff_ffff_0000_0000;
    // mov eax, [0xfee00020]
    let c = w.run(&s, &[0xa1, 0x20, 0x00, 0xe0, 0xfe]);
    assert_eq!(c.registers.u64(RegisterName::RAX), 0x0300_0000);
    assert_eq!(c.registers.u64(RegisterName::RIP), CODE + 5);
    assert_eq!(w.io.take()[0].0, "mmio_read");
}

#[test]
fn exit_bytes_are_preferred_and_short_ones_fall_back_to_memory() {
    let w = World::new();
    let mut s = flat32();
    s.gpr[0] = 0xab;
    s.gpr[7] = 0xd000_0000;
    // RAM at RIP holds `mov [edi], ax` (66 89 07); the exit reported `mov [edi], al` (88 07).
    w.poke(CODE, &[0x66, 0x89, 0x07]);
    w.run(&s, &[0x88, 0x07]);
    assert_eq!(
        w.io.take(),
        vec![("mmio_write".into(), 0xd000_0000, vec![0xab])]
    );
    // Only the prefix byte reported: the instruction is fetched from RAM.
    w.run(&s, &[0x66]);
    assert_eq!(
        w.io.take(),
        vec![("mmio_write".into(), 0xd000_0000, vec![0xab, 0])]
    );
    // Nothing reported: also fetched.
    let c = w.run(&s, &[]);
    assert_eq!(c.registers.u64(RegisterName::RIP), CODE + 3);
    assert_eq!(w.io.take().len(), 1);
}

#[test]
fn write_to_a_read_only_slot_is_mmio() {
    let w = World::new();
    let mut s = flat32();
    s.gpr[0] = 0x5a;
    // mov [0xf0010], al
    let c = w.complete(&s, &[0xa2, 0x10, 0x00, 0x0f, 0x00]);
    assert_eq!(
        w.io.take(),
        vec![("mmio_write".into(), 0xf_0010, vec![0x5a])]
    );
    assert_eq!(w.peek(0xf_0010, 1), vec![0], "ROM unchanged");
    assert_eq!(c.registers.u64(RegisterName::RIP), CODE + 5);
}

impl World {
    fn complete(&self, s: &CpuState, bytes: &[u8]) -> Completion {
        let ctx = mem_ctx(bytes, 0, MemoryAccessType::Write);
        let mut bus = ExitBus {
            vp: 0,
            ram: &self.ram,
            io: &self.io,
            tsc: 0,
        };
        Emulator::new(0, 1).complete_mmio(&ctx, &regs_of(s), &mut bus)
    }
}

#[test]
fn rep_outsb_sends_every_byte() {
    let w = World::new();
    w.poke(0x3000, b"hello");
    let mut s = flat32();
    s.gpr[1] = 5; // ECX
    s.gpr[2] = 0x3f8; // EDX
    s.gpr[6] = 0x3000; // ESI
    let c = w.run(&s, &[0xf3, 0x6e]);
    let calls = w.io.take();
    assert_eq!(calls.len(), 5);
    let bytes: Vec<u8> = calls.iter().map(|c| c.2[0]).collect();
    assert_eq!(bytes, b"hello");
    assert!(calls.iter().all(|c| c.0 == "io_write" && c.1 == 0x3f8));
    assert_eq!(c.registers.u64(RegisterName::RCX), 0);
    assert_eq!(c.registers.u64(RegisterName::RSI), 0x3005);
    assert_eq!(c.registers.u64(RegisterName::RIP), CODE + 2);
}

#[test]
fn rep_insw_fills_ram_in_real_mode() {
    let w = World::new();
    w.io.answer(0x1f0, &[0x34, 0x12]);
    let mut s = CpuState::power_on(true);
    s.seg[seg_es()] = Segment::real_mode(0x200, false);
    s.seg[1] = Segment::real_mode(0, true);
    s.rip = CODE;
    s.gpr[1] = 3; // CX
    s.gpr[2] = 0x1f0; // DX
    s.gpr[7] = 0x10; // DI
    let io = IoPortAccessContext {
        instruction_byte_count: 2,
        instruction_bytes: {
            let mut b = [0; 16];
            b[..2].copy_from_slice(&[0xf3, 0x6d]);
            b
        },
        access_info: IoPortAccessInfo {
            is_write: false,
            access_size: 2,
            string_op: true,
            rep_prefix: true,
        },
        port: 0x1f0,
        ..Default::default()
    };
    let mut bus = ExitBus {
        vp: 0,
        ram: &w.ram,
        io: &w.io,
        tsc: 0,
    };
    let c = Emulator::new(0, 1).complete_port_io(&io, &regs_of(&s), &mut bus);
    assert_eq!(w.peek(0x2010, 6), vec![0x34, 0x12, 0x34, 0x12, 0x34, 0x12]);
    assert_eq!(c.registers.u64(RegisterName::RDI), 0x16);
    assert_eq!(c.registers.u64(RegisterName::RCX), 0);
    assert_eq!(c.registers.u64(RegisterName::RIP), CODE + 2);
}

fn seg_es() -> usize {
    x86emu::state::seg::ES
}

#[test]
fn page_fault_in_rep_movs_is_injected_with_progress_kept() {
    let w = World::new();
    // 32-bit paging: directory at 0x1000, one table at 0x2000 identity-mapping pages 0..16
    // except 8 (not present) and 9 (→ the MMIO page at 0xfee00000).
    w.poke(0x1000, &(0x2000u32 | 3).to_le_bytes());
    for p in 0..16u32 {
        let pte = match p {
            8 => 0,
            9 => 0xfee0_0000 | 3,
            _ => (p << 12) | 3,
        };
        w.poke(0x2000 + u64::from(p) * 4, &pte.to_le_bytes());
    }
    w.poke(0x7ffe, &[0xaa, 0xbb]);
    let mut s = flat32();
    s.cr0 = 0x8000_0011;
    s.cr3 = 0x1000;
    s.gpr[1] = 4; // ECX
    s.gpr[6] = 0x7ffe; // ESI
    s.gpr[7] = 0x9000; // EDI
                       // rep movsb
    let c = w.run(&s, &[0xf3, 0xa4]);
    assert_eq!(
        w.io.take(),
        vec![
            ("mmio_write".into(), 0xfee0_0000, vec![0xaa]),
            ("mmio_write".into(), 0xfee0_0001, vec![0xbb]),
        ]
    );
    let f = c.exception.expect("page fault");
    assert_eq!((f.vector, f.error, f.cr2), (14, Some(0), Some(0x8000)));
    let r = &c.registers;
    assert_eq!(r.u64(RegisterName::CR2), 0x8000);
    assert_eq!(r.u64(RegisterName::RCX), 2);
    assert_eq!(r.u64(RegisterName::RSI), 0x8000);
    assert_eq!(r.u64(RegisterName::RDI), 0x9002);
    assert!(
        r.get(RegisterName::RIP).is_none(),
        "RIP stays on the instruction"
    );
    let p = PendingInterruption::from_value(r.get(RegisterName::PENDING_INTERRUPTION).unwrap());
    assert_eq!(p, PendingInterruption::exception(14, Some(0)));
    assert_eq!(p.kind, interruption_type::EXCEPTION);
}

#[test]
fn undecodable_instruction_raises_ud_not_a_panic() {
    let w = World::new();
    let c = w.run(&flat32(), &[0x0f, 0x0b]);
    assert_eq!(c.exception.map(|f| f.vector), Some(6));
    // Garbage in memory, no bytes from the exit: still an exception, never a panic.
    w.poke(CODE, &[0xf0; 15]);
    let c = w.run(&flat32(), &[]);
    assert_eq!(c.exception.map(|f| f.vector), Some(6));
}

#[test]
fn completing_clears_the_interrupt_shadow() {
    let w = World::new();
    let mut s = flat32();
    s.interrupt_shadow = true;
    s.nmi_masked = true;
    s.gpr[7] = 0xd000_0000;
    let c = w.run(&s, &[0x88, 0x07]);
    assert_eq!(c.registers.u64(RegisterName::INTERRUPT_STATE), 2);
}

fn vp_ctx(cs: Segment, rip: u64, len: u8, pe: bool, lma: bool) -> VpExitContext {
    VpExitContext {
        execution_state: ExecutionState {
            cr0_pe: pe,
            efer_lma: lma,
            ..Default::default()
        },
        instruction_length: len,
        cr8: 0,
        cs,
        rip,
        rflags: 2,
    }
}

fn io_ctx(is_write: bool, size: u8, port: u16, rax: u64) -> IoPortAccessContext {
    IoPortAccessContext {
        access_info: IoPortAccessInfo {
            is_write,
            access_size: size,
            string_op: false,
            rep_prefix: false,
        },
        port,
        rax,
        ..Default::default()
    }
}

#[test]
fn plain_port_io_fast_path() {
    let io = Recorder::default();
    io.answer(0x71, &[0x42]);
    io.answer(0xcfc, &[1, 2, 3, 4]);
    let real = vp_ctx(Segment::real_mode(0xf000, true), 0x10, 2, false, false);
    // in al, 0x71: only AL changes.
    let r = complete_port_io_fast(&real, &io_ctx(false, 1, 0x71, 0xdead_beef), &io, 0);
    assert_eq!(r.u64(RegisterName::RAX), 0xdead_be42);
    assert_eq!(r.u64(RegisterName::RIP), 0x12);
    // in eax, dx: 32-bit results zero-extend.
    let long = vp_ctx(Segment::flat(8, true, true, 0), 0x1000, 1, true, true);
    let r = complete_port_io_fast(&long, &io_ctx(false, 4, 0xcfc, u64::MAX), &io, 0);
    assert_eq!(r.u64(RegisterName::RAX), 0x0403_0201);
    // out dx, ax: two bytes, RAX untouched.
    let r = complete_port_io_fast(&long, &io_ctx(true, 2, 0x80, 0x1234_5678), &io, 0);
    assert!(r.get(RegisterName::RAX).is_none());
    assert_eq!(r.u64(RegisterName::RIP), 0x1001);
    let calls = io.take();
    assert_eq!(
        calls.last().unwrap(),
        &("io_write".into(), 0x80, vec![0x78, 0x56])
    );
    // IP wraps at 64 KiB in real mode.
    let edge = vp_ctx(Segment::real_mode(0, true), 0xffff, 1, false, false);
    let r = complete_port_io_fast(&edge, &io_ctx(true, 1, 0x80, 0), &io, 0);
    assert_eq!(r.u64(RegisterName::RIP), 0);
}

#[test]
fn which_port_io_needs_the_emulator() {
    let vp = vp_ctx(Segment::real_mode(0, true), 0, 1, false, false);
    let plain = io_ctx(false, 1, 0x60, 0);
    assert!(!port_io_needs_emulation(&vp, &plain));
    let mut string = plain;
    string.access_info.string_op = true;
    assert!(port_io_needs_emulation(&vp, &string));
    let mut shadow = vp;
    shadow.execution_state.interrupt_shadow = true;
    assert!(port_io_needs_emulation(&shadow, &plain));
    let mut unknown = vp;
    unknown.instruction_length = 0;
    assert!(port_io_needs_emulation(&unknown, &plain));
    assert!(port_io_needs_emulation(&vp, &io_ctx(false, 3, 0x60, 0)));
}
