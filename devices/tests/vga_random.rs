//! A guest cannot crash the VMM through the VGA: thousands of random port, legacy-window, BAR
//! and configuration accesses of every size, with Bochs VBE modes switched on and off and
//! frames rendered in between, never panic, and every dirty rectangle lies inside the frame.

use devices::vga::{
    dispi, DisplayMode, StdVga, LFB_BAR, ROM_BAR, VBE_DISPI_DATA_PORT, VBE_DISPI_INDEX_PORT,
    VGA_WINDOW_BASE, VGA_WINDOW_SIZE, VRAM_SIZE,
};
use devices::{Device, Mmio, PciFunction, Poll, PortIo};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn size(&mut self) -> usize {
        [1, 1, 1, 2, 2, 4, 8][self.below(7) as usize]
    }
}

/// Ports worth hitting most: the indexed register pairs and the status/DAC ports.
const HOT_PORTS: [u16; 14] = [
    0x3C0, 0x3C1, 0x3C2, 0x3C4, 0x3C5, 0x3C7, 0x3C8, 0x3C9, 0x3CE, 0x3CF, 0x3D4, 0x3D5, 0x3DA,
    0x3B4,
];

fn check_frame(v: &StdVga) {
    let fb = v.framebuffer();
    let mut f = fb.lock();
    let (w, h) = (f.width(), f.height());
    assert_eq!(f.pixels().len(), w as usize * h as usize * 4);
    for r in f.take_dirty() {
        assert!(
            r.right() <= u64::from(w) && r.bottom() <= u64::from(h) && !r.is_empty(),
            "{r:?} outside {w}x{h}"
        );
        assert_eq!(f.copy_rect(r).len(), r.area() as usize * 4);
    }
}

/// Runs `ops` random accesses; returns how many frames showed blank, text, VGA graphics and
/// VBE graphics.
fn run(seed: u64, ops: usize) -> [u32; 4] {
    let mut seen = [0u32; 4];
    let mut v = StdVga::new(vec![0x55; 40 * 1024]);
    let mut rng = Rng(seed);
    let mut now = 0u64;
    for i in 0..ops {
        let size = rng.size();
        let mut buf = [0u8; 8];
        let data = &mut buf[..size];
        match rng.below(20) {
            0..=6 => {
                let port = if rng.below(3) == 0 {
                    0x3B0 + rng.below(0x30) as u16
                } else {
                    HOT_PORTS[rng.below(HOT_PORTS.len() as u64) as usize]
                };
                let value = rng.next().to_le_bytes();
                data.copy_from_slice(&value[..size]);
                // Index writes mostly pick registers that exist.
                if matches!(port, 0x3C4 | 0x3CE | 0x3D4 | 0x3B4) {
                    data[0] &= if rng.below(4) == 0 { 0xFF } else { 0x1F };
                }
                v.io_write(port, data);
            }
            7..=8 => {
                let port = HOT_PORTS[rng.below(HOT_PORTS.len() as u64) as usize];
                v.io_read(port, data);
            }
            9 => {
                // A DISPI register, mostly with modest values so renders stay quick.
                let index = rng.below(12) as u16;
                let value = match rng.below(8) {
                    0 => rng.next() as u16,
                    1 => [4, 8, 15, 16, 24, 32][rng.below(6) as usize],
                    2 => dispi::ENABLED | (rng.next() as u16 & 0xE2),
                    _ => rng.below(1280) as u16,
                };
                v.io_write(VBE_DISPI_INDEX_PORT, &index.to_le_bytes());
                v.io_write(VBE_DISPI_DATA_PORT, &value.to_le_bytes());
                let mut r = [0u8; 2];
                v.io_read(VBE_DISPI_DATA_PORT, &mut r);
            }
            10..=12 => {
                let address = if rng.below(16) == 0 {
                    rng.next() & 0xF_FFFF
                } else {
                    VGA_WINDOW_BASE + rng.below(VGA_WINDOW_SIZE)
                };
                data.copy_from_slice(&rng.next().to_le_bytes()[..size]);
                v.mmio_write(address, data);
            }
            13 => {
                let address = VGA_WINDOW_BASE + rng.below(VGA_WINDOW_SIZE + 8);
                v.mmio_read(address, data);
            }
            14 => {
                let offset = rng.below(VRAM_SIZE as u64 - 8);
                data.copy_from_slice(&rng.next().to_le_bytes()[..size]);
                v.bar_write(LFB_BAR, offset, data);
                v.bar_write(ROM_BAR, offset & 0xFFFF, data);
            }
            15 => {
                let bar = [LFB_BAR, ROM_BAR, 3][rng.below(3) as usize];
                v.bar_read(bar, rng.below(1 << 24), data);
            }
            16 => {
                let offset = (rng.below(256) as u8) & !(size.min(4) as u8 - 1);
                let len = size.min(4);
                if rng.below(2) == 0 {
                    v.config_write(offset, &rng.next().to_le_bytes()[..len]);
                } else {
                    v.config_read(offset, &mut buf[..len]);
                }
            }
            17 if i % 7 == 0 => {
                now += rng.below(200_000_000);
                let next = Poll::poll(&mut v, now);
                assert!(next > Some(now));
                check_frame(&v);
                seen[match v.mode() {
                    DisplayMode::Blank => 0,
                    DisplayMode::Text { .. } => 1,
                    DisplayMode::Graphics { vbe: false, .. } => 2,
                    DisplayMode::Graphics { vbe: true, .. } => 3,
                }] += 1;
                let _ = v.mode().to_string();
                if let Some(lines) = v.text_screen() {
                    assert!(!lines.is_empty());
                }
            }
            18 if rng.below(500) == 0 => Device::reset(&mut v),
            _ => {}
        }
    }
    v.render(now + 1);
    check_frame(&v);
    seen
}

#[test]
fn random_vga_traffic_never_panics() {
    let mut seen = [0u32; 4];
    for seed in [1, 0x2545_F491_4F6C_DD1D, 0xDEAD_BEEF, 42, 7_777_777] {
        for (total, n) in seen.iter_mut().zip(run(seed, 20_000)) {
            *total += n;
        }
    }
    // The traffic reached every kind of display, not only a blank screen.
    assert!(seen.iter().all(|&n| n > 0), "frames per kind: {seen:?}");
}
