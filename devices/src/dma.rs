//! Intel 8237 DMA controller pair as a register file: ports 0x00-0x0F (channels 0-3),
//! 0xC0-0xDF (channels 4-7, one register every two ports) and page registers 0x81-0x8F
//! (0x80 belongs to [`crate::system_control`]). Writes are stored and read back; no transfer
//! ever happens (no device here uses ISA DMA).

use crate::{Device, PortIo};

/// Port ranges the DMA controllers answer: `(first port, count)`.
pub const DMA_PORT_RANGES: [(u16, u16); 3] = [(0x00, 0x10), (0x81, 0x0F), (0xC0, 0x20)];

#[derive(Debug, Clone, Default)]
struct Controller {
    /// Base address and count of the four channels, as 16-bit registers.
    address: [u16; 4],
    count: [u16; 4],
    high_byte_next: bool,
    command: u8,
    mode: [u8; 4],
    mask: u8,
    request: u8,
}

impl Controller {
    fn master_clear(&mut self) {
        *self = Self {
            address: self.address,
            count: self.count,
            mask: 0x0F,
            ..Self::default()
        };
    }

    fn word_access(&mut self, reg: &mut u16, write: Option<u8>) -> u8 {
        let high = self.high_byte_next;
        self.high_byte_next = !high;
        let shift = if high { 8 } else { 0 };
        if let Some(v) = write {
            *reg = (*reg & !(0xFF << shift)) | u16::from(v) << shift;
        }
        (*reg >> shift) as u8
    }

    fn read(&mut self, reg: u16) -> u8 {
        match reg {
            0..=7 => {
                let ch = usize::from(reg / 2);
                let mut v = if reg & 1 == 0 {
                    self.address[ch]
                } else {
                    self.count[ch]
                };
                self.word_access(&mut v, None)
            }
            8 => 0,  // status: no terminal counts, no requests
            13 => 0, // temporary register
            15 => 0xF0 | self.mask,
            _ => 0xFF,
        }
    }

    fn write(&mut self, reg: u16, value: u8) {
        match reg {
            0..=7 => {
                let ch = usize::from(reg / 2);
                let mut v = if reg & 1 == 0 {
                    self.address[ch]
                } else {
                    self.count[ch]
                };
                self.word_access(&mut v, Some(value));
                if reg & 1 == 0 {
                    self.address[ch] = v;
                } else {
                    self.count[ch] = v;
                }
            }
            8 => self.command = value,
            9 => {
                let bit = 1 << (value & 3);
                if value & 4 != 0 {
                    self.request |= bit;
                } else {
                    self.request &= !bit;
                }
            }
            10 => {
                let bit = 1 << (value & 3);
                if value & 4 != 0 {
                    self.mask |= bit;
                } else {
                    self.mask &= !bit;
                }
            }
            11 => self.mode[usize::from(value & 3)] = value,
            12 => self.high_byte_next = false,
            13 => self.master_clear(),
            14 => self.mask = 0,
            _ => self.mask = value & 0x0F,
        }
    }
}

/// Both 8237s and the page registers.
#[derive(Debug, Clone)]
pub struct Dma8237 {
    controllers: [Controller; 2],
    pages: [u8; 16],
}

impl Default for Dma8237 {
    fn default() -> Self {
        Self::new()
    }
}

impl Dma8237 {
    /// Controllers after a master clear (all channels masked).
    pub fn new() -> Self {
        let mut d = Self {
            controllers: Default::default(),
            pages: [0; 16],
        };
        d.controllers.iter_mut().for_each(Controller::master_clear);
        d
    }

    fn read_port(&mut self, port: u16) -> u8 {
        match port {
            0x00..=0x0F => self.controllers[0].read(port),
            0x81..=0x8F => self.pages[usize::from(port - 0x80)],
            0xC0..=0xDF => self.controllers[1].read((port - 0xC0) >> 1),
            _ => {
                tracing::warn!(port, "dma: read of unowned port");
                0xFF
            }
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        match port {
            0x00..=0x0F => self.controllers[0].write(port, value),
            0x81..=0x8F => self.pages[usize::from(port - 0x80)] = value,
            0xC0..=0xDF => self.controllers[1].write((port - 0xC0) >> 1, value),
            _ => tracing::warn!(port, value, "dma: write to unowned port"),
        }
    }
}

impl Device for Dma8237 {
    fn name(&self) -> &str {
        "dma"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn reset(&mut self) {
        *self = Self::new();
    }
}

impl PortIo for Dma8237 {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        crate::read_bytewise(port, data, |p| self.read_port(p));
    }
    fn io_write(&mut self, port: u16, data: &[u8]) {
        crate::write_bytewise(port, data, |p, v| self.write_port(p, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inb(d: &mut Dma8237, port: u16) -> u8 {
        let mut b = [0];
        d.io_read(port, &mut b);
        b[0]
    }

    #[test]
    fn registers_read_back() {
        let mut d = Dma8237::new();
        assert_eq!(inb(&mut d, 0x0F), 0xFF);
        d.io_write(0x0C, &[0]);
        d.io_write(0x04, &[0x34]);
        d.io_write(0x04, &[0x12]);
        d.io_write(0x0C, &[0]);
        assert_eq!(inb(&mut d, 0x04), 0x34);
        assert_eq!(inb(&mut d, 0x04), 0x12);
        d.io_write(0x0A, &[0x02]); // unmask channel 2
        assert_eq!(inb(&mut d, 0x0F), 0xFB);
        d.io_write(0x8F, &[0x77]);
        assert_eq!(inb(&mut d, 0x8F), 0x77);
        d.io_write(0xD6, &[0x4A]); // mode, controller 2
        d.io_write(0xDE, &[0x00]); // clear masks
        assert_eq!(inb(&mut d, 0xDE), 0xF0);
        d.io_write(0xDA, &[0]); // master clear
        assert_eq!(inb(&mut d, 0xDE), 0xFF);
        assert_eq!(inb(&mut d, 0x08), 0x00);
    }
}
