//! Runs one conformance guest on a backend and records what it did.

use crate::guest::{self, GuestImage, Mode};
use crate::BackendFactory;
use devices::pic::Pic;
use devices::PortIo;
use hv::{
    CpuIo, IrqChipMode, Partition, Segment, StopHandle, StopReason, VirtualProcessor, VpState,
};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestRegionMmap, MemoryRegionAddress};

/// Longest a case may run before the harness stops it and fails.
const WATCHDOG: Duration = Duration::from_secs(30);

/// One access the guest made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoEvent {
    /// Port write (harness control ports excluded).
    Out {
        /// Port.
        port: u16,
        /// Access size in bytes.
        size: usize,
        /// Value written.
        value: u32,
    },
    /// MMIO write.
    MmioWrite {
        /// Guest-physical address.
        address: u64,
        /// Access size in bytes.
        size: usize,
        /// Value written.
        value: u64,
    },
}

/// How a run ended and what the guest did during it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// Why `run` returned.
    pub reason: StopReason,
    /// Port and MMIO writes in order.
    pub events: Vec<IoEvent>,
}

/// The harness's devices: a recording port/MMIO space, control ports and, for the split
/// irqchip, the user-space 8259 pair.
struct TestIo {
    events: Mutex<Vec<IoEvent>>,
    counter: AtomicU8,
    signalled: AtomicBool,
    pic: Mutex<Pic>,
    stop: OnceLock<Arc<StopHandle>>,
}

impl TestIo {
    fn request(&self, reason: StopReason) {
        if let Some(s) = self.stop.get() {
            s.request_stop(reason);
        }
    }
}

impl CpuIo for TestIo {
    fn io_read(&self, _vp: u32, port: u16, data: &mut [u8]) {
        match port {
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => {
                self.pic.lock().unwrap().io_read(port, data)
            }
            0x12 => data.fill(0x40 + self.counter.fetch_add(1, Ordering::SeqCst)),
            0x16 => {
                let v = 0xdead_beefu32.to_le_bytes();
                for (d, s) in data.iter_mut().zip(v.iter().cycle()) {
                    *d = *s;
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn io_write(&self, _vp: u32, port: u16, data: &[u8]) {
        let mut v = [0u8; 4];
        v[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
        let value = u32::from_le_bytes(v);
        match port {
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => {
                self.pic.lock().unwrap().io_write(port, data)
            }
            0xf0 => self.signalled.store(true, Ordering::SeqCst),
            0xf4 => self.request(StopReason::PowerOff),
            0xcf9 if value & 4 != 0 => self.request(StopReason::Reset),
            _ => self.events.lock().unwrap().push(IoEvent::Out {
                port,
                size: data.len(),
                value,
            }),
        }
    }

    fn mmio_read(&self, _vp: u32, address: u64, data: &mut [u8]) {
        if address >= guest::MMIO_BASE + 8 && address + data.len() as u64 <= guest::MMIO_BASE + 12 {
            let off = (address - guest::MMIO_BASE - 8) as usize;
            data.copy_from_slice(&0x1234_5678u32.to_le_bytes()[off..off + data.len()]);
        } else {
            data.fill(0xff);
        }
    }

    fn mmio_write(&self, _vp: u32, address: u64, data: &[u8]) {
        let mut v = [0u8; 8];
        v[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        self.events.lock().unwrap().push(IoEvent::MmioWrite {
            address,
            size: data.len(),
            value: u64::from_le_bytes(v),
        });
    }

    fn pic_interrupt_pending(&self, vp: u32) -> bool {
        vp == 0 && self.pic.lock().unwrap().interrupt_pending()
    }

    fn pic_acknowledge(&self, vp: u32) -> Option<u8> {
        if vp != 0 {
            return None;
        }
        self.pic.lock().unwrap().acknowledge()
    }
}

/// One guest on one backend: its partition, memory, processor and recording devices.
pub struct Harness {
    partition: Arc<dyn Partition>,
    ram: Arc<GuestRegionMmap>,
    vp: Mutex<Box<dyn VirtualProcessor>>,
    io: TestIo,
    image: GuestImage,
}

impl Harness {
    /// Builds the VM: 640 KiB RAM with the guest and its tables, a 64 KiB read-only ROM at
    /// 4 GiB − 64 KiB, one processor at 0000:1000 in real mode.
    pub fn new(factory: &dyn BackendFactory, mode: Mode, image: GuestImage) -> Self {
        let partition = factory.create(1).expect("create partition");
        let ram = Arc::new(
            GuestRegionMmap::from_range(GuestAddress(0), guest::RAM_SIZE as usize, None)
                .expect("allocate RAM"),
        );
        let rom = Arc::new(
            GuestRegionMmap::from_range(GuestAddress(guest::ROM_BASE), 0x1_0000, None)
                .expect("allocate ROM"),
        );
        for (addr, bytes) in &image.chunks {
            if *addr >= guest::ROM_BASE {
                rom.write_slice(bytes, MemoryRegionAddress(addr - guest::ROM_BASE))
                    .expect("rom");
            }
        }
        partition
            .map_memory(0, ram.clone(), false)
            .expect("map RAM");
        partition.map_memory(1, rom, true).expect("map ROM");
        let vp = partition.create_vp(0).expect("create vp");
        let io = TestIo {
            events: Mutex::default(),
            counter: AtomicU8::new(0),
            signalled: AtomicBool::new(false),
            pic: Mutex::new(Pic::without_notifier()),
            stop: OnceLock::new(),
        };
        let _ = io.stop.set(vp.stop_handle());
        let h = Self {
            partition,
            ram,
            vp: Mutex::new(vp),
            io,
            image,
        };
        h.write_tables(mode);
        for (addr, bytes) in &h.image.chunks {
            if *addr < guest::ROM_BASE {
                h.write(*addr, bytes);
            }
        }
        let mut s = h.vp().state().expect("get state");
        s.regs.rip = 0x1000;
        s.regs.rflags = 2;
        s.sregs.cs = Segment::real_mode(0, true);
        for seg in [
            &mut s.sregs.ds,
            &mut s.sregs.es,
            &mut s.sregs.ss,
            &mut s.sregs.fs,
            &mut s.sregs.gs,
        ] {
            *seg = Segment::real_mode(0, false);
        }
        h.vp().set_state(&s).expect("set state");
        h
    }

    fn vp(&self) -> std::sync::MutexGuard<'_, Box<dyn VirtualProcessor>> {
        self.vp.lock().unwrap()
    }

    fn write_tables(&self, mode: Mode) {
        // GDT: null, 32-bit code, 32-bit data, 64-bit code.
        let gdt: [u64; 4] = [
            0,
            0x00cf_9a00_0000_ffff,
            0x00cf_9200_0000_ffff,
            0x00af_9a00_0000_ffff,
        ];
        let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
        self.write(guest::GDT, &bytes);
        let mut gdtr = vec![];
        gdtr.extend_from_slice(&((bytes.len() - 1) as u16).to_le_bytes());
        gdtr.extend_from_slice(&(guest::GDT as u32).to_le_bytes());
        self.write(guest::GDTR, &gdtr);
        self.write(guest::NULL_IDTR, &[0; 6]);
        // Identity map of the first 1 GiB with 2 MiB pages.
        let pml4 = guest::PAGE_TABLES;
        self.write_u64(pml4, (pml4 + 0x1000) | 3);
        self.write_u64(pml4 + 0x1000, (pml4 + 0x2000) | 3);
        for i in 0..512u64 {
            self.write_u64(pml4 + 0x2000 + i * 8, (i << 21) | 0x83);
        }
        let Some(&handler) = self.image.symbols.get("handler") else {
            return;
        };
        let v = u64::from(guest::PIC_VECTOR);
        match mode {
            Mode::Real => {
                self.write(v * 4, &(handler as u16).to_le_bytes());
                self.write(v * 4 + 2, &0u16.to_le_bytes());
            }
            Mode::Protected32 => {
                let gate =
                    (handler & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((handler >> 16) << 48);
                self.write_u64(guest::IDT32 + v * 8, gate);
                let mut idtr = ((v * 8 + 7) as u16).to_le_bytes().to_vec();
                idtr.extend_from_slice(&(guest::IDT32 as u32).to_le_bytes());
                self.write(guest::IDTR, &idtr);
            }
            Mode::Long64 => {
                let low = (handler & 0xffff)
                    | (0x18 << 16)
                    | (0x8e00u64 << 32)
                    | (((handler >> 16) & 0xffff) << 48);
                self.write_u64(guest::IDT64 + v * 16, low);
                self.write_u64(guest::IDT64 + v * 16 + 8, handler >> 32);
                let mut idtr = ((v * 16 + 15) as u16).to_le_bytes().to_vec();
                idtr.extend_from_slice(&guest::IDT64.to_le_bytes());
                self.write(guest::IDTR, &idtr);
            }
        }
    }

    /// Copies `bytes` into guest RAM.
    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.ram
            .write_slice(bytes, MemoryRegionAddress(addr))
            .expect("write RAM");
    }

    fn write_u64(&self, addr: u64, v: u64) {
        self.write(addr, &v.to_le_bytes());
    }

    /// Reads `len` bytes of guest RAM.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.ram
            .read_slice(&mut v, MemoryRegionAddress(addr))
            .expect("read RAM");
        v
    }

    /// Reads a little-endian dword of guest RAM.
    pub fn read_u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.read(addr, 4).try_into().expect("4 bytes"))
    }

    /// Address of a label exported by the guest.
    pub fn symbol(&self, name: &str) -> u64 {
        *self
            .image
            .symbols
            .get(name)
            .unwrap_or_else(|| panic!("no symbol {name}"))
    }

    /// Current processor state.
    pub fn state(&self) -> VpState {
        self.vp().state().expect("get state")
    }

    /// Resets the processor to its power-on state and returns that state.
    pub fn reset_vp(&self) -> VpState {
        self.vp().reset().expect("reset");
        self.state()
    }

    /// Runs with `during` called on a second thread while the processor runs.
    fn run_with(&self, during: impl FnOnce(&Arc<StopHandle>) + Send) -> RunResult {
        self.io.events.lock().unwrap().clear();
        let stop = self.vp().stop_handle();
        let done = AtomicBool::new(false);
        let mut guard = self.vp();
        let vp: &mut dyn VirtualProcessor = &mut **guard;
        let reason = std::thread::scope(|s| {
            let io = &self.io;
            let runner = s.spawn(move || vp.run(io));
            let watchdog = s.spawn(|| {
                let start = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    if start.elapsed() > WATCHDOG {
                        stop.request_stop(StopReason::Stopped);
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                false
            });
            during(&stop);
            let r = runner.join().expect("vp thread");
            done.store(true, Ordering::SeqCst);
            assert!(
                !watchdog.join().expect("watchdog"),
                "guest did not finish in {WATCHDOG:?}"
            );
            r
        });
        drop(guard);
        RunResult {
            reason: reason.expect("run"),
            events: std::mem::take(&mut *self.io.events.lock().unwrap()),
        }
    }

    /// Runs until the processor stops on its own.
    pub fn run(&self) -> RunResult {
        self.run_with(|_| {})
    }

    fn wait_signalled(&self) {
        let start = Instant::now();
        while !self.io.signalled.load(Ordering::SeqCst) && start.elapsed() < WATCHDOG {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs until the guest signals on port 0xF0 and halts; then stops it and returns the state.
    pub fn run_until_halted(&self) -> (RunResult, VpState) {
        for _ in 0..50 {
            let r = self.run_with(|stop| {
                self.wait_signalled();
                std::thread::sleep(Duration::from_millis(20));
                stop.request_stop(StopReason::Stopped);
            });
            let s = self.state();
            if s.activity == hv::ActivityState::Halted || r.reason != StopReason::Stopped {
                return (r, s);
            }
        }
        let s = self.state();
        (
            RunResult {
                reason: StopReason::Stopped,
                events: vec![],
            },
            s,
        )
    }

    /// Runs; once the guest signals on port 0xF0, pulses ISA interrupt line `irq` — on the
    /// user-space PIC (then kicks the processor) or on the hypervisor's own PIC.
    pub fn run_with_interrupt(&self, irq: u8) -> RunResult {
        self.run_with(|stop| {
            self.wait_signalled();
            std::thread::sleep(Duration::from_millis(10));
            if self.partition.irqchip_mode() == IrqChipMode::InKernel {
                self.partition
                    .set_irq_line(u32::from(irq), true)
                    .expect("raise line");
                self.partition
                    .set_irq_line(u32::from(irq), false)
                    .expect("lower line");
            } else {
                let mut pic = self.io.pic.lock().unwrap();
                pic.set_irq(irq, true);
                pic.set_irq(irq, false);
                drop(pic);
                stop.kick();
            }
        })
    }
}
