//! Guest physical memory as the exit completion sees it: RAM slots (some read-only), and
//! everything else MMIO.

use std::sync::Arc;

use hv::{CpuIo, GuestMemoryMmap, GuestRegionMmap};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// The partition's memory slots: RAM in a [`GuestMemoryMmap`] plus which ranges are
/// read-only (ROM: reads from RAM, writes go to MMIO).
#[derive(Debug, Clone, Default)]
pub struct GuestRam {
    mem: GuestMemoryMmap,
    /// Read-only ranges `[start, end)`.
    read_only: Vec<(u64, u64)>,
}

impl GuestRam {
    /// Memory with no RAM: every access is MMIO.
    pub fn empty() -> Self {
        Self::default()
    }

    /// RAM `mem`, all writable.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        Self {
            mem,
            read_only: Vec::new(),
        }
    }

    /// Builds from slots: each region and whether it is read-only. Regions must not overlap.
    pub fn from_slots(slots: &[(Arc<GuestRegionMmap>, bool)]) -> hv::Result<Self> {
        let mut regions: Vec<Arc<GuestRegionMmap>> = slots.iter().map(|(r, _)| r.clone()).collect();
        regions.sort_by_key(|r| r.start_addr());
        let mem = if regions.is_empty() {
            GuestMemoryMmap::new()
        } else {
            GuestMemoryMmap::from_arc_regions(regions)
                .map_err(|e| hv::HvError::InvalidArgument(format!("memory slots: {e}")))?
        };
        let read_only = slots
            .iter()
            .filter(|(_, ro)| *ro)
            .map(|(r, _)| (r.start_addr().0, r.start_addr().0 + r.len()))
            .collect();
        Ok(Self { mem, read_only })
    }

    /// The RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Bytes of RAM from `address` up to the end of its region, or `None` outside RAM.
    fn ram_run(&self, address: u64) -> Option<u64> {
        let r = self.mem.find_region(GuestAddress(address))?;
        Some(r.start_addr().0 + r.len() - address)
    }

    /// Bytes from `address` (outside RAM) up to the next RAM region.
    fn mmio_run(&self, address: u64) -> u64 {
        self.mem
            .iter()
            .map(|r| r.start_addr().0)
            .filter(|&s| s > address)
            .min()
            .map_or(u64::MAX, |s| s - address)
    }

    fn is_read_only(&self, address: u64) -> bool {
        self.read_only
            .iter()
            .any(|&(s, e)| address >= s && address < e)
    }

    /// Reads guest physical memory: RAM directly, the rest through `io` as MMIO.
    pub fn read(&self, io: &dyn CpuIo, vp: u32, address: u64, data: &mut [u8]) {
        let mut done = 0;
        while done < data.len() {
            let a = address.wrapping_add(done as u64);
            let left = (data.len() - done) as u64;
            let chunk = &mut data[done..];
            match self.ram_run(a) {
                Some(run) => {
                    let n = run.min(left) as usize;
                    if self
                        .mem
                        .read_slice(&mut chunk[..n], GuestAddress(a))
                        .is_err()
                    {
                        chunk[..n].fill(0xff);
                    }
                    done += n;
                }
                None => {
                    let n = self.mmio_run(a).min(left) as usize;
                    io.mmio_read(vp, a, &mut chunk[..n]);
                    done += n;
                }
            }
        }
    }

    /// Writes guest physical memory: writable RAM directly; read-only slots and the rest go
    /// to `io` as MMIO writes.
    pub fn write(&self, io: &dyn CpuIo, vp: u32, address: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let a = address.wrapping_add(done as u64);
            let left = (data.len() - done) as u64;
            let chunk = &data[done..];
            match self.ram_run(a) {
                Some(run) => {
                    let n = run.min(left) as usize;
                    if self.is_read_only(a) {
                        io.mmio_write(vp, a, &chunk[..n]);
                    } else if self.mem.write_slice(&chunk[..n], GuestAddress(a)).is_err() {
                        tracing::debug!(address = a, "write to guest RAM failed");
                    }
                    done += n;
                }
                None => {
                    let n = self.mmio_run(a).min(left) as usize;
                    io.mmio_write(vp, a, &chunk[..n]);
                    done += n;
                }
            }
        }
    }
}

/// The [`x86emu::Bus`] that completes one exit: physical memory through [`GuestRam`] (MMIO
/// to [`CpuIo::mmio_read`]/[`CpuIo::mmio_write`]), ports to [`CpuIo::io_read`]/
/// [`CpuIo::io_write`].
pub struct ExitBus<'a> {
    /// Processor index passed to the callbacks.
    pub vp: u32,
    /// Guest memory.
    pub ram: &'a GuestRam,
    /// The machine.
    pub io: &'a dyn CpuIo,
    /// Time-stamp counter value reported to the instruction (RDTSC does not exit here).
    pub tsc: u64,
}

impl x86emu::Bus for ExitBus<'_> {
    fn read(&mut self, address: u64, data: &mut [u8]) {
        self.ram.read(self.io, self.vp, address, data);
    }

    fn write(&mut self, address: u64, data: &[u8]) {
        self.ram.write(self.io, self.vp, address, data);
    }

    fn io_in(&mut self, port: u16, data: &mut [u8]) {
        self.io.io_read(self.vp, port, data);
    }

    fn io_out(&mut self, port: u16, data: &[u8]) {
        self.io.io_write(self.vp, port, data);
    }

    fn tsc(&mut self) -> u64 {
        self.tsc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ram, Recorder};

    #[test]
    fn ram_rom_and_mmio_are_routed() {
        let r =
            GuestRam::from_slots(&[(ram(0, 0x1000), false), (ram(0x2000, 0x1000), true)]).unwrap();
        let io = Recorder::default();
        // A write straddling RAM's end: 2 bytes to RAM, 2 to MMIO at 0x1000.
        r.write(&io, 0, 0xffe, &[1, 2, 3, 4]);
        assert_eq!(io.take(), vec![("mmio_write".into(), 0x1000, vec![3, 4])]);
        let mut b = [0u8; 2];
        r.read(&io, 0, 0xffe, &mut b);
        assert_eq!(b, [1, 2]);
        // ROM: writes become MMIO writes, RAM keeps its bytes.
        r.write(&io, 0, 0x2000, &[9]);
        assert_eq!(io.take(), vec![("mmio_write".into(), 0x2000, vec![9])]);
        let mut b = [0xaau8; 1];
        r.read(&io, 0, 0x2000, &mut b);
        assert_eq!(b, [0]);
        // Unclaimed MMIO reads are all-ones (the recorder answers like an empty bus).
        let mut b = [0u8; 4];
        r.read(&io, 0, 0x1ffe, &mut b);
        assert_eq!(b, [0xff, 0xff, 0, 0], "2 bytes MMIO then 2 bytes of ROM");
        assert_eq!(io.take()[0].2.len(), 2);
    }

    #[test]
    fn overlapping_slots_are_refused() {
        assert!(
            GuestRam::from_slots(&[(ram(0, 0x2000), false), (ram(0x1000, 0x1000), false)]).is_err()
        );
        assert!(GuestRam::from_slots(&[]).is_ok());
    }
}
