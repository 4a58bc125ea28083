//! Intel 8042 keyboard controller (ports 0x60/0x64) with a PS/2 keyboard on its first port
//! (IRQ1) and a PS/2 IntelliMouse on its auxiliary port (IRQ12).
//!
//! The controller has one output buffer shared by both ports. Bytes come in this priority:
//! the controller's own replies (command byte reads, self tests, 0xD2/0xD3 loop-back writes),
//! the keyboard's then the mouse's command replies, then keyboard scan codes, then mouse
//! packets. A port's device may only deliver while the port is enabled in the command byte
//! (CTR); its bytes wait in the device meanwhile. Writing a byte to a device (port 0x60, or
//! 0xD4 for the mouse) enables that port again, as the controller firmware does. With XLATE
//! set, keyboard bytes pass the set 2 → set 1 translation, an F0 prefix folding into bit 7 of
//! the next byte.
//!
//! Interrupts follow the output buffer: IRQ1 is high while it holds a keyboard-side byte, CTR
//! bit 0 is set and the keyboard port is enabled; IRQ12 likewise for an auxiliary byte with
//! CTR bit 1 and the auxiliary port. Reading port 0x60 lowers the line before the next byte is
//! loaded, so every byte is a fresh edge.
//!
//! Scan codes and mouse packet bytes arrive as on the PS/2 wire: after the guest reads one,
//! the next enters the output buffer [`BYTE_TIME_NS`] later (the device's [`Poll`] deadline).
//! A driver that flushes the controller by reading until it is empty (Linux and SeaBIOS give up
//! on the controller after 16 bytes) therefore never sees a long backlog at once. Command
//! replies are not held back.
//!
//! Host input arrives through [`InputSink`] (usually via an [`crate::input::InputHandle`]) into
//! host queues of up to [`HOST_QUEUE_LIMIT`] events, which feed the keyboard's 16-byte buffer
//! and the mouse as room frees up, so typed or pasted text is not lost to the small device
//! buffers. A keyboard command that clears its buffer (reset, enable, disable, defaults, scan
//! set change) drops the queued key events too. When the host queue is full its newest key
//! event becomes the overflow code (00 in set 2, FF in set 1), as a real keyboard replaces the
//! last byte of its full buffer; queued mouse motion merges instead. Key events are dropped
//! while the keyboard has scanning disabled (0xF5), and mouse motion while data reporting is
//! off in stream mode. The keyboard does not auto-repeat: a GUI sends repeated presses.
//!
//! Scan code set 3 is declined by staying in the current set (the guest reads the set back and
//! sees it unchanged), which Linux handles by keeping set 2.

use crate::input::{
    set1_sequence, set2_sequence, translate_set2, InputSink, Key, KeyEvent, LedState, Modifiers,
    MouseEvent, ScanSequence,
};
use crate::system_control::{ResetKind, ResetRequest};
use crate::{Clock, Device, IrqLine, Poll, PortIo, TimerWaker};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// Port ranges the controller answers: `(first port, count)`.
pub const I8042_PORT_RANGES: [(u16, u16); 2] = [(0x60, 1), (0x64, 1)];
/// ISA interrupt of the keyboard port.
pub const KEYBOARD_IRQ: u32 = 1;
/// ISA interrupt of the auxiliary (mouse) port.
pub const MOUSE_IRQ: u32 = 12;
/// Host events each device's host queue holds before the keyboard reports an overflow (or
/// mouse motion is merged).
pub const HOST_QUEUE_LIMIT: usize = 1024;
/// Bytes the keyboard buffers while the guest does not read (a real keyboard's 16).
pub const KEYBOARD_BUFFER: usize = 16;
/// Bytes the mouse buffers.
pub const MOUSE_BUFFER: usize = 16;
/// Time one byte takes on the PS/2 wire: after the guest reads a scan code or stream packet
/// byte, the next one arrives this much later.
pub const BYTE_TIME_NS: u64 = 1_000_000;

const STS_OBF: u8 = 0x01;
const STS_SYS: u8 = 0x04;
const STS_CMD: u8 = 0x08;
const STS_UNLOCKED: u8 = 0x10;
const STS_AUX_OBF: u8 = 0x20;

const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;
/// Command byte at power-on: both interrupts enabled, both ports enabled, no translation.
const CTR_POWER_ON: u8 = CTR_KBD_INT | CTR_AUX_INT;
/// Command byte after a self test: ports disabled, interrupts off, system flag set.
const CTR_AFTER_SELF_TEST: u8 = CTR_KBD_DISABLE | CTR_AUX_DISABLE | CTR_SYS;

const OUT_RESET: u8 = 0x01;
const OUT_A20: u8 = 0x02;
const OUT_OBF: u8 = 0x10;
const OUT_AUX_OBF: u8 = 0x20;
/// Output port at power-on: reset line inactive, A20 enabled, clock/data lines idle high.
const OUT_POWER_ON: u8 = 0xCF;
/// Input port (0xC0): keyboard not inhibited, no manufacturing jumper.
const INPUT_PORT: u8 = 0xA0;

const ACK: u8 = 0xFA;
const RESEND: u8 = 0xFE;
const BAT_OK: u8 = 0xAA;

/// Where the byte in the output buffer came from, which sets the AUX flag and the IRQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Keyboard,
    Aux,
}

/// Remembers which of 256 byte values were already reported.
#[derive(Debug, Default, Clone)]
struct LogOnce([u64; 4]);

impl LogOnce {
    fn first(&mut self, b: u8) -> bool {
        let (word, bit) = (usize::from(b >> 6), 1u64 << (b & 63));
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }
}

/// A queued host key event, or the overflow mark that replaced the newest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKey {
    Event(KeyEvent),
    Overflow,
}

/// The PS/2 keyboard (MF2, ID AB 83), native scan code set 2.
#[derive(Debug)]
struct Keyboard {
    /// Command replies; they go out before buffered scan codes.
    replies: VecDeque<u8>,
    /// Scan code buffer.
    scan: VecDeque<u8>,
    scanning: bool,
    set: u8,
    leds: u8,
    typematic: u8,
    /// Command waiting for its parameter byte.
    param_for: Option<u8>,
    last_sent: u8,
    /// Keys down, as the keyboard has seen them.
    held: BTreeSet<Key>,
    /// A command cleared the buffer: key events still queued host-side go too.
    drop_host_queue: bool,
    unknown: LogOnce,
}

const DEFAULT_TYPEMATIC: u8 = 0x2B;

impl Keyboard {
    fn new() -> Self {
        let mut k = Self {
            replies: VecDeque::new(),
            scan: VecDeque::new(),
            scanning: true,
            set: 2,
            leds: 0,
            typematic: DEFAULT_TYPEMATIC,
            param_for: None,
            last_sent: 0,
            held: BTreeSet::new(),
            drop_host_queue: false,
            unknown: LogOnce::default(),
        };
        k.power_on();
        k
    }

    fn power_on(&mut self) {
        self.replies.clear();
        self.reset_state();
        // The controller empties its host queue itself at power-on.
        self.drop_host_queue = false;
    }

    /// Power-on defaults, keeping replies not yet sent (the reset command).
    fn reset_state(&mut self) {
        self.clear_buffer();
        self.scanning = true;
        self.set = 2;
        self.leds = 0;
        self.typematic = DEFAULT_TYPEMATIC;
        self.param_for = None;
    }

    fn clear_buffer(&mut self) {
        self.scan.clear();
        self.drop_host_queue = true;
    }

    fn set_defaults(&mut self) {
        self.clear_buffer();
        self.set = 2;
        self.typematic = DEFAULT_TYPEMATIC;
        self.param_for = None;
    }

    fn reply(&mut self, b: u8) {
        if self.replies.len() < KEYBOARD_BUFFER {
            self.replies.push_back(b);
        }
    }

    fn next_reply(&mut self) -> Option<u8> {
        let b = self.replies.pop_front()?;
        self.last_sent = b;
        Some(b)
    }

    fn next_scan(&mut self) -> Option<u8> {
        let b = self.scan.pop_front()?;
        self.last_sent = b;
        Some(b)
    }

    fn modifiers(&self) -> Modifiers {
        let h = |a, b| self.held.contains(&a) || self.held.contains(&b);
        Modifiers {
            shift: h(Key::ShiftLeft, Key::ShiftRight),
            ctrl: h(Key::ControlLeft, Key::ControlRight),
            alt: h(Key::AltLeft, Key::AltRight),
        }
    }

    fn sequence(&self, ev: KeyEvent) -> ScanSequence {
        if self.set == 1 {
            set1_sequence(ev.key, ev.pressed, self.modifiers())
        } else {
            set2_sequence(ev.key, ev.pressed, self.modifiers())
        }
    }

    fn overflow_code(&self) -> u8 {
        if self.set == 1 {
            0xFF
        } else {
            0x00
        }
    }

    /// Appends `bytes` to the scan buffer if all fit.
    fn push_scan(&mut self, bytes: &[u8]) -> bool {
        if self.scan.len() + bytes.len() > KEYBOARD_BUFFER {
            return false;
        }
        self.scan.extend(bytes.iter().copied());
        true
    }

    fn track(&mut self, ev: KeyEvent) {
        if ev.pressed && ev.key.has_break() {
            self.held.insert(ev.key);
        } else if !ev.pressed {
            self.held.remove(&ev.key);
        }
    }

    /// A byte from the controller.
    fn write(&mut self, byte: u8) {
        if let Some(cmd) = self.param_for {
            // A command byte instead of the expected parameter starts the new command.
            if byte < 0xED {
                self.parameter(cmd, byte);
                return;
            }
            self.param_for = None;
        }
        match byte {
            0xED | 0xF0 | 0xF3 | 0xFB..=0xFD => {
                self.param_for = Some(byte);
                self.reply(ACK);
            }
            0xEE => self.reply(0xEE),
            0xF2 => {
                self.reply(ACK);
                self.reply(0xAB);
                self.reply(0x83);
            }
            0xF4 => {
                self.clear_buffer();
                self.scanning = true;
                self.reply(ACK);
            }
            0xF5 => {
                self.set_defaults();
                self.scanning = false;
                self.reply(ACK);
            }
            0xF6 => {
                self.set_defaults();
                self.reply(ACK);
            }
            0xF7..=0xFA => self.reply(ACK),
            0xFE => self.reply(self.last_sent),
            0xFF => {
                self.reset_state();
                self.reply(ACK);
                self.reply(BAT_OK);
            }
            _ => {
                if self.unknown.first(byte) {
                    tracing::warn!("ps/2 keyboard: unknown command {byte:#04x}");
                }
                self.reply(RESEND);
            }
        }
    }

    fn parameter(&mut self, cmd: u8, byte: u8) {
        match cmd {
            0xED => {
                self.param_for = None;
                self.leds = byte & 0x07;
                self.reply(ACK);
            }
            0xF3 => {
                self.param_for = None;
                self.typematic = byte & 0x7F;
                self.reply(ACK);
            }
            0xF0 => {
                self.param_for = None;
                match byte {
                    0 => {
                        self.reply(ACK);
                        self.reply(self.set);
                    }
                    1 | 2 => {
                        self.set = byte;
                        self.clear_buffer();
                        self.reply(ACK);
                    }
                    3 => {
                        tracing::debug!(
                            "ps/2 keyboard: scan code set 3 requested, staying in set {}",
                            self.set
                        );
                        self.reply(ACK);
                    }
                    _ => self.reply(RESEND),
                }
            }
            // Set 3 key type lists: every key code is acknowledged until a command byte.
            _ => self.reply(ACK),
        }
    }
}

/// The PS/2 mouse: a standard 3-button mouse that becomes an IntelliMouse (ID 3, wheel in a
/// fourth packet byte) after the sample rate sequence 200, 100, 80.
#[derive(Debug)]
struct Mouse {
    /// Command replies, sent before stream packets.
    replies: VecDeque<u8>,
    /// Stream-mode packets.
    stream: VecDeque<u8>,
    param_for: Option<u8>,
    wrap: bool,
    remote: bool,
    reporting: bool,
    scale21: bool,
    resolution: u8,
    rate: u8,
    id: u8,
    /// The last three accepted sample rates.
    rates: [u8; 3],
    /// Packet button bits (left 0, right 1, middle 2).
    buttons: u8,
    /// Motion not yet reported, in PS/2 orientation (y up, z towards the user).
    dx: i32,
    dy: i32,
    dz: i32,
    ovf_x: bool,
    ovf_y: bool,
    /// A button change not yet reported.
    dirty: bool,
    last_packet: [u8; 4],
    last_packet_len: usize,
    last_sent: u8,
    unknown: LogOnce,
}

const SAMPLE_RATES: [u8; 7] = [10, 20, 40, 60, 80, 100, 200];
/// Unreported stream-mode motion kept per axis; beyond it the axis reports overflow.
const STREAM_BACKLOG: i32 = 1024;

/// 2:1 scaling of one axis's report.
fn scale21(v: i32) -> i32 {
    let m = match v.unsigned_abs() {
        0 => 0,
        1 | 2 => 1,
        3 => 3,
        4 => 6,
        5 => 9,
        n => 2 * n as i32,
    };
    if v < 0 {
        -m
    } else {
        m
    }
}

/// Takes one report's worth of `acc` within `lo..=hi`. Splitting leaves the rest for later
/// reports; otherwise the rest is dropped and flagged as overflow.
fn take_axis(acc: &mut i32, lo: i32, hi: i32, split: bool) -> (i32, bool) {
    let v = (*acc).clamp(lo, hi);
    if split {
        *acc -= v;
        (v, false)
    } else {
        let over = v != *acc;
        *acc = 0;
        (v, over)
    }
}

impl Mouse {
    fn new() -> Self {
        Self {
            replies: VecDeque::new(),
            stream: VecDeque::new(),
            param_for: None,
            wrap: false,
            remote: false,
            reporting: false,
            scale21: false,
            resolution: 2,
            rate: 100,
            id: 0,
            rates: [0; 3],
            buttons: 0,
            dx: 0,
            dy: 0,
            dz: 0,
            ovf_x: false,
            ovf_y: false,
            dirty: false,
            last_packet: [0; 4],
            last_packet_len: 0,
            last_sent: 0,
            unknown: LogOnce::default(),
        }
    }

    fn power_on(&mut self) {
        let buttons = self.buttons;
        let unknown = std::mem::take(&mut self.unknown);
        *self = Self::new();
        self.buttons = buttons;
        self.unknown = unknown;
    }

    fn clear_motion(&mut self) {
        self.dx = 0;
        self.dy = 0;
        self.dz = 0;
        self.ovf_x = false;
        self.ovf_y = false;
        self.dirty = false;
    }

    fn set_defaults(&mut self) {
        self.rate = 100;
        self.resolution = 2;
        self.scale21 = false;
        self.remote = false;
        self.reporting = false;
        self.clear_motion();
    }

    fn reply(&mut self, b: u8) {
        if self.replies.len() < MOUSE_BUFFER {
            self.replies.push_back(b);
        }
    }

    fn next_reply(&mut self) -> Option<u8> {
        let b = self.replies.pop_front()?;
        self.last_sent = b;
        Some(b)
    }

    fn next_stream(&mut self) -> Option<u8> {
        let b = self.stream.pop_front()?;
        self.last_sent = b;
        Some(b)
    }

    fn streaming(&self) -> bool {
        self.reporting && !self.remote && !self.wrap
    }

    fn packet_len(&self) -> usize {
        if self.id == 3 {
            4
        } else {
            3
        }
    }

    fn owes_packet(&self) -> bool {
        self.dirty || self.dx != 0 || self.dy != 0 || self.dz != 0
    }

    fn add_axis(acc: &mut i32, delta: i32, limit: i32, ovf: &mut bool) {
        let v = acc.saturating_add(delta);
        *acc = v.clamp(-limit, limit);
        if *acc != v {
            *ovf = true;
        }
    }

    /// Applies one host event to the counters and buttons.
    fn apply(&mut self, ev: &MouseEvent) {
        let bits = ev.buttons.packet_bits();
        if !self.wrap && (self.remote || self.reporting) {
            let limit = if self.remote {
                i32::MAX
            } else {
                STREAM_BACKLOG
            };
            Self::add_axis(&mut self.dx, ev.dx, limit, &mut self.ovf_x);
            Self::add_axis(&mut self.dy, ev.dy.saturating_neg(), limit, &mut self.ovf_y);
            if self.id == 3 {
                self.dz = self
                    .dz
                    .saturating_sub(ev.dz)
                    .clamp(-STREAM_BACKLOG, STREAM_BACKLOG);
            }
            if bits != self.buttons && !self.remote {
                self.dirty = true;
            }
        }
        self.buttons = bits;
    }

    /// Builds a movement data packet from the counters.
    fn packet(&mut self, split: bool, scaled: bool) -> ([u8; 4], usize) {
        let (lo, hi) = if scaled { (-128, 127) } else { (-256, 255) };
        let (mut x, ox) = take_axis(&mut self.dx, lo, hi, split);
        let (mut y, oy) = take_axis(&mut self.dy, lo, hi, split);
        let ox = ox || std::mem::take(&mut self.ovf_x);
        let oy = oy || std::mem::take(&mut self.ovf_y);
        if scaled {
            x = scale21(x);
            y = scale21(y);
        }
        let mut p = [0u8; 4];
        p[0] = 0x08
            | self.buttons
            | u8::from(x < 0) << 4
            | u8::from(y < 0) << 5
            | u8::from(ox) << 6
            | u8::from(oy) << 7;
        p[1] = x as u8;
        p[2] = y as u8;
        let len = self.packet_len();
        if len == 4 {
            let (z, _) = take_axis(&mut self.dz, -8, 7, split);
            p[3] = z as u8;
        } else {
            self.dz = 0;
        }
        self.dirty = false;
        self.last_packet = p;
        self.last_packet_len = len;
        (p, len)
    }

    /// Queues a stream-mode packet if it fits; false when the buffer is full.
    fn emit_stream_packet(&mut self) -> bool {
        if self.stream.len() + self.packet_len() > MOUSE_BUFFER {
            return false;
        }
        let (p, len) = self.packet(true, self.scale21);
        self.stream.extend(p[..len].iter().copied());
        true
    }

    fn status_bytes(&self) -> [u8; 3] {
        let b = self.buttons;
        let buttons = (b & 1) << 2 | (b >> 2 & 1) << 1 | (b >> 1 & 1);
        [
            u8::from(self.remote) << 6
                | u8::from(self.reporting) << 5
                | u8::from(self.scale21) << 4
                | buttons,
            self.resolution,
            self.rate,
        ]
    }

    /// A byte from the controller (0xD4).
    fn write(&mut self, byte: u8) {
        if self.wrap {
            match byte {
                0xEC => {
                    self.wrap = false;
                    self.clear_motion();
                    self.reply(ACK);
                }
                0xFF => self.reset(),
                _ => self.reply(byte),
            }
            return;
        }
        if let Some(cmd) = self.param_for.take() {
            self.parameter(cmd, byte);
            return;
        }
        // A command stops the stream: packet bytes not yet sent are dropped.
        self.stream.clear();
        match byte {
            0xE6 => {
                self.scale21 = false;
                self.reply(ACK);
            }
            0xE7 => {
                self.scale21 = true;
                self.reply(ACK);
            }
            0xE8 | 0xF3 => {
                self.param_for = Some(byte);
                self.reply(ACK);
            }
            0xE9 => {
                self.reply(ACK);
                for b in self.status_bytes() {
                    self.reply(b);
                }
            }
            0xEA => {
                self.remote = false;
                self.clear_motion();
                self.reply(ACK);
            }
            0xEB => {
                self.reply(ACK);
                let (p, len) = self.packet(false, false);
                for &b in &p[..len] {
                    self.reply(b);
                }
            }
            0xEC => self.reply(ACK),
            0xEE => {
                self.wrap = true;
                self.clear_motion();
                self.reply(ACK);
            }
            0xF0 => {
                self.remote = true;
                self.clear_motion();
                self.reply(ACK);
            }
            0xF2 => {
                self.reply(ACK);
                self.reply(self.id);
            }
            0xF4 => {
                self.reporting = true;
                self.clear_motion();
                self.reply(ACK);
            }
            0xF5 => {
                self.reporting = false;
                self.clear_motion();
                self.reply(ACK);
            }
            0xF6 => {
                self.set_defaults();
                self.reply(ACK);
            }
            0xFE => {
                if self.last_packet_len > 0 {
                    let (p, len) = (self.last_packet, self.last_packet_len);
                    for &b in &p[..len] {
                        self.reply(b);
                    }
                } else {
                    self.reply(self.last_sent);
                }
            }
            0xFF => self.reset(),
            _ => {
                if self.unknown.first(byte) {
                    tracing::warn!("ps/2 mouse: unknown command {byte:#04x}");
                }
                self.reply(RESEND);
            }
        }
    }

    fn parameter(&mut self, cmd: u8, byte: u8) {
        match cmd {
            0xF3 if SAMPLE_RATES.contains(&byte) => {
                self.rate = byte;
                self.rates = [self.rates[1], self.rates[2], byte];
                if self.rates == [200, 100, 80] {
                    self.id = 3;
                }
                self.clear_motion();
                self.reply(ACK);
            }
            0xE8 if byte <= 3 => {
                self.resolution = byte;
                self.clear_motion();
                self.reply(ACK);
            }
            _ => self.reply(RESEND),
        }
    }

    fn reset(&mut self) {
        let replies = std::mem::take(&mut self.replies);
        self.power_on();
        self.replies = replies;
        self.reply(ACK);
        self.reply(BAT_OK);
        self.reply(0x00);
    }
}

/// The byte in the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OutByte {
    value: u8,
    side: Side,
    /// A scan code or stream packet byte (paced at [`BYTE_TIME_NS`]), not a reply.
    paced: bool,
}

/// The 8042 controller with its keyboard and mouse.
pub struct I8042 {
    /// Controller RAM; byte 0 is the command byte (CTR).
    ram: [u8; 32],
    sys: bool,
    last_write_command: bool,
    output: Option<OutByte>,
    last_output: u8,
    replies: VecDeque<(u8, Side)>,
    /// Controller command waiting for its data byte.
    awaiting: Option<u8>,
    output_port: u8,
    xlate_break: bool,
    irq_kbd: IrqLine,
    irq_aux: IrqLine,
    kbd_line: bool,
    aux_line: bool,
    reset_request: ResetRequest,
    keyboard: Keyboard,
    mouse: Mouse,
    host_keys: VecDeque<HostKey>,
    host_mouse: VecDeque<MouseEvent>,
    clock: Arc<dyn Clock>,
    waker: TimerWaker,
    /// No paced byte enters the output buffer before this time.
    hold_until: u64,
    /// The timer loop knows (or was woken to learn) the current deadline.
    wake_requested: bool,
    unknown: LogOnce,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042")
            .field("ctr", &self.ram[0])
            .field("output", &self.output)
            .field("output_port", &self.output_port)
            .field("keyboard", &self.keyboard)
            .field("mouse", &self.mouse)
            .finish()
    }
}

impl I8042 {
    /// A controller in its power-on state: keyboard interrupts on `irq_kbd` (ISA 1), mouse
    /// interrupts on `irq_aux` (ISA 12), and the reset line (0xFE, or output port bit 0
    /// written 0) to `reset` as [`ResetKind::Soft`] (the processor's INIT). `clock` and
    /// `waker` pace scan codes and mouse packets at one byte per [`BYTE_TIME_NS`] (see
    /// [`Poll`]).
    pub fn new(
        irq_kbd: IrqLine,
        irq_aux: IrqLine,
        reset: ResetRequest,
        clock: Arc<dyn Clock>,
        waker: TimerWaker,
    ) -> Self {
        let mut dev = Self {
            ram: [0; 32],
            sys: false,
            last_write_command: true,
            output: None,
            last_output: 0,
            replies: VecDeque::new(),
            awaiting: None,
            output_port: OUT_POWER_ON,
            xlate_break: false,
            irq_kbd,
            irq_aux,
            kbd_line: false,
            aux_line: false,
            reset_request: reset,
            keyboard: Keyboard::new(),
            mouse: Mouse::new(),
            host_keys: VecDeque::new(),
            host_mouse: VecDeque::new(),
            clock,
            waker,
            hold_until: 0,
            wake_requested: false,
            unknown: LogOnce::default(),
        };
        dev.power_on();
        dev
    }

    fn power_on(&mut self) {
        self.ram = [0; 32];
        self.ram[0] = CTR_POWER_ON;
        self.sys = false;
        self.last_write_command = true;
        self.output = None;
        self.last_output = 0;
        self.replies.clear();
        self.awaiting = None;
        self.output_port = OUT_POWER_ON;
        self.xlate_break = false;
        self.keyboard.power_on();
        self.keyboard.held.clear();
        self.mouse.power_on();
        self.host_keys.clear();
        self.host_mouse.clear();
        self.hold_until = 0;
        self.update_irqs();
    }

    /// Whether the A20 gate (output port bit 1) is enabled. The machine reads it; the
    /// controller itself does not mask addresses.
    pub fn a20_enabled(&self) -> bool {
        self.output_port & OUT_A20 != 0
    }

    /// The command byte (CTR).
    pub fn command_byte(&self) -> u8 {
        self.ram[0]
    }

    /// The keyboard's indicator lights as the guest last set them.
    pub fn leds(&self) -> LedState {
        LedState::from_bits(self.keyboard.leds)
    }

    /// Host events still queued for the keyboard and the mouse.
    pub fn pending_host_events(&self) -> usize {
        self.host_keys.len() + self.host_mouse.len()
    }

    fn ctr(&self) -> u8 {
        self.ram[0]
    }

    fn status(&self) -> u8 {
        let mut s = STS_UNLOCKED;
        if self.sys {
            s |= STS_SYS;
        }
        if self.last_write_command {
            s |= STS_CMD;
        }
        match self.output.map(|o| o.side) {
            Some(Side::Keyboard) => s |= STS_OBF,
            Some(Side::Aux) => s |= STS_OBF | STS_AUX_OBF,
            None => {}
        }
        s
    }

    fn output_port_value(&self) -> u8 {
        let mut v = self.output_port & !(OUT_OBF | OUT_AUX_OBF);
        match self.output.map(|o| o.side) {
            Some(Side::Keyboard) => v |= OUT_OBF,
            Some(Side::Aux) => v |= OUT_OBF | OUT_AUX_OBF,
            None => {}
        }
        v
    }

    fn controller_reply(&mut self, b: u8, side: Side) {
        if self.replies.len() < 16 {
            self.replies.push_back((b, side));
        }
    }

    fn set_ctr(&mut self, v: u8) {
        self.ram[0] = v;
        self.sys = v & CTR_SYS != 0;
    }

    fn write_output_port(&mut self, v: u8) {
        if v & OUT_RESET == 0 {
            tracing::debug!("i8042: reset through the output port");
            (self.reset_request)(ResetKind::Soft);
        }
        // The reset line is a pulse for the machine: it reads back inactive.
        self.output_port = (v | OUT_RESET) & !(OUT_OBF | OUT_AUX_OBF);
    }

    fn set_a20(&mut self, on: bool) {
        if on {
            self.output_port |= OUT_A20;
        } else {
            self.output_port &= !OUT_A20;
        }
    }

    fn self_test(&mut self) {
        self.set_ctr(CTR_AFTER_SELF_TEST);
        self.replies.clear();
        self.xlate_break = false;
        self.controller_reply(0x55, Side::Keyboard);
    }

    fn write_command(&mut self, cmd: u8) {
        self.last_write_command = true;
        self.awaiting = None;
        match cmd {
            0x20..=0x3F => self.controller_reply(self.ram[usize::from(cmd - 0x20)], Side::Keyboard),
            0x60..=0x7F | 0xD1..=0xD4 => self.awaiting = Some(cmd),
            0xA4 => self.controller_reply(0xF1, Side::Keyboard),
            0xA7 => self.ram[0] |= CTR_AUX_DISABLE,
            0xA8 => self.ram[0] &= !CTR_AUX_DISABLE,
            0xA9 | 0xAB => self.controller_reply(0x00, Side::Keyboard),
            0xAA => self.self_test(),
            0xAD => self.ram[0] |= CTR_KBD_DISABLE,
            0xAE => self.ram[0] &= !CTR_KBD_DISABLE,
            0xC0 => self.controller_reply(INPUT_PORT, Side::Keyboard),
            0xD0 => self.controller_reply(self.output_port_value(), Side::Keyboard),
            0xDD => self.set_a20(false),
            0xDF => self.set_a20(true),
            0xE0 => self.controller_reply(0x00, Side::Keyboard),
            0xF0..=0xFF => {
                // Pulse the output port lines whose bit is 0 in the low nibble; bit 0 is reset.
                if cmd & 1 == 0 {
                    tracing::debug!("i8042: reset pulse {cmd:#04x}");
                    (self.reset_request)(ResetKind::Soft);
                }
            }
            _ => {
                if self.unknown.first(cmd) {
                    tracing::warn!("i8042: unknown controller command {cmd:#04x}");
                }
            }
        }
        self.service();
    }

    fn write_data(&mut self, v: u8) {
        self.last_write_command = false;
        match self.awaiting.take() {
            Some(0x60) => self.set_ctr(v),
            Some(c @ 0x61..=0x7F) => self.ram[usize::from(c - 0x60)] = v,
            Some(0xD1) => self.write_output_port(v),
            Some(0xD2) => self.controller_reply(v, Side::Keyboard),
            Some(0xD3) => self.controller_reply(v, Side::Aux),
            Some(0xD4) => {
                self.ram[0] &= !CTR_AUX_DISABLE;
                self.mouse.write(v);
            }
            _ => {
                self.ram[0] &= !CTR_KBD_DISABLE;
                self.keyboard.write(v);
                if std::mem::take(&mut self.keyboard.drop_host_queue) {
                    self.drop_host_keys();
                }
            }
        }
        self.service();
    }

    /// Discards queued host key events, as a keyboard clearing its buffer loses them; the
    /// keys' up/down state still follows them.
    fn drop_host_keys(&mut self) {
        for k in std::mem::take(&mut self.host_keys) {
            if let HostKey::Event(ev) = k {
                self.keyboard.track(ev);
            }
        }
    }

    fn read_data(&mut self) -> u8 {
        match self.output.take() {
            Some(o) => {
                self.last_output = o.value;
                if o.paced {
                    self.hold_until = self.clock.now_ns().saturating_add(BYTE_TIME_NS);
                }
                // Lower the line first, so the next byte is a new edge.
                self.update_irqs();
                self.service();
                o.value
            }
            None => self.last_output,
        }
    }

    /// Set 2 → set 1 translation of a keyboard byte when XLATE is on; `None` when the byte
    /// produces nothing (an F0 prefix, or a break of a code that has no set 1 break).
    fn translate(&mut self, b: u8) -> Option<u8> {
        if self.ctr() & CTR_XLATE == 0 {
            return Some(b);
        }
        if b == 0xF0 {
            self.xlate_break = true;
            return None;
        }
        let t = translate_set2(b);
        if std::mem::take(&mut self.xlate_break) {
            (t & 0x80 == 0).then_some(t | 0x80)
        } else {
            Some(t)
        }
    }

    fn put(&mut self, value: u8, side: Side, paced: bool) {
        self.output = Some(OutByte { value, side, paced });
    }

    /// Loads the output buffer: controller replies, then device replies, then (once the
    /// previous paced byte has had its wire time) scan codes and mouse packets.
    fn fill_output(&mut self, now: u64) {
        if self.output.is_some() {
            return;
        }
        if let Some((v, side)) = self.replies.pop_front() {
            self.put(v, side, false);
            return;
        }
        let kbd = self.ctr() & CTR_KBD_DISABLE == 0;
        let aux = self.ctr() & CTR_AUX_DISABLE == 0;
        if kbd {
            while let Some(b) = self.keyboard.next_reply() {
                if let Some(t) = self.translate(b) {
                    self.put(t, Side::Keyboard, false);
                    return;
                }
            }
        }
        if aux {
            if let Some(b) = self.mouse.next_reply() {
                self.put(b, Side::Aux, false);
                return;
            }
        }
        if now < self.hold_until {
            return;
        }
        if kbd {
            while let Some(b) = self.keyboard.next_scan() {
                if let Some(t) = self.translate(b) {
                    self.put(t, Side::Keyboard, true);
                    return;
                }
            }
        }
        if aux {
            if let Some(b) = self.mouse.next_stream() {
                self.put(b, Side::Aux, true);
            }
        }
    }

    /// Paced bytes wait for their wire time in an empty output buffer.
    fn paced_waiting(&self) -> bool {
        self.output.is_none()
            && ((self.ctr() & CTR_KBD_DISABLE == 0 && !self.keyboard.scan.is_empty())
                || (self.ctr() & CTR_AUX_DISABLE == 0 && !self.mouse.stream.is_empty()))
    }

    fn update_irqs(&mut self) {
        let ctr = self.ctr();
        let side = self.output.map(|o| o.side);
        let kbd =
            side == Some(Side::Keyboard) && ctr & CTR_KBD_INT != 0 && ctr & CTR_KBD_DISABLE == 0;
        let aux = side == Some(Side::Aux) && ctr & CTR_AUX_INT != 0 && ctr & CTR_AUX_DISABLE == 0;
        if kbd != self.kbd_line {
            self.kbd_line = kbd;
            self.irq_kbd.set_level(kbd);
        }
        if aux != self.aux_line {
            self.aux_line = aux;
            self.irq_aux.set_level(aux);
        }
    }

    fn pump_keyboard(&mut self) {
        while let Some(&front) = self.host_keys.front() {
            match front {
                HostKey::Overflow => {
                    if self.keyboard.scanning {
                        let code = self.keyboard.overflow_code();
                        if !self.keyboard.push_scan(&[code]) {
                            break;
                        }
                    }
                }
                HostKey::Event(ev) => {
                    if self.keyboard.scanning {
                        let seq = self.keyboard.sequence(ev);
                        if !self.keyboard.push_scan(seq.as_slice()) {
                            break;
                        }
                    }
                    self.keyboard.track(ev);
                }
            }
            self.host_keys.pop_front();
        }
    }

    fn pump_mouse(&mut self) {
        loop {
            if self.mouse.streaming() && self.mouse.owes_packet() {
                // Motion that follows without a button change joins this packet.
                while let Some(ev) = self.host_mouse.front() {
                    if ev.buttons.packet_bits() != self.mouse.buttons {
                        break;
                    }
                    let ev = *ev;
                    self.host_mouse.pop_front();
                    self.mouse.apply(&ev);
                }
                if !self.mouse.emit_stream_packet() {
                    break;
                }
                continue;
            }
            let Some(ev) = self.host_mouse.pop_front() else {
                break;
            };
            self.mouse.apply(&ev);
        }
    }

    /// Moves host events into the devices, loads the output buffer and updates the lines;
    /// wakes the timer loop when a paced byte has to wait for its time.
    fn service(&mut self) {
        let now = self.clock.now_ns();
        self.service_at(now);
        if self.paced_waiting() && !self.wake_requested {
            self.wake_requested = true;
            self.waker.wake();
        }
    }

    fn service_at(&mut self, now: u64) {
        self.pump_keyboard();
        self.pump_mouse();
        self.fill_output(now);
        self.update_irqs();
    }

    fn read_port(&mut self, port: u16) -> u8 {
        match port {
            0x60 => self.read_data(),
            0x64 => self.status(),
            _ => 0xFF,
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        match port {
            0x60 => self.write_data(value),
            0x64 => self.write_command(value),
            _ => tracing::debug!(port, value, "i8042: write to unowned port"),
        }
    }
}

impl InputSink for I8042 {
    fn key_event(&mut self, event: KeyEvent) {
        if self.host_keys.len() >= HOST_QUEUE_LIMIT {
            if let Some(last) = self.host_keys.back_mut() {
                if *last != HostKey::Overflow {
                    tracing::debug!("i8042: host key queue full, keyboard overflow");
                }
                *last = HostKey::Overflow;
            }
        } else {
            self.host_keys.push_back(HostKey::Event(event));
        }
        self.service();
    }

    fn mouse_event(&mut self, event: MouseEvent) {
        if self.host_mouse.len() >= HOST_QUEUE_LIMIT {
            if let Some(last) = self.host_mouse.back_mut() {
                last.dx = last.dx.saturating_add(event.dx);
                last.dy = last.dy.saturating_add(event.dy);
                last.dz = last.dz.saturating_add(event.dz);
                last.buttons = event.buttons;
            }
        } else {
            self.host_mouse.push_back(event);
        }
        self.service();
    }

    fn release_all_keys(&mut self) {
        let mut down = self.keyboard.held.clone();
        for k in &self.host_keys {
            if let HostKey::Event(ev) = k {
                if ev.pressed && ev.key.has_break() {
                    down.insert(ev.key);
                } else if !ev.pressed {
                    down.remove(&ev.key);
                }
            }
        }
        for key in down {
            self.key_event(KeyEvent::release(key));
        }
    }

    fn leds(&self) -> LedState {
        I8042::leds(self)
    }
}

impl Poll for I8042 {
    /// Delivers the next scan code or packet byte once its wire time has passed.
    fn poll(&mut self, now_ns: u64) -> Option<u64> {
        self.service_at(now_ns);
        let waiting = self.paced_waiting();
        // The returned deadline is known to the timer loop; without one, the next wait wakes it.
        self.wake_requested = waiting;
        waiting.then_some(self.hold_until.max(now_ns))
    }
}

impl Device for I8042 {
    fn name(&self) -> &str {
        "i8042"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn poll(&mut self) -> Option<&mut dyn Poll> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn crate::saved_state::SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.power_on();
    }
}

impl PortIo for I8042 {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        crate::read_bytewise(port, data, |p| self.read_port(p));
    }
    fn io_write(&mut self, port: u16, data: &[u8]) {
        crate::write_bytewise(port, data, |p, v| self.write_port(p, v));
    }
}

/// Saved state of the controller, its keyboard and its mouse (see [`crate::saved_state`]).
///
/// Everything the guest can observe is kept: controller RAM and command byte, the output
/// buffer and every queued byte (controller, keyboard and mouse replies, scan codes, stream
/// packets), both devices' modes and parameters, the host events not yet delivered, and the
/// wire-time hold on the next paced byte as an offset from the clock. Host plumbing (the IRQ
/// lines, the reset request, the clock and the waker) and the log-once flags are not saved.
mod save {
    use super::*;
    use crate::input::MouseButtons;
    use crate::saved_state::{decode, encode, ensure, RestoreError, SaveRestore, SavedState};
    use serde::{Deserialize, Serialize};

    /// Version of [`I8042StateV1`].
    pub(super) const VERSION: u32 = 1;
    /// The device name saved states carry.
    const DEVICE: &str = "i8042";

    /// Where an output byte came from.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub(super) enum SideV1 {
        /// The keyboard port (IRQ1).
        Keyboard,
        /// The auxiliary port (IRQ12).
        Aux,
    }

    impl From<Side> for SideV1 {
        fn from(s: Side) -> Self {
            match s {
                Side::Keyboard => Self::Keyboard,
                Side::Aux => Self::Aux,
            }
        }
    }

    impl From<SideV1> for Side {
        fn from(s: SideV1) -> Self {
            match s {
                SideV1::Keyboard => Self::Keyboard,
                SideV1::Aux => Self::Aux,
            }
        }
    }

    /// The byte in the output buffer.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct OutByteV1 {
        pub(super) value: u8,
        pub(super) side: SideV1,
        pub(super) paced: bool,
    }

    /// The keyboard.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct KeyboardStateV1 {
        pub(super) replies: Vec<u8>,
        pub(super) scan: Vec<u8>,
        pub(super) scanning: bool,
        pub(super) set: u8,
        pub(super) leds: u8,
        pub(super) typematic: u8,
        pub(super) param_for: Option<u8>,
        pub(super) last_sent: u8,
        /// Keys held, as `Key` discriminants in ascending order.
        pub(super) held: Vec<u8>,
        pub(super) drop_host_queue: bool,
    }

    /// The mouse.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct MouseStateV1 {
        pub(super) replies: Vec<u8>,
        pub(super) stream: Vec<u8>,
        pub(super) param_for: Option<u8>,
        pub(super) wrap: bool,
        pub(super) remote: bool,
        pub(super) reporting: bool,
        pub(super) scale21: bool,
        pub(super) resolution: u8,
        pub(super) rate: u8,
        pub(super) id: u8,
        pub(super) rates: [u8; 3],
        pub(super) buttons: u8,
        pub(super) dx: i32,
        pub(super) dy: i32,
        pub(super) dz: i32,
        pub(super) ovf_x: bool,
        pub(super) ovf_y: bool,
        pub(super) dirty: bool,
        pub(super) last_packet: [u8; 4],
        pub(super) last_packet_len: u8,
        pub(super) last_sent: u8,
    }

    /// A queued host key event.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) enum HostKeyV1 {
        /// A key (its `Key` discriminant) going down or up.
        Event { key: u8, pressed: bool },
        /// The overflow mark.
        Overflow,
    }

    /// A queued host mouse event.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct MouseEventV1 {
        pub(super) dx: i32,
        pub(super) dy: i32,
        pub(super) dz: i32,
        /// Packet button bits (left 0, right 1, middle 2).
        pub(super) buttons: u8,
    }

    /// The whole controller.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct I8042StateV1 {
        pub(super) ram: [u8; 32],
        pub(super) sys: bool,
        pub(super) last_write_command: bool,
        pub(super) output: Option<OutByteV1>,
        pub(super) last_output: u8,
        pub(super) replies: Vec<(u8, SideV1)>,
        pub(super) awaiting: Option<u8>,
        pub(super) output_port: u8,
        pub(super) xlate_break: bool,
        pub(super) keyboard: KeyboardStateV1,
        pub(super) mouse: MouseStateV1,
        pub(super) host_keys: Vec<HostKeyV1>,
        pub(super) host_mouse: Vec<MouseEventV1>,
        /// Nanoseconds from the moment of saving until a paced byte may enter the output
        /// buffer (0 when none is held back).
        pub(super) hold_ns: u64,
    }

    fn key_from_code(code: u8) -> Option<Key> {
        Key::ALL.iter().copied().find(|&k| k as u8 == code)
    }

    fn buttons_from_bits(bits: u8) -> MouseButtons {
        MouseButtons {
            left: bits & 1 != 0,
            right: bits & 2 != 0,
            middle: bits & 4 != 0,
        }
    }

    impl I8042StateV1 {
        fn from_device(d: &I8042, now: u64) -> Self {
            let k = &d.keyboard;
            let m = &d.mouse;
            Self {
                ram: d.ram,
                sys: d.sys,
                last_write_command: d.last_write_command,
                output: d.output.map(|o| OutByteV1 {
                    value: o.value,
                    side: o.side.into(),
                    paced: o.paced,
                }),
                last_output: d.last_output,
                replies: d.replies.iter().map(|&(b, s)| (b, s.into())).collect(),
                awaiting: d.awaiting,
                output_port: d.output_port,
                xlate_break: d.xlate_break,
                keyboard: KeyboardStateV1 {
                    replies: k.replies.iter().copied().collect(),
                    scan: k.scan.iter().copied().collect(),
                    scanning: k.scanning,
                    set: k.set,
                    leds: k.leds,
                    typematic: k.typematic,
                    param_for: k.param_for,
                    last_sent: k.last_sent,
                    held: k.held.iter().map(|&key| key as u8).collect(),
                    drop_host_queue: k.drop_host_queue,
                },
                mouse: MouseStateV1 {
                    replies: m.replies.iter().copied().collect(),
                    stream: m.stream.iter().copied().collect(),
                    param_for: m.param_for,
                    wrap: m.wrap,
                    remote: m.remote,
                    reporting: m.reporting,
                    scale21: m.scale21,
                    resolution: m.resolution,
                    rate: m.rate,
                    id: m.id,
                    rates: m.rates,
                    buttons: m.buttons,
                    dx: m.dx,
                    dy: m.dy,
                    dz: m.dz,
                    ovf_x: m.ovf_x,
                    ovf_y: m.ovf_y,
                    dirty: m.dirty,
                    last_packet: m.last_packet,
                    last_packet_len: m.last_packet_len as u8,
                    last_sent: m.last_sent,
                },
                host_keys: d
                    .host_keys
                    .iter()
                    .map(|k| match *k {
                        HostKey::Event(ev) => HostKeyV1::Event {
                            key: ev.key as u8,
                            pressed: ev.pressed,
                        },
                        HostKey::Overflow => HostKeyV1::Overflow,
                    })
                    .collect(),
                host_mouse: d
                    .host_mouse
                    .iter()
                    .map(|e| MouseEventV1 {
                        dx: e.dx,
                        dy: e.dy,
                        dz: e.dz,
                        buttons: e.buttons.packet_bits(),
                    })
                    .collect(),
                hold_ns: d.hold_until.saturating_sub(now),
            }
        }
    }

    /// The restored runtime pieces, all checked.
    pub(super) struct Restored {
        pub(super) keyboard: Keyboard,
        pub(super) mouse: Mouse,
        pub(super) replies: VecDeque<(u8, Side)>,
        pub(super) host_keys: VecDeque<HostKey>,
        pub(super) host_mouse: VecDeque<MouseEvent>,
        pub(super) output: Option<OutByte>,
    }

    fn check_keyboard(s: &KeyboardStateV1) -> Result<Keyboard, RestoreError> {
        let c = |ok, reason: &str| ensure(ok, DEVICE, format!("keyboard: {reason}"));
        c(
            s.replies.len() <= KEYBOARD_BUFFER,
            "too many queued replies",
        )?;
        c(
            s.scan.len() <= KEYBOARD_BUFFER,
            "too many buffered scan codes",
        )?;
        c(matches!(s.set, 1 | 2), "scan code set is not 1 or 2")?;
        c(s.leds <= 7, "LED bits out of range")?;
        c(s.typematic <= 0x7F, "typematic byte out of range")?;
        c(
            s.param_for
                .is_none_or(|p| matches!(p, 0xED | 0xF0 | 0xF3 | 0xFB..=0xFD)),
            "waits for the parameter of a command that takes none",
        )?;
        c(
            s.held.windows(2).all(|w| w[0] < w[1]),
            "held keys not in ascending order",
        )?;
        let mut held = BTreeSet::new();
        for &code in &s.held {
            let key = key_from_code(code).filter(|k| k.has_break());
            c(key.is_some(), &format!("held key {code} does not exist"))?;
            held.extend(key);
        }
        Ok(Keyboard {
            replies: s.replies.iter().copied().collect(),
            scan: s.scan.iter().copied().collect(),
            scanning: s.scanning,
            set: s.set,
            leds: s.leds,
            typematic: s.typematic,
            param_for: s.param_for,
            last_sent: s.last_sent,
            held,
            drop_host_queue: s.drop_host_queue,
            unknown: LogOnce::default(),
        })
    }

    fn check_mouse(s: &MouseStateV1) -> Result<Mouse, RestoreError> {
        let c = |ok, reason: &str| ensure(ok, DEVICE, format!("mouse: {reason}"));
        c(s.replies.len() <= MOUSE_BUFFER, "too many queued replies")?;
        c(
            s.stream.len() <= MOUSE_BUFFER,
            "too many buffered packet bytes",
        )?;
        c(
            s.param_for.is_none_or(|p| matches!(p, 0xE8 | 0xF3)),
            "waits for the parameter of a command that takes none",
        )?;
        c(s.resolution <= 3, "resolution out of range")?;
        c(SAMPLE_RATES.contains(&s.rate), "sample rate not supported")?;
        c(
            s.rates.iter().all(|r| *r == 0 || SAMPLE_RATES.contains(r)),
            "sample rate history holds an unsupported rate",
        )?;
        c(matches!(s.id, 0 | 3), "device ID is not 0 or 3")?;
        c(s.buttons <= 7, "button bits out of range")?;
        c(
            (-STREAM_BACKLOG..=STREAM_BACKLOG).contains(&s.dz),
            "wheel backlog out of range",
        )?;
        c(
            matches!(s.last_packet_len, 0 | 3 | 4),
            "last packet length is not 0, 3 or 4",
        )?;
        Ok(Mouse {
            replies: s.replies.iter().copied().collect(),
            stream: s.stream.iter().copied().collect(),
            param_for: s.param_for,
            wrap: s.wrap,
            remote: s.remote,
            reporting: s.reporting,
            scale21: s.scale21,
            resolution: s.resolution,
            rate: s.rate,
            id: s.id,
            rates: s.rates,
            buttons: s.buttons,
            dx: s.dx,
            dy: s.dy,
            dz: s.dz,
            ovf_x: s.ovf_x,
            ovf_y: s.ovf_y,
            dirty: s.dirty,
            last_packet: s.last_packet,
            last_packet_len: usize::from(s.last_packet_len),
            last_sent: s.last_sent,
            unknown: LogOnce::default(),
        })
    }

    impl I8042StateV1 {
        /// Checks every value and builds the runtime pieces that are not plain copies.
        fn check(&self) -> Result<Restored, RestoreError> {
            let c = |ok, reason: &str| ensure(ok, DEVICE, reason);
            c(
                self.replies.len() <= 16,
                "too many queued controller replies",
            )?;
            c(
                self.awaiting
                    .is_none_or(|a| matches!(a, 0x60..=0x7F | 0xD1..=0xD4)),
                "waits for the data byte of a command that takes none",
            )?;
            c(
                self.output_port & OUT_RESET != 0
                    && self.output_port & (OUT_OBF | OUT_AUX_OBF) == 0,
                "output port value impossible",
            )?;
            c(
                self.host_keys.len() <= HOST_QUEUE_LIMIT,
                "host key queue longer than its limit",
            )?;
            c(
                self.host_mouse.len() <= HOST_QUEUE_LIMIT,
                "host mouse queue longer than its limit",
            )?;
            c(
                self.hold_ns <= BYTE_TIME_NS,
                "byte hold longer than a byte time",
            )?;
            let mut host_keys = VecDeque::with_capacity(self.host_keys.len());
            for k in &self.host_keys {
                host_keys.push_back(match *k {
                    HostKeyV1::Event { key, pressed } => {
                        let key = key_from_code(key);
                        c(key.is_some(), "a queued key event names no key")?;
                        match key {
                            Some(key) => HostKey::Event(KeyEvent { key, pressed }),
                            None => HostKey::Overflow,
                        }
                    }
                    HostKeyV1::Overflow => HostKey::Overflow,
                });
            }
            let mut host_mouse = VecDeque::with_capacity(self.host_mouse.len());
            for e in &self.host_mouse {
                c(e.buttons <= 7, "a queued mouse event has unknown buttons")?;
                host_mouse.push_back(MouseEvent {
                    dx: e.dx,
                    dy: e.dy,
                    dz: e.dz,
                    buttons: buttons_from_bits(e.buttons),
                });
            }
            Ok(Restored {
                keyboard: check_keyboard(&self.keyboard)?,
                mouse: check_mouse(&self.mouse)?,
                replies: self.replies.iter().map(|&(b, s)| (b, s.into())).collect(),
                host_keys,
                host_mouse,
                output: self.output.as_ref().map(|o| OutByte {
                    value: o.value,
                    side: o.side.into(),
                    paced: o.paced,
                }),
            })
        }
    }

    impl SaveRestore for I8042 {
        fn save(&mut self) -> SavedState {
            let now = self.clock.now_ns();
            encode(DEVICE, VERSION, &I8042StateV1::from_device(self, now))
        }

        fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
            let s: I8042StateV1 = decode(state, DEVICE, VERSION)?;
            let r = s.check()?;
            // Nothing can fail from here on.
            let now = self.clock.now_ns();
            let unknown = (
                std::mem::take(&mut self.keyboard.unknown),
                std::mem::take(&mut self.mouse.unknown),
            );
            self.ram = s.ram;
            self.sys = s.sys;
            self.last_write_command = s.last_write_command;
            self.output = r.output;
            self.last_output = s.last_output;
            self.replies = r.replies;
            self.awaiting = s.awaiting;
            self.output_port = s.output_port;
            self.xlate_break = s.xlate_break;
            self.keyboard = r.keyboard;
            self.mouse = r.mouse;
            (self.keyboard.unknown, self.mouse.unknown) = unknown;
            self.host_keys = r.host_keys;
            self.host_mouse = r.host_mouse;
            self.hold_until = if s.hold_ns == 0 {
                0
            } else {
                now.saturating_add(s.hold_ns)
            };
            self.reassert_irqs();
            // The timer loop does not know this device's deadline yet.
            self.wake_requested = self.paced_waiting();
            if self.wake_requested {
                self.waker.wake();
            }
            Ok(())
        }
    }

    impl I8042 {
        /// Drives both interrupt lines to the levels the state implies, whatever they were.
        fn reassert_irqs(&mut self) {
            let ctr = self.ctr();
            let side = self.output.map(|o| o.side);
            let kbd = side == Some(Side::Keyboard)
                && ctr & CTR_KBD_INT != 0
                && ctr & CTR_KBD_DISABLE == 0;
            let aux =
                side == Some(Side::Aux) && ctr & CTR_AUX_INT != 0 && ctr & CTR_AUX_DISABLE == 0;
            self.kbd_line = kbd;
            self.irq_kbd.set_level(kbd);
            self.aux_line = aux;
            self.irq_aux.set_level(aux);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{type_text, MouseButtons};
    use crate::irq::RecordingSink;
    use crate::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    struct Rig {
        dev: I8042,
        sink: Arc<RecordingSink>,
        resets: Arc<Mutex<Vec<ResetKind>>>,
        clock: ManualClock,
        wakes: Arc<AtomicUsize>,
    }

    fn rig() -> Rig {
        let sink = Arc::new(RecordingSink::default());
        let resets = Arc::new(Mutex::new(Vec::new()));
        let r = resets.clone();
        let clock = ManualClock::new();
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let dev = I8042::new(
            IrqLine::new(sink.clone(), KEYBOARD_IRQ),
            IrqLine::new(sink.clone(), MOUSE_IRQ),
            Arc::new(move |k| r.lock().unwrap().push(k)),
            Arc::new(clock.clone()),
            TimerWaker::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        );
        Rig {
            dev,
            sink,
            resets,
            clock,
            wakes,
        }
    }

    impl Rig {
        fn inb(&mut self, port: u16) -> u8 {
            let mut b = [0];
            self.dev.io_read(port, &mut b);
            b[0]
        }
        fn outb(&mut self, port: u16, v: u8) {
            self.dev.io_write(port, &[v]);
        }
        fn status(&mut self) -> u8 {
            self.inb(0x64)
        }
        /// Controller command with optional data byte.
        fn cmd(&mut self, c: u8, data: Option<u8>) {
            self.outb(0x64, c);
            if let Some(d) = data {
                self.outb(0x60, d);
            }
        }
        /// Lets one byte time pass.
        fn later(&mut self) {
            self.clock.advance(BYTE_TIME_NS);
        }
        /// Polls as the timer loop would; true if a deadline was pending (the clock is then
        /// moved to it and the device polled there).
        fn settle(&mut self) -> bool {
            let now = self.clock.now_ns();
            let Some(t) = Poll::poll(&mut self.dev, now) else {
                return false;
            };
            assert!(t > now);
            self.clock.set(t);
            assert_eq!(Poll::poll(&mut self.dev, t), None);
            true
        }
        /// Reads every byte waiting, with its AUX flag, letting time pass as needed.
        fn drain(&mut self) -> Vec<(u8, bool)> {
            let mut v = Vec::new();
            loop {
                if self.status() & STS_OBF != 0 {
                    let aux = self.status() & STS_AUX_OBF != 0;
                    v.push((self.inb(0x60), aux));
                    assert!(v.len() < 10_000);
                } else if !self.settle() {
                    return v;
                }
            }
        }
        fn bytes(&mut self) -> Vec<u8> {
            self.drain().into_iter().map(|(b, _)| b).collect()
        }
        fn ctr(&mut self) -> u8 {
            self.cmd(0x20, None);
            self.inb(0x60)
        }
        fn set_ctr(&mut self, v: u8) {
            self.cmd(0x60, Some(v));
        }
        fn kbd(&mut self, bytes: &[u8]) -> Vec<u8> {
            for &b in bytes {
                self.outb(0x60, b);
            }
            self.bytes()
        }
        fn aux(&mut self, bytes: &[u8]) -> Vec<u8> {
            for &b in bytes {
                self.cmd(0xD4, Some(b));
            }
            self.bytes()
        }
        fn key(&mut self, key: Key, pressed: bool) -> Vec<u8> {
            self.dev.key_event(KeyEvent { key, pressed });
            self.bytes()
        }
        fn mouse(&mut self, dx: i32, dy: i32, dz: i32, buttons: MouseButtons) -> Vec<u8> {
            self.dev.mouse_event(MouseEvent {
                dx,
                dy,
                dz,
                buttons,
            });
            self.bytes()
        }
    }

    const NONE: MouseButtons = MouseButtons {
        left: false,
        right: false,
        middle: false,
    };

    #[test]
    fn self_test_sets_ctr_and_sys() {
        let mut r = rig();
        assert_eq!(r.status() & STS_SYS, 0);
        assert_eq!(r.ctr(), CTR_POWER_ON);
        r.cmd(0xAA, None);
        assert_eq!(r.status() & (STS_OBF | STS_AUX_OBF), STS_OBF);
        assert_eq!(r.inb(0x60), 0x55);
        assert_ne!(r.status() & STS_SYS, 0);
        assert_eq!(r.ctr(), CTR_KBD_DISABLE | CTR_AUX_DISABLE | CTR_SYS);
        // No interrupt for the reply: interrupts are off after the test.
        assert!(!r.sink.level(1));
    }

    #[test]
    fn ctr_read_write_and_status_flags() {
        let mut r = rig();
        r.set_ctr(0x61);
        assert_eq!(r.ctr(), 0x61);
        assert_eq!(r.status() & STS_SYS, 0);
        r.set_ctr(0x45);
        assert_ne!(r.status() & STS_SYS, 0);
        // Command/data flag follows the last write.
        r.cmd(0xAE, None);
        assert_ne!(r.status() & STS_CMD, 0);
        r.outb(0x60, 0xF4);
        assert_eq!(r.status() & STS_CMD, 0);
        r.bytes();
        // IBF is never seen set; unlocked always.
        assert_eq!(r.status() & 0x02, 0);
        assert_ne!(r.status() & STS_UNLOCKED, 0);
        // Controller RAM beyond the CTR.
        r.cmd(0x65, Some(0x9C));
        r.cmd(0x25, None);
        assert_eq!(r.bytes(), [0x9C]);
        // Reading an empty buffer repeats the last byte.
        assert_eq!(r.inb(0x60), 0x9C);
    }

    #[test]
    fn port_tests_and_aux_toggle() {
        let mut r = rig();
        r.cmd(0xA9, None);
        assert_eq!(r.bytes(), [0x00]);
        r.cmd(0xAB, None);
        assert_eq!(r.bytes(), [0x00]);
        r.cmd(0xA7, None);
        assert_ne!(r.ctr() & CTR_AUX_DISABLE, 0);
        r.cmd(0xA8, None);
        assert_eq!(r.ctr() & CTR_AUX_DISABLE, 0);
        r.cmd(0xAD, None);
        assert_ne!(r.ctr() & CTR_KBD_DISABLE, 0);
        r.cmd(0xAE, None);
        assert_eq!(r.ctr() & CTR_KBD_DISABLE, 0);
        r.cmd(0xC0, None);
        assert_eq!(r.bytes(), [INPUT_PORT]);
        r.cmd(0xE0, None);
        assert_eq!(r.bytes(), [0x00]);
        r.cmd(0xA4, None);
        assert_eq!(r.bytes(), [0xF1]);
    }

    #[test]
    fn aux_loopback_and_irq12() {
        let mut r = rig();
        // Linux's probe: loop-back works with the port disabled and interrupts off.
        r.set_ctr(CTR_AUX_DISABLE | CTR_KBD_DISABLE);
        r.sink.take_changes();
        r.cmd(0xD3, Some(0x5A));
        assert_eq!(r.status() & (STS_OBF | STS_AUX_OBF), STS_OBF | STS_AUX_OBF);
        assert_eq!(r.inb(0x60), 0x5A);
        assert!(r.sink.take_changes().is_empty());
        // Its interrupt test: AUX enabled with its interrupt.
        r.set_ctr(CTR_AUX_INT | CTR_KBD_DISABLE);
        r.cmd(0xD3, Some(0xA5));
        assert_eq!(r.sink.take_changes(), [(12, true)]);
        assert_eq!(r.drain(), [(0xA5, true)]);
        assert_eq!(r.sink.take_changes(), [(12, false)]);
        // 0xD2 goes out as keyboard data.
        r.set_ctr(CTR_KBD_INT);
        r.cmd(0xD2, Some(0x33));
        assert_eq!(r.sink.take_changes(), [(1, true)]);
        assert_eq!(r.drain(), [(0x33, false)]);
        assert_eq!(r.sink.take_changes(), [(1, false)]);
    }

    #[test]
    fn keyboard_reset_identify_echo_and_unknown() {
        let mut r = rig();
        assert_eq!(r.kbd(&[0xFF]), [0xFA, 0xAA]);
        assert_eq!(r.kbd(&[0xF2]), [0xFA, 0xAB, 0x83]);
        r.set_ctr(CTR_XLATE);
        assert_eq!(r.kbd(&[0xF2]), [0xFA, 0xAB, 0x41]);
        r.set_ctr(0);
        assert_eq!(r.kbd(&[0xEE]), [0xEE]);
        assert_eq!(r.kbd(&[0x42]), [0xFE]);
        assert_eq!(r.kbd(&[0xFE]), [0xFE]);
        assert_eq!(r.kbd(&[0xF3, 0x20]), [0xFA, 0xFA]);
        assert_eq!(r.kbd(&[0xF6, 0xF5, 0xF4]), [0xFA, 0xFA, 0xFA]);
        assert_eq!(r.kbd(&[0xF7]), [0xFA]);
    }

    #[test]
    fn keyboard_leds() {
        let mut r = rig();
        assert_eq!(r.dev.leds(), LedState::default());
        assert_eq!(r.kbd(&[0xED, 0x06]), [0xFA, 0xFA]);
        let leds = r.dev.leds();
        assert!(leds.caps_lock && leds.num_lock && !leds.scroll_lock);
        // A command instead of the parameter starts that command.
        assert_eq!(r.kbd(&[0xED, 0xF2]), [0xFA, 0xFA, 0xAB, 0x83]);
        assert_eq!(r.dev.leds().bits(), 6);
        assert_eq!(r.kbd(&[0xFF]), [0xFA, 0xAA]);
        assert_eq!(r.dev.leds().bits(), 0);
    }

    #[test]
    fn keyboard_scan_code_sets() {
        let mut r = rig();
        assert_eq!(r.kbd(&[0xF0, 0x00]), [0xFA, 0xFA, 0x02]);
        r.set_ctr(CTR_XLATE);
        assert_eq!(r.kbd(&[0xF0, 0x00]), [0xFA, 0xFA, 0x41]);
        r.set_ctr(0);
        assert_eq!(r.kbd(&[0xF0, 0x01]), [0xFA, 0xFA]);
        assert_eq!(r.kbd(&[0xF0, 0x00]), [0xFA, 0xFA, 0x01]);
        // Native set 1 without translation.
        assert_eq!(r.key(Key::A, true), [0x1E]);
        assert_eq!(r.key(Key::A, false), [0x9E]);
        assert_eq!(r.key(Key::ArrowUp, false), [0xE0, 0xC8]);
        // Set 3 is declined: the set stays.
        assert_eq!(r.kbd(&[0xF0, 0x03]), [0xFA, 0xFA]);
        assert_eq!(r.kbd(&[0xF0, 0x00]), [0xFA, 0xFA, 0x01]);
        assert_eq!(r.kbd(&[0xF0, 0x07]), [0xFA, 0xFE]);
        assert_eq!(r.kbd(&[0xF0, 0x02]), [0xFA, 0xFA]);
        assert_eq!(r.key(Key::A, true), [0x1C]);
    }

    #[test]
    fn typing_with_and_without_translation() {
        let mut r = rig();
        assert_eq!(r.key(Key::A, true), [0x1C]);
        assert_eq!(r.key(Key::A, false), [0xF0, 0x1C]);
        assert_eq!(r.key(Key::ArrowUp, true), [0xE0, 0x75]);
        assert_eq!(r.key(Key::ArrowUp, false), [0xE0, 0xF0, 0x75]);
        r.set_ctr(CTR_XLATE);
        assert_eq!(r.key(Key::A, true), [0x1E]);
        assert_eq!(r.key(Key::A, false), [0x9E]);
        assert_eq!(r.key(Key::ArrowUp, true), [0xE0, 0x48]);
        assert_eq!(r.key(Key::ArrowUp, false), [0xE0, 0xC8]);
        assert_eq!(r.key(Key::F7, true), [0x41]);
        assert_eq!(r.key(Key::F7, false), [0xC1]);
    }

    #[test]
    fn pause_and_print_screen() {
        let mut r = rig();
        assert_eq!(
            r.key(Key::Pause, true),
            [0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77]
        );
        assert!(r.key(Key::Pause, false).is_empty());
        assert_eq!(r.key(Key::PrintScreen, true), [0xE0, 0x12, 0xE0, 0x7C]);
        assert_eq!(
            r.key(Key::PrintScreen, false),
            [0xE0, 0xF0, 0x7C, 0xE0, 0xF0, 0x12]
        );
        r.set_ctr(CTR_XLATE);
        assert_eq!(
            r.key(Key::Pause, true),
            [0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]
        );
        assert_eq!(r.key(Key::PrintScreen, true), [0xE0, 0x2A, 0xE0, 0x37]);
        assert_eq!(r.key(Key::PrintScreen, false), [0xE0, 0xB7, 0xE0, 0xAA]);
        // Ctrl+Pause is Break, Alt+Print Screen is SysRq.
        assert_eq!(r.key(Key::ControlLeft, true), [0x1D]);
        assert_eq!(r.key(Key::Pause, true), [0xE0, 0x46, 0xE0, 0xC6]);
        assert_eq!(r.key(Key::ControlLeft, false), [0x9D]);
        assert_eq!(r.key(Key::AltLeft, true), [0x38]);
        assert_eq!(r.key(Key::PrintScreen, true), [0x54]);
        assert_eq!(r.key(Key::PrintScreen, false), [0xD4]);
    }

    #[test]
    fn irq1_edges_and_gating() {
        let mut r = rig();
        r.set_ctr(CTR_KBD_INT);
        r.sink.take_changes();
        r.dev.key_event(KeyEvent::press(Key::A));
        assert_eq!(r.sink.take_changes(), [(1, true)]);
        assert!(r.sink.level(1));
        assert_eq!(r.inb(0x60), 0x1C);
        assert_eq!(r.sink.take_changes(), [(1, false)]);
        // Two bytes: the line drops on the read and rises when the second byte arrives.
        r.later();
        r.dev.key_event(KeyEvent::release(Key::A));
        assert_eq!(r.sink.take_changes(), [(1, true)]);
        assert_eq!(r.inb(0x60), 0xF0);
        assert_eq!(r.sink.take_changes(), [(1, false)]);
        assert!(r.settle());
        assert_eq!(r.sink.take_changes(), [(1, true)]);
        assert_eq!(r.inb(0x60), 0x1C);
        assert_eq!(r.sink.take_changes(), [(1, false)]);
        // Interrupt disabled in the CTR: data, no interrupt.
        r.set_ctr(0);
        r.sink.take_changes();
        r.dev.key_event(KeyEvent::press(Key::B));
        assert!(r.sink.take_changes().is_empty());
        assert_eq!(r.bytes(), [0x32]);
        // Port disabled: nothing arrives until it is enabled again.
        r.set_ctr(CTR_KBD_INT | CTR_KBD_DISABLE);
        r.sink.take_changes();
        r.dev.key_event(KeyEvent::release(Key::B));
        assert_eq!(r.status() & STS_OBF, 0);
        assert!(r.sink.take_changes().is_empty());
        r.later();
        r.cmd(0xAE, None);
        assert_eq!(r.sink.take_changes(), [(1, true)]);
        assert_eq!(r.bytes(), [0xF0, 0x32]);
        assert!(!r.sink.level(1));
    }

    #[test]
    fn writing_to_the_keyboard_enables_its_port() {
        let mut r = rig();
        r.cmd(0xAD, None);
        assert_eq!(r.kbd(&[0xF2]), [0xFA, 0xAB, 0x83]);
        assert_eq!(r.ctr() & CTR_KBD_DISABLE, 0);
    }

    #[test]
    fn keyboard_disabled_drops_keys_and_overflow_is_reported() {
        let mut r = rig();
        assert_eq!(r.kbd(&[0xF5]), [0xFA]);
        assert!(r.key(Key::A, true).is_empty());
        assert_eq!(r.dev.pending_host_events(), 0);
        assert_eq!(r.kbd(&[0xF4]), [0xFA]);
        // The guest stops reading: the host queue fills, its newest entry becomes overflow.
        r.cmd(0xAD, None);
        for _ in 0..HOST_QUEUE_LIMIT + KEYBOARD_BUFFER + 1 {
            r.dev.key_event(KeyEvent::press(Key::Z));
        }
        r.cmd(0xAE, None);
        let bytes = r.bytes();
        assert_eq!(bytes.len(), HOST_QUEUE_LIMIT + KEYBOARD_BUFFER);
        assert!(bytes[..bytes.len() - 1].iter().all(|&b| b == 0x1A));
        assert_eq!(*bytes.last().unwrap(), 0x00);
        // Translated, the overflow code is FF.
        r.set_ctr(CTR_XLATE | CTR_KBD_DISABLE);
        for _ in 0..HOST_QUEUE_LIMIT + KEYBOARD_BUFFER + 3 {
            r.dev.key_event(KeyEvent::press(Key::Z));
        }
        r.cmd(0xAE, None);
        let bytes = r.bytes();
        assert_eq!(*bytes.last().unwrap(), 0xFF);
        assert_eq!(bytes[0], 0x2C);
    }

    #[test]
    fn typing_a_command_line() {
        let mut r = rig();
        r.set_ctr(CTR_XLATE | CTR_KBD_INT);
        for e in type_text("ls -L\n").unwrap() {
            r.dev.key_event(e);
        }
        // Much more than the keyboard's buffer: the host queue paces it.
        let got = r.bytes();
        assert_eq!(
            got,
            [0x26, 0xA6, 0x1F, 0x9F, 0x39, 0xB9, 0x0C, 0x8C, 0x2A, 0x26, 0xA6, 0xAA, 0x1C, 0x9C]
        );
        let long = "echo The quick brown fox jumps over the lazy dog 0123456789!\n";
        let events = type_text(long).unwrap();
        let want: Vec<u8> = events
            .iter()
            .flat_map(|e| {
                crate::input::set1_sequence(e.key, e.pressed, Modifiers::default())
                    .as_slice()
                    .to_vec()
            })
            .collect();
        for e in events {
            r.dev.key_event(e);
        }
        assert_eq!(r.bytes(), want);
    }

    #[test]
    fn release_all_keys_releases_what_is_held() {
        let mut r = rig();
        r.set_ctr(CTR_XLATE);
        assert_eq!(r.key(Key::ShiftLeft, true), [0x2A]);
        assert_eq!(r.key(Key::ArrowLeft, true), [0xE0, 0x4B]);
        r.dev.release_all_keys();
        assert_eq!(r.bytes(), [0xAA, 0xE0, 0xCB]);
        r.dev.release_all_keys();
        assert!(r.bytes().is_empty());
    }

    #[test]
    fn mouse_reset_id_and_intellimouse() {
        let mut r = rig();
        assert_eq!(r.aux(&[0xFF]), [0xFA, 0xAA, 0x00]);
        assert_eq!(r.aux(&[0xF2]), [0xFA, 0x00]);
        assert_eq!(r.aux(&[0xF3, 200, 0xF3, 100, 0xF3, 80]), [0xFA; 6]);
        assert_eq!(r.aux(&[0xF2]), [0xFA, 0x03]);
        assert_eq!(r.aux(&[0xE9]), [0xFA, 0x00, 0x02, 80]);
        // Invalid parameters are refused.
        assert_eq!(r.aux(&[0xF3, 33]), [0xFA, 0xFE]);
        assert_eq!(r.aux(&[0xE8, 9]), [0xFA, 0xFE]);
        assert_eq!(r.aux(&[0xE8, 3]), [0xFA, 0xFA]);
        assert_eq!(r.aux(&[0x10]), [0xFE]);
        // Reset goes back to a standard mouse.
        assert_eq!(r.aux(&[0xFF]), [0xFA, 0xAA, 0x00]);
        assert_eq!(r.aux(&[0xF2]), [0xFA, 0x00]);
        // Replies are AUX data.
        r.cmd(0xD4, Some(0xF2));
        assert_eq!(r.drain(), [(0xFA, true), (0x00, true)]);
    }

    #[test]
    fn mouse_stream_packets() {
        let mut r = rig();
        // No packets until reporting is enabled.
        assert!(r.mouse(5, 5, 0, NONE).is_empty());
        assert_eq!(r.aux(&[0xF4]), [0xFA]);
        // Right 10, down 5: Y is negative on the wire.
        assert_eq!(r.mouse(10, 5, 0, NONE), [0x28, 10, 0xFB]);
        // Left 3, up 7, left button.
        let left = MouseButtons { left: true, ..NONE };
        assert_eq!(r.mouse(-3, -7, 0, left), [0x19, 0xFD, 7]);
        // A button change alone is a packet; so is its release.
        let both = MouseButtons {
            right: true,
            middle: true,
            ..NONE
        };
        assert_eq!(r.mouse(0, 0, 0, both), [0x0E, 0, 0]);
        assert_eq!(r.mouse(0, 0, 0, NONE), [0x08, 0, 0]);
        // Large motion is split across packets within the 9-bit range.
        assert_eq!(
            r.mouse(600, -300, 0, NONE),
            [0x08, 255, 255, 0x08, 255, 45, 0x08, 90, 0]
        );
        assert_eq!(
            r.mouse(-600, 0, 0, NONE),
            [0x18, 0x00, 0, 0x18, 0x00, 0, 0x18, 0xA8, 0]
        );
        // No wheel byte on a standard mouse.
        assert!(r.mouse(0, 0, 3, NONE).is_empty());
    }

    #[test]
    fn mouse_overflow_when_the_guest_does_not_read() {
        let mut r = rig();
        assert_eq!(r.aux(&[0xF4]), [0xFA]);
        r.cmd(0xA7, None);
        for _ in 0..40 {
            r.dev.mouse_event(MouseEvent::motion(100, 0, NONE));
        }
        r.cmd(0xA8, None);
        let bytes = r.bytes();
        assert_eq!(bytes.len() % 3, 0);
        // Five packets fit the mouse's buffer; the rest piled up beyond the backlog and the
        // next packet carries the X overflow flag.
        let flagged: Vec<usize> = (0..bytes.len() / 3)
            .filter(|i| bytes[i * 3] & 0x40 != 0)
            .collect();
        assert_eq!(flagged, [5]);
        let total: i32 = bytes
            .chunks(3)
            .map(|p| i32::from(p[1]) - if p[0] & 0x10 != 0 { 256 } else { 0 })
            .sum();
        assert_eq!(total, 500 + STREAM_BACKLOG);
    }

    #[test]
    fn mouse_wheel_packets() {
        let mut r = rig();
        assert_eq!(r.aux(&[0xF3, 200, 0xF3, 100, 0xF3, 80, 0xF4]), [0xFA; 7]);
        // Scroll up one detent: Z is -1 on the wire.
        assert_eq!(r.mouse(0, 0, 1, NONE), [0x08, 0, 0, 0xFF]);
        assert_eq!(r.mouse(1, 0, -2, NONE), [0x08, 1, 0, 2]);
        // Beyond the 4-bit range the wheel is split too.
        assert_eq!(
            r.mouse(0, 0, 10, NONE),
            [0x08, 0, 0, 0xF8, 0x08, 0, 0, 0xFE]
        );
    }

    #[test]
    fn mouse_remote_mode() {
        let mut r = rig();
        assert_eq!(r.aux(&[0xF0]), [0xFA]);
        assert!(r.mouse(20, -4, 0, NONE).is_empty());
        assert_eq!(r.aux(&[0xEB]), [0xFA, 0x08, 20, 4]);
        assert_eq!(r.aux(&[0xEB]), [0xFA, 0x08, 0, 0]);
        // Beyond the 9-bit range: overflow flags and saturated values.
        let right = MouseButtons {
            right: true,
            ..NONE
        };
        assert!(r.mouse(300, 1000, 0, right).is_empty());
        assert_eq!(r.aux(&[0xEB]), [0xFA, 0xEA, 0xFF, 0x00]);
        assert_eq!(r.aux(&[0xE9]), [0xFA, 0x41, 0x02, 100]);
        // Back to stream mode; reporting is still off.
        assert_eq!(r.aux(&[0xEA]), [0xFA]);
        assert!(r.mouse(1, 1, 0, NONE).is_empty());
    }

    #[test]
    fn mouse_scaling() {
        let mut r = rig();
        assert_eq!(r.aux(&[0xE7, 0xF4]), [0xFA, 0xFA]);
        assert_eq!(r.aux(&[0xE9]), [0xFA, 0x30, 0x02, 100]);
        let x = |r: &mut Rig, dx| r.mouse(dx, 0, 0, NONE)[1] as i8;
        assert_eq!(x(&mut r, 1), 1);
        assert_eq!(x(&mut r, 2), 1);
        assert_eq!(x(&mut r, 3), 3);
        assert_eq!(x(&mut r, 4), 6);
        assert_eq!(x(&mut r, 5), 9);
        assert_eq!(x(&mut r, 10), 20);
        assert_eq!(x(&mut r, -4), -6);
        // Split motion is scaled per packet and stays within range.
        assert_eq!(
            r.mouse(300, 0, 0, NONE),
            [0x08, 254, 0, 0x08, 254, 0, 0x08, 92, 0]
        );
        // Remote reads are not scaled.
        assert_eq!(r.aux(&[0xF0]), [0xFA]);
        r.mouse(10, 0, 0, NONE);
        assert_eq!(r.aux(&[0xEB]), [0xFA, 0x08, 10, 0]);
        assert_eq!(r.aux(&[0xE6, 0xE9]), [0xFA, 0xFA, 0x60, 0x02, 100]);
    }

    #[test]
    fn mouse_wrap_mode() {
        let mut r = rig();
        assert_eq!(r.aux(&[0xEE]), [0xFA]);
        assert_eq!(r.aux(&[0x12, 0xF4, 0xE9]), [0x12, 0xF4, 0xE9]);
        assert_eq!(r.aux(&[0xEC]), [0xFA]);
        assert_eq!(r.aux(&[0xF2]), [0xFA, 0x00]);
        assert_eq!(r.aux(&[0xEE, 0xFF]), [0xFA, 0xFA, 0xAA, 0x00]);
        assert_eq!(r.aux(&[0x12]), [0xFE]);
    }

    #[test]
    fn irq12_edges_and_gating() {
        let mut r = rig();
        assert_eq!(r.aux(&[0xF4]), [0xFA]);
        r.set_ctr(CTR_AUX_INT | CTR_KBD_INT);
        r.sink.take_changes();
        r.dev.mouse_event(MouseEvent::motion(1, 0, NONE));
        assert_eq!(r.sink.take_changes(), [(12, true)]);
        assert_eq!(r.drain(), [(0x08, true), (0x01, true), (0x00, true)]);
        assert_eq!(
            r.sink.take_changes(),
            [
                (12, false),
                (12, true),
                (12, false),
                (12, true),
                (12, false)
            ]
        );
        r.set_ctr(CTR_KBD_INT);
        r.sink.take_changes();
        r.dev.mouse_event(MouseEvent::motion(1, 0, NONE));
        assert!(r.sink.take_changes().is_empty());
        assert_eq!(r.bytes().len(), 3);
        r.set_ctr(CTR_AUX_INT | CTR_AUX_DISABLE);
        r.dev.mouse_event(MouseEvent::motion(1, 0, NONE));
        assert_eq!(r.status() & STS_OBF, 0);
        assert!(!r.sink.level(12));
        r.later();
        r.cmd(0xA8, None);
        assert!(r.sink.level(12));
        assert_eq!(r.bytes().len(), 3);
        assert!(!r.sink.level(12));
    }

    #[test]
    fn reset_pulse_and_output_port() {
        let mut r = rig();
        r.cmd(0xFF, None);
        r.cmd(0xFD, None);
        assert!(r.resets.lock().unwrap().is_empty());
        r.cmd(0xFE, None);
        assert_eq!(*r.resets.lock().unwrap(), [ResetKind::Soft]);
        r.cmd(0xF0, None);
        assert_eq!(r.resets.lock().unwrap().len(), 2);
        r.cmd(0xD1, Some(0xDE));
        assert_eq!(r.resets.lock().unwrap().len(), 3);
        r.cmd(0xD0, None);
        assert_eq!(r.bytes(), [0xCF]);
    }

    #[test]
    fn a20_gate() {
        let mut r = rig();
        assert!(r.dev.a20_enabled());
        r.cmd(0xD1, Some(0xDD));
        assert!(!r.dev.a20_enabled());
        r.cmd(0xD0, None);
        assert_eq!(r.bytes()[0] & OUT_A20, 0);
        r.cmd(0xDF, None);
        assert!(r.dev.a20_enabled());
        r.cmd(0xD0, None);
        assert_eq!(r.bytes()[0] & OUT_A20, OUT_A20);
        r.cmd(0xDD, None);
        assert!(!r.dev.a20_enabled());
        r.cmd(0xD1, Some(0xDF));
        assert!(r.dev.a20_enabled());
        assert!(r.resets.lock().unwrap().is_empty());
        r.dev.reset();
        assert!(r.dev.a20_enabled());
    }

    #[test]
    fn controller_replies_wait_for_the_buffer() {
        let mut r = rig();
        r.dev.key_event(KeyEvent::press(Key::A));
        r.cmd(0x20, None);
        // The scan code was there first; the reply follows it.
        assert_eq!(r.bytes(), [0x1C, CTR_POWER_ON]);
        // A new controller command cancels one waiting for data.
        r.cmd(0x60, None);
        r.cmd(0xAB, None);
        r.outb(0x60, 0xF2);
        assert_eq!(r.bytes(), [0x00, 0xFA, 0xAB, 0x83]);
        assert_eq!(r.ctr(), CTR_POWER_ON);
    }

    #[test]
    fn scan_codes_are_paced_like_the_wire() {
        let mut r = rig();
        r.set_ctr(CTR_KBD_INT);
        for _ in 0..10 {
            r.dev.key_event(KeyEvent::press(Key::A));
            r.dev.key_event(KeyEvent::release(Key::A));
        }
        // A driver flushing the controller (16 reads, no time passing) sees one byte, not
        // the whole backlog.
        let mut flushed = 0;
        while r.status() & STS_OBF != 0 && flushed < 16 {
            r.inb(0x60);
            flushed += 1;
        }
        assert_eq!(flushed, 1);
        assert!(r.wakes.load(Ordering::SeqCst) >= 1);
        // Replies are not held back by waiting scan codes.
        r.outb(0x60, 0xEE);
        assert_eq!(r.inb(0x60), 0xEE);
        // The next scan code arrives at its time, with a new interrupt.
        let now = r.clock.now_ns();
        let deadline = Poll::poll(&mut r.dev, now).unwrap();
        assert_eq!(deadline, now + BYTE_TIME_NS);
        r.clock.set(deadline - 1);
        assert_eq!(Poll::poll(&mut r.dev, deadline - 1), Some(deadline));
        assert_eq!(r.status() & STS_OBF, 0);
        r.sink.take_changes();
        r.clock.set(deadline);
        assert_eq!(Poll::poll(&mut r.dev, deadline), None);
        assert_eq!(r.sink.take_changes(), [(1, true)]);
        assert_eq!(r.inb(0x60), 0xF0);
        assert_eq!(r.bytes().len(), 10 * 3 - 2);
        // Nothing waiting: no deadline.
        assert_eq!(Poll::poll(&mut r.dev, r.clock.now_ns()), None);
    }

    #[test]
    fn buffer_clearing_commands_drop_the_host_backlog() {
        let mut r = rig();
        r.cmd(0xAD, None);
        for e in type_text("Hello World, this is far more than sixteen bytes").unwrap() {
            r.dev.key_event(e);
        }
        r.dev.key_event(KeyEvent::press(Key::ControlLeft));
        assert!(r.dev.pending_host_events() > 0);
        // Writing to the keyboard enables its port; F4 clears its buffer and the backlog.
        assert_eq!(r.kbd(&[0xF4]), [0xFA]);
        assert_eq!(r.dev.pending_host_events(), 0);
        assert!(r.bytes().is_empty());
        // The dropped events still moved the keys: only Ctrl is down.
        r.dev.release_all_keys();
        assert_eq!(r.bytes(), [0xF0, 0x14]);
    }

    #[test]
    fn machine_reset_restores_power_on_state() {
        let mut r = rig();
        r.set_ctr(0x47);
        r.kbd(&[0xED, 0x07]);
        r.dev.key_event(KeyEvent::press(Key::A));
        r.dev.reset();
        assert_eq!(r.status() & STS_OBF, 0);
        assert_eq!(r.ctr(), CTR_POWER_ON);
        assert_eq!(r.dev.leds(), LedState::default());
        assert!(!r.sink.level(1) && !r.sink.level(12));
    }

    #[test]
    fn wide_accesses_and_handle() {
        let mut r = rig();
        r.cmd(0xAA, None);
        let mut w = [0u8; 2];
        r.dev.io_read(0x60, &mut w);
        assert_eq!(w, [0x55, 0xFF]);
        let shared = Arc::new(Mutex::new(r.dev));
        assert!(Device::poll(&mut *shared.lock().unwrap()).is_some());
        let handle = crate::input::InputHandle::new(shared.clone());
        let h2 = handle.clone();
        std::thread::spawn(move || h2.type_text("a").unwrap())
            .join()
            .unwrap();
        assert_eq!(handle.leds(), LedState::default());
        let mut dev = shared.lock().unwrap();
        let mut b = [0u8];
        dev.io_write(0x64, &[0xAE]);
        dev.io_read(0x60, &mut b);
        assert_eq!(b[0], 0x1C);
    }

    // ---- saved state ----------------------------------------------------------------

    use crate::saved_state::{RestoreError, SaveRestore, SavedState};

    /// A rig in a state worth saving: translation on, LEDs lit, the mouse streaming at 40
    /// samples/s with resolution 3 and 2:1 scaling, Shift held, key and mouse bytes queued for
    /// the guest, one paced byte just read (so the next one is held back) and a controller
    /// reply in the output buffer.
    fn busy_rig() -> Rig {
        let mut r = rig();
        r.set_ctr(CTR_KBD_INT | CTR_AUX_INT | CTR_SYS | CTR_XLATE);
        assert_eq!(r.kbd(&[0xED, 0x05]), [ACK, ACK]);
        assert_eq!(r.aux(&[0xF3, 40, 0xE8, 3, 0xE7, 0xF4]), [ACK; 6]);
        r.dev.key_event(KeyEvent::press(Key::ShiftLeft));
        for e in type_text("ab").unwrap() {
            r.dev.key_event(e);
        }
        r.dev.mouse_event(MouseEvent::motion(
            5,
            -3,
            MouseButtons { left: true, ..NONE },
        ));
        assert_eq!(r.inb(0x60), 0x2A, "Shift make, translated");
        r.clock.advance(300_000);
        r.cmd(0x20, None);
        r
    }

    /// Every guest-visible answer that does not change the state.
    fn observe(r: &mut Rig) -> (u8, u8, LedState, bool, usize, bool, bool) {
        (
            r.status(),
            r.dev.command_byte(),
            r.dev.leds(),
            r.dev.a20_enabled(),
            r.dev.pending_host_events(),
            r.sink.level(KEYBOARD_IRQ),
            r.sink.level(MOUSE_IRQ),
        )
    }

    /// Polls and reads as a guest would, in 100 µs steps: (step, status, byte read).
    fn run(r: &mut Rig, steps: u32) -> Vec<(u32, u8, Option<u8>)> {
        let mut seen = Vec::new();
        for step in 0..steps {
            r.clock.advance(100_000);
            let now = r.clock.now_ns();
            Poll::poll(&mut r.dev, now);
            let st = r.status();
            let b = (st & STS_OBF != 0).then(|| r.inb(0x60));
            seen.push((step, st, b));
        }
        seen
    }

    #[test]
    fn saved_state_round_trip() {
        let mut a = busy_rig();
        let saved = a.dev.save();
        assert_eq!(saved.device, "i8042");
        let mut b = rig();
        // Another process: its clock started elsewhere.
        b.clock.set(7_000_000_000);
        b.dev.restore(&saved).unwrap();
        assert_eq!(observe(&mut a), observe(&mut b));
        assert!(b.sink.level(KEYBOARD_IRQ), "IRQ1 re-asserted for the reply");
        assert_eq!(b.dev.save(), saved, "saving the restored device");
        // The same bytes at the same times, the reply first.
        let (ra, rb) = (run(&mut a, 200), run(&mut b, 200));
        assert_eq!(ra, rb);
        let bytes: Vec<u8> = ra.iter().filter_map(|s| s.2).collect();
        assert_eq!(bytes[0], CTR_KBD_INT | CTR_AUX_INT | CTR_SYS | CTR_XLATE);
        assert_eq!(&bytes[1..5], [0x1E, 0x9E, 0x30, 0xB0], "a, b typed");
        assert_eq!(bytes.len(), 8, "and a 3-byte mouse packet");
        let first = ra.iter().find(|s| s.2.is_some()).unwrap().0;
        let second = ra.iter().filter(|s| s.2.is_some()).nth(1).unwrap().0;
        assert_eq!(
            (first, second),
            (0, 6),
            "the held byte waits out its wire time"
        );
        // Device settings survived: mouse status, scan code set, held Shift.
        assert_eq!(a.aux(&[0xE9]), b.aux(&[0xE9]));
        assert_eq!(
            b.aux(&[0xE9]),
            [ACK, 0x34, 3, 40],
            "stream, 2:1, left button"
        );
        assert_eq!(a.kbd(&[0xF0, 0x00]), b.kbd(&[0xF0, 0x00]));
        a.dev.release_all_keys();
        b.dev.release_all_keys();
        assert_eq!(a.bytes(), b.bytes());
    }

    #[test]
    fn saved_state_refusals() {
        let mut r = busy_rig();
        let saved = r.dev.save();
        let mut fresh = rig();
        let mut other = saved.clone();
        other.version = 2;
        assert!(matches!(
            fresh.dev.restore(&other),
            Err(RestoreError::Version { found: 2, .. })
        ));
        let mut cut = saved.clone();
        cut.data.truncate(cut.data.len() / 2);
        assert!(matches!(
            fresh.dev.restore(&cut),
            Err(RestoreError::Corrupt { .. })
        ));
        let foreign = SavedState {
            device: "fdc".into(),
            ..saved.clone()
        };
        assert!(matches!(
            fresh.dev.restore(&foreign),
            Err(RestoreError::WrongDevice { .. })
        ));
        let mut s: save::I8042StateV1 = postcard::from_bytes(&saved.data).unwrap();
        s.mouse.last_packet_len = 9;
        let bad = crate::saved_state::encode("i8042", save::VERSION, &s);
        let e = fresh.dev.restore(&bad).unwrap_err();
        assert!(e.to_string().contains("last packet length"), "{e}");
        let mut s: save::I8042StateV1 = postcard::from_bytes(&saved.data).unwrap();
        s.keyboard.held = vec![0xFF];
        let bad = crate::saved_state::encode("i8042", save::VERSION, &s);
        assert!(matches!(
            fresh.dev.restore(&bad),
            Err(RestoreError::Corrupt { .. })
        ));
        // The refused device still works as before.
        assert_eq!(fresh.ctr(), CTR_POWER_ON);
        assert_eq!(fresh.key(Key::A, true), [0x1C]);
    }
}
