//! The keyboard controller never panics, whatever the guest writes and the host sends: random
//! port accesses of every width, key and mouse events, typed text and resets from a seeded
//! xorshift, with the status register and both interrupt lines checked after every step.

use devices::i8042::{BYTE_TIME_NS, HOST_QUEUE_LIMIT, I8042, KEYBOARD_IRQ, MOUSE_IRQ};
use devices::input::{InputSink, Key, KeyEvent, MouseButtons, MouseEvent};
use devices::irq::RecordingSink;
use devices::{Clock, Device, IrqLine, ManualClock, Poll, PortIo, TimerWaker};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
    fn byte(&mut self) -> u8 {
        // Bias towards command ranges the devices decode.
        const INTERESTING: [u8; 24] = [
            0x00, 0x02, 0x20, 0x47, 0x60, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAD, 0xAE, 0xC8, 0xD0,
            0xD1, 0xD2, 0xD3, 0xD4, 0xE8, 0xEB, 0xED, 0xF0, 0xF3, 0xFF,
        ];
        if self.below(3) == 0 {
            INTERESTING[self.below(INTERESTING.len() as u64) as usize]
        } else if self.below(2) == 0 {
            0xE0 | self.below(32) as u8
        } else {
            self.next() as u8
        }
    }
    fn amount(&mut self) -> i32 {
        match self.below(8) {
            0 => i32::MAX,
            1 => i32::MIN,
            2 => self.next() as i32,
            _ => self.below(1200) as i32 - 600,
        }
    }
}

fn check(dev: &mut I8042, sink: &RecordingSink) {
    let mut st = [0u8];
    dev.io_read(0x64, &mut st);
    let st = st[0];
    assert_eq!(
        st & 0xC2,
        0,
        "status {st:#04x}: IBF, timeout and parity stay clear"
    );
    let obf = st & 0x01 != 0;
    let aux = st & 0x20 != 0;
    assert!(obf || !aux, "AUX flag without a byte: {st:#04x}");
    let ctr = dev.command_byte();
    let irq1 = obf && !aux && ctr & 0x01 != 0 && ctr & 0x10 == 0;
    let irq12 = obf && aux && ctr & 0x02 != 0 && ctr & 0x20 == 0;
    assert_eq!(
        sink.level(KEYBOARD_IRQ),
        irq1,
        "IRQ1, status {st:#04x} ctr {ctr:#04x}"
    );
    assert_eq!(
        sink.level(MOUSE_IRQ),
        irq12,
        "IRQ12, status {st:#04x} ctr {ctr:#04x}"
    );
    assert!(dev.pending_host_events() <= 2 * HOST_QUEUE_LIMIT);
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let sink = Arc::new(RecordingSink::default());
    let resets = Arc::new(AtomicUsize::new(0));
    let r = resets.clone();
    let clock = ManualClock::new();
    let mut dev = I8042::new(
        IrqLine::new(sink.clone(), KEYBOARD_IRQ),
        IrqLine::new(sink.clone(), MOUSE_IRQ),
        Arc::new(move |_| {
            r.fetch_add(1, Ordering::Relaxed);
        }),
        Arc::new(clock.clone()),
        TimerWaker::noop(),
    );
    let mut deadline: Option<u64> = None;
    for _ in 0..steps {
        match rng.below(100) {
            0..=29 => {
                let port = if rng.below(2) == 0 { 0x60 } else { 0x64 };
                dev.io_write(port, &[rng.byte()]);
            }
            30..=34 => {
                // Mouse command through 0xD4.
                dev.io_write(0x64, &[0xD4]);
                dev.io_write(0x60, &[rng.byte()]);
            }
            35..=59 => {
                let mut b = [0u8];
                dev.io_read(0x60, &mut b);
            }
            60..=64 => {
                let len = [1, 2, 4][rng.below(3) as usize];
                let port = 0x5E + rng.below(8) as u16;
                let mut buf = [0u8; 4];
                if rng.below(2) == 0 {
                    dev.io_read(port, &mut buf[..len]);
                } else {
                    for b in &mut buf[..len] {
                        *b = rng.byte();
                    }
                    dev.io_write(port, &buf[..len]);
                }
            }
            65..=79 => {
                let key = Key::ALL[rng.below(Key::ALL.len() as u64) as usize];
                dev.key_event(KeyEvent {
                    key,
                    pressed: rng.below(2) == 0,
                });
            }
            80..=91 => {
                let bits = rng.below(8);
                dev.mouse_event(MouseEvent {
                    dx: rng.amount(),
                    dy: rng.amount(),
                    dz: rng.amount(),
                    buttons: MouseButtons {
                        left: bits & 1 != 0,
                        right: bits & 2 != 0,
                        middle: bits & 4 != 0,
                    },
                });
            }
            92..=94 => {
                let text: String = (0..rng.below(40))
                    .map(|_| (0x20 + rng.below(0x5F) as u8) as char)
                    .collect();
                for e in devices::input::type_text(&text).unwrap() {
                    dev.key_event(e);
                }
            }
            95..=96 => dev.release_all_keys(),
            97 => {
                // A burst of host input the guest does not read.
                for _ in 0..rng.below(3000) {
                    dev.key_event(KeyEvent::press(Key::A));
                    dev.mouse_event(MouseEvent::motion(7, -7, MouseButtons::default()));
                }
            }
            98 => {
                let _ = dev.leds();
                let _ = dev.a20_enabled();
                clock.advance(rng.below(3 * BYTE_TIME_NS));
                deadline = Poll::poll(&mut dev, clock.now_ns());
            }
            _ => dev.reset(),
        }
        // The timer loop: poll at the deadline the device gave.
        if let Some(t) = deadline {
            if rng.below(4) == 0 {
                clock.set(t.max(clock.now_ns()));
                deadline = Poll::poll(&mut dev, clock.now_ns());
            }
        }
        check(&mut dev, &sink);
    }
    // Everything queued drains once the guest enables both ports and reads.
    dev.io_write(0x64, &[0x60]);
    dev.io_write(0x60, &[0x03]);
    let mut reads = 0;
    loop {
        let mut st = [0u8];
        dev.io_read(0x64, &mut st);
        if st[0] & 1 != 0 {
            let mut b = [0u8];
            dev.io_read(0x60, &mut b);
            reads += 1;
            assert!(reads < 100_000, "output never drains");
        } else if let Some(t) = Poll::poll(&mut dev, clock.now_ns()) {
            assert!(t > clock.now_ns());
            clock.set(t);
        } else {
            dev.io_read(0x64, &mut st);
            if st[0] & 1 == 0 {
                break;
            }
        }
        check(&mut dev, &sink);
    }
}

#[test]
fn random_i8042_traffic_never_panics() {
    for seed in 1..=12u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, 20_000);
    }
}
