//! Fuzzes the Windows Hypervisor Platform backend's exit handling, which runs on every host:
//! the input is an exit context as WHP would write it (reason, processor state, instruction
//! bytes the guest controls), the register values the backend would read, and 64 KiB of
//! guest RAM (page tables, descriptor tables, operands). Memory-access and port-I/O exits are
//! completed through x86emu as the backend does; nothing may panic.
#![no_main]

use backend_whp::emulate::{
    complete_port_io_fast, port_io_needs_emulation, Emulator, EMULATION_REGISTERS,
};
use backend_whp::exit::{ExitContextBuffer, ExitKind, RunExit, EXIT_CONTEXT_SIZE};
use backend_whp::memory::{ExitBus, GuestRam};
use backend_whp::regs::{RegisterList, RegisterValue};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM at 0.
const RAM: usize = 0x1_0000;

/// A machine with nothing attached: reads are all-ones, writes are dropped.
struct Nothing;

impl hv::CpuIo for Nothing {
    fn io_read(&self, _vp: u32, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn io_write(&self, _vp: u32, _port: u16, _data: &[u8]) {}
    fn mmio_read(&self, _vp: u32, _address: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _vp: u32, _address: u64, _data: &[u8]) {}
}

fuzz_target!(|data: &[u8]| {
    // Short inputs are padded with zeros, so that every input reaches the parser.
    let regs_len = EMULATION_REGISTERS.len() * 16;
    let mut input = data.to_vec();
    if input.len() < EXIT_CONTEXT_SIZE + regs_len {
        input.resize(EXIT_CONTEXT_SIZE + regs_len, 0);
    }
    let (exit, rest) = input.split_at(EXIT_CONTEXT_SIZE);
    let (values, ram) = rest.split_at(regs_len);
    let mut buf = ExitContextBuffer([0; EXIT_CONTEXT_SIZE]);
    buf.0.copy_from_slice(exit);
    let exit = RunExit::parse(&buf);

    let mut regs = RegisterList::new();
    for (name, v) in EMULATION_REGISTERS.iter().zip(values.chunks_exact(16)) {
        let word = |r: std::ops::Range<usize>| {
            u64::from_le_bytes(v[r].try_into().unwrap_or_default())
        };
        regs.push(
            *name,
            RegisterValue {
                low: word(0..8),
                high: word(8..16),
            },
        );
    }
    let Ok(memory) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]) else {
        return;
    };
    let _ = memory.write_slice(&ram[..ram.len().min(RAM)], GuestAddress(0));
    let ram = GuestRam::new(memory);
    let io = Nothing;
    let mut bus = ExitBus {
        vp: 0,
        ram: &ram,
        io: &io,
        tsc: 0,
    };
    let mut emulator = Emulator::new(0, 1);
    match exit.kind {
        ExitKind::MemoryAccess(access) => {
            let _ = emulator.complete_mmio(&access, &regs, &mut bus);
        }
        ExitKind::IoPortAccess(access) if port_io_needs_emulation(&exit.vp, &access) => {
            let _ = emulator.complete_port_io(&access, &regs, &mut bus);
        }
        ExitKind::IoPortAccess(access) => {
            let _ = complete_port_io_fast(&exit.vp, &access, &io, 0);
        }
        _ => {}
    }
});
