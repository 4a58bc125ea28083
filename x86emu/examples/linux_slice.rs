//! A reproducible slice of a Linux boot on the software CPU, for counting host instructions
//! per guest instruction (`valgrind --tool=callgrind`; see `bench/emu-slice.sh`).
//!
//!     linux_slice BZIMAGE [GUEST_INSTRUCTIONS]
//!
//! Loads the bzImage's protected-mode part at 1 MiB, fills a boot_params page (setup header,
//! an e820 map of 256 MiB, `nokaslr`) and enters the 32-bit boot protocol in flat protected
//! mode with no devices. The kernel's decompressor relocates itself, switches to long mode and
//! runs its XZ decoder; the example stops after GUEST_INSTRUCTIONS (default 30,000,000) and
//! prints where the guest is.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use x86emu::{Bus, CodeTracker, Cpu, RamRegion, Step};

const RAM: usize = 256 << 20;
const BOOT_PARAMS: usize = 0x1_0000;
const CMDLINE: usize = 0x2_0000;
const KERNEL: usize = 0x10_0000;

/// Flat RAM for direct access; writes through the bus are reported to the code tracker.
struct Ram<'a> {
    regions: [RamRegion<'a>; 1],
    tracker: Arc<CodeTracker>,
}

impl Bus for Ram<'_> {
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
        &self.regions
    }
}

fn put(ram: &[AtomicU8], at: usize, bytes: &[u8]) {
    for (k, b) in bytes.iter().enumerate() {
        ram[at + k].store(*b, Ordering::Relaxed);
    }
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: linux_slice BZIMAGE [GUEST_INSTRUCTIONS]")?;
    let total: u64 = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|e| format!("instruction count {n}: {e}"))?,
        None => 30_000_000,
    };
    let image = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    if image.len() < 0x1000 || &image[0x202..0x206] != b"HdrS" {
        return Err(format!("{path}: not a bzImage (no HdrS boot header)"));
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let pm = &image[(setup_sects + 1) * 512..];

    let ram: Vec<AtomicU8> = (0..RAM).map(|_| AtomicU8::new(0)).collect();
    put(&ram, KERNEL, pm);
    // boot_params: the setup header as the image has it, then what a loader fills in.
    let hdr_end = 0x202 + usize::from(image[0x201]);
    put(&ram, BOOT_PARAMS + 0x1f1, &image[0x1f1..hdr_end]);
    put(&ram, BOOT_PARAMS + 0x210, &[0xff]); // type_of_loader: undefined
    put(&ram, BOOT_PARAMS + 0x211, &[image[0x211] | 0x01]); // loadflags: LOADED_HIGH
    put(&ram, BOOT_PARAMS + 0x228, &(CMDLINE as u32).to_le_bytes());
    put(&ram, CMDLINE, b"nokaslr\0");
    // e820: 0..640 KiB and 1 MiB..RAM usable.
    let e820 = [(0u64, 0xa_0000u64), (0x10_0000, RAM as u64 - 0x10_0000)];
    put(&ram, BOOT_PARAMS + 0x1e8, &[e820.len() as u8]);
    for (k, (start, len)) in e820.iter().enumerate() {
        let at = BOOT_PARAMS + 0x2d0 + k * 20;
        put(&ram, at, &start.to_le_bytes());
        put(&ram, at + 8, &len.to_le_bytes());
        put(&ram, at + 16, &1u32.to_le_bytes());
    }

    let tracker = Arc::new(CodeTracker::new(RAM as u64));
    let mut bus = Ram {
        regions: [RamRegion {
            start: 0,
            bytes: &ram,
            writable: true,
        }],
        tracker: tracker.clone(),
    };
    let mut cpu = Cpu::new(true);
    cpu.set_code_tracker(tracker);
    let s = &mut cpu.state;
    s.cr0 |= 1; // PE
    for (n, seg) in s.seg.iter_mut().enumerate() {
        let code = n == 1;
        seg.selector = if code { 0x10 } else { 0x18 };
        seg.base = 0;
        seg.limit = u32::MAX;
        seg.type_ = if code { 0xb } else { 0x3 };
        seg.present = true;
        seg.dpl = 0;
        seg.db = true;
        seg.s = true;
        seg.l = false;
        seg.g = true;
        seg.unusable = false;
    }
    s.gpr[6] = BOOT_PARAMS as u64; // ESI
    s.rip = KERNEL as u64;
    s.rflags = 0x2;

    let mut done = 0u64;
    while done < total {
        let batch = (total - done).min(100_000) as u32;
        let step = cpu.run(&mut bus, batch, &mut |_| false);
        done += u64::from(batch);
        match step {
            Step::Executed => {}
            other => {
                println!("stopped: {other:?} after about {done} instructions");
                break;
            }
        }
    }
    let s = &cpu.state;
    println!(
        "guest at rip {:#x} (cs.l {}), {done} instructions",
        s.rip, s.seg[1].l
    );
    Ok(())
}
