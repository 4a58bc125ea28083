//! Fuzzes the i8042 keyboard controller: each input byte picks an operation (port write, port
//! read, wide access, key event, mouse event, reset) and the following bytes are its operands.
#![no_main]

use devices::i8042::I8042;
use devices::input::{InputSink, Key, KeyEvent, MouseButtons, MouseEvent};
use devices::{Clock, Device, IrqLine, ManualClock, Poll, PortIo, TimerWaker};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let clock = ManualClock::new();
    let mut dev = I8042::new(
        IrqLine::disconnected(),
        IrqLine::disconnected(),
        Arc::new(|_| {}),
        Arc::new(clock.clone()),
        TimerWaker::noop(),
    );
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        match op % 10 {
            0 | 1 => dev.io_write(0x60, &[arg]),
            2 | 3 => dev.io_write(0x64, &[arg]),
            4 => {
                dev.io_write(0x64, &[0xD4]);
                dev.io_write(0x60, &[arg]);
            }
            5 => {
                let mut b = [0u8];
                dev.io_read(if arg & 1 == 0 { 0x60 } else { 0x64 }, &mut b);
            }
            6 => {
                let mut buf = [0u8; 4];
                let len = [1, 2, 4, 3][usize::from(arg & 3)];
                let port = 0x5E + u16::from(arg >> 5);
                if arg & 4 == 0 {
                    dev.io_read(port, &mut buf[..len]);
                } else {
                    dev.io_write(port, &buf[..len]);
                }
            }
            7 => {
                let key = Key::ALL[usize::from(arg) % Key::ALL.len()];
                dev.key_event(KeyEvent {
                    key,
                    pressed: op & 0x80 == 0,
                });
            }
            8 => {
                let dx = i32::from(next().unwrap_or(0) as i8) * i32::from(arg);
                let dy = i32::from(next().unwrap_or(0) as i8) * i32::from(arg);
                let dz = i32::from(next().unwrap_or(0) as i8);
                dev.mouse_event(MouseEvent {
                    dx,
                    dy,
                    dz,
                    buttons: MouseButtons {
                        left: arg & 1 != 0,
                        right: arg & 2 != 0,
                        middle: arg & 4 != 0,
                    },
                });
            }
            _ => match arg % 4 {
                0 => dev.reset(),
                1 => dev.release_all_keys(),
                2 => {
                    let _ = (dev.leds(), dev.a20_enabled());
                }
                _ => {
                    // Time passes and the timer loop polls.
                    clock.advance(u64::from(op >> 4) * 250_000);
                    let _ = Poll::poll(&mut dev, clock.now_ns());
                }
            },
        }
    }
});
