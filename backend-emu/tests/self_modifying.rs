//! Code that rewrites itself must run the new bytes: the decoded-instruction cache is
//! invalidated by writes to its pages.

use backend_emu::EmuHypervisor;
use hv::{CpuIo, IrqChipMode, Partition, PartitionConfig, Segment, StopReason};
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestRegionMmap, MemoryRegionAddress};

#[derive(Default)]
struct Io {
    outs: Mutex<Vec<u8>>,
    stop: Mutex<Option<Arc<hv::StopHandle>>>,
}

impl CpuIo for Io {
    fn io_read(&self, _: u32, _: u16, d: &mut [u8]) {
        d.fill(0xff);
    }
    fn io_write(&self, _: u32, port: u16, d: &[u8]) {
        match port {
            0xf4 => {
                if let Some(s) = self.stop.lock().unwrap().as_ref() {
                    s.request_stop(StopReason::PowerOff);
                }
            }
            _ => self.outs.lock().unwrap().push(d[0]),
        }
    }
    fn mmio_read(&self, _: u32, _: u64, d: &mut [u8]) {
        d.fill(0xff);
    }
    fn mmio_write(&self, _: u32, _: u64, _: &[u8]) {}
}

fn run(code: &[u8]) -> Vec<u8> {
    let p = EmuHypervisor
        .create_partition(&PartitionConfig {
            vcpu_count: 1,
            irqchip: IrqChipMode::Split,
        })
        .unwrap();
    let ram = Arc::new(GuestRegionMmap::from_range(GuestAddress(0), 0x10000, None).unwrap());
    ram.write_slice(code, MemoryRegionAddress(0x1000)).unwrap();
    p.map_memory(0, ram, false).unwrap();
    let mut vp = p.create_vp(0).unwrap();
    let mut s = vp.state().unwrap();
    s.sregs.cs = Segment::real_mode(0, true);
    s.regs.rip = 0x1000;
    s.activity = hv::ActivityState::Running;
    vp.set_state(&s).unwrap();
    let io = Io::default();
    *io.stop.lock().unwrap() = Some(vp.stop_handle());
    assert_eq!(vp.run(&io).unwrap(), StopReason::PowerOff);
    io.outs.into_inner().unwrap()
}

#[test]
fn patched_immediate_is_seen_on_the_next_iteration() {
    let out = run(&[
        0xb9, 0x02, 0x00, // 1000: mov cx, 2
        0xb0, 0x11, // 1003: mov al, 0x11
        0xe6, 0x10, // 1005: out 0x10, al
        0xc6, 0x06, 0x04, 0x10, 0x22, // 1007: mov byte [0x1004], 0x22
        0xe2, 0xf5, // 100c: loop 1003
        0xe6, 0xf4, // 100e: out 0xf4, al (power off)
    ]);
    assert_eq!(out, vec![0x11, 0x22]);
}

#[test]
fn instruction_boundaries_change_after_patching_nops() {
    // Five one-byte NOPs executed once, then rewritten as one five-byte NOP and run again.
    let out = run(&[
        0xb9, 0x02, 0x00, // 1000: mov cx, 2
        0x90, 0x90, 0x90, 0x90, 0x90, // 1003: nop x5
        0xb0, 0x33, // 1008: mov al, 0x33
        0xe6, 0x10, // 100a: out 0x10, al
        0x66, 0xc7, 0x06, 0x03, 0x10, 0x66, 0x0f, 0x1f,
        0x40, // 100c: mov dword [0x1003], 0x401f0f66
        0xc6, 0x06, 0x07, 0x10, 0x00, // 1015: mov byte [0x1007], 0x00
        0xe2, 0xe7, // 101a: loop 1003
        0xe6, 0xf4, // 101c: power off
    ]);
    assert_eq!(out, vec![0x33, 0x33]);
}
