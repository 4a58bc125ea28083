//! The Bochs/QEMU debug console: a port (0x402 for SeaBIOS, 0xE9 traditionally) whose writes
//! are printed and whose reads return 0xE9 so firmware knows it is there.

use crate::{Device, PortIo};

/// SeaBIOS's debug port.
pub const DEBUGCON_PORT: u16 = 0x402;

/// Where written bytes go.
pub type DebugOutput = Box<dyn FnMut(u8) + Send>;

/// The debug console.
pub struct DebugCon {
    port: u16,
    output: DebugOutput,
}

impl std::fmt::Debug for DebugCon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugCon")
            .field("port", &self.port)
            .finish()
    }
}

impl DebugCon {
    /// A debug console at `port` sending bytes to `output`.
    pub fn new(port: u16, output: DebugOutput) -> Self {
        Self { port, output }
    }

    /// The port it answers.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Device for DebugCon {
    fn name(&self) -> &str {
        "debugcon"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
}

impl PortIo for DebugCon {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = if port.wrapping_add(i as u16) == self.port {
                0xE9
            } else {
                0xFF
            };
        }
    }
    fn io_write(&mut self, port: u16, data: &[u8]) {
        // Only the byte at the port itself is output (a wider write's other bytes are not ours).
        if port == self.port {
            if let Some(&b) = data.first() {
                (self.output)(b);
            }
        } else {
            tracing::warn!(port, "debugcon: write to unowned port");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn reads_e9_and_forwards_writes() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        let mut d = DebugCon::new(DEBUGCON_PORT, Box::new(move |b| o.lock().unwrap().push(b)));
        let mut b = [0u8; 2];
        d.io_read(0x402, &mut b);
        assert_eq!(b, [0xE9, 0xFF]);
        d.io_write(0x402, b"O");
        d.io_write(0x402, b"K");
        d.io_write(0x402, &[b'!', 0]);
        assert_eq!(*out.lock().unwrap(), b"OK!");
    }
}
