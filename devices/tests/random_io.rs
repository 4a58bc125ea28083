//! A guest can never crash the VMM through a device: random sequences of port, MMIO and PCI
//! configuration accesses of every size, with the clock moving and timers polled, never panic.

use devices::bus::{shared, Bus, BusKind, SharedDevice};
use devices::irq::RecordingSink;
use devices::{Clock, IrqLine, ManualClock, TimerWaker};
use hv::MsiMessage;
use std::sync::Arc;

struct NoMsi;
impl devices::ioapic::MsiSink for NoMsi {
    fn deliver(&self, _: MsiMessage) {}
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_accesses_to_every_device() {
    let clock = ManualClock::new();
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let sink = Arc::new(RecordingSink::default());
    let line = |n| IrqLine::new(sink.clone(), n);
    let power: devices::system_control::ResetRequest = Arc::new(|_| {});
    let mut ports = Bus::new(BusKind::Port);
    let mut mmio = Bus::new(BusKind::Mmio);
    let mut all: Vec<SharedDevice> = Vec::new();
    let mut add = |ranges: &[(u16, u16)], d: SharedDevice| {
        for &(s, l) in ranges {
            ports.insert(u64::from(s), u64::from(l), d.clone()).unwrap();
        }
        all.push(d);
    };
    add(
        &[(0x20, 2), (0xa0, 2), (0x4d0, 2)],
        shared(devices::pic::Pic::without_notifier()),
    );
    add(
        &devices::pit::PIT_PORT_RANGES,
        shared(devices::pit::Pit::new(
            c.clone(),
            line(0),
            TimerWaker::noop(),
        )),
    );
    add(
        &devices::rtc::RTC_PORT_RANGES,
        shared(devices::rtc::Rtc::with_host_time(
            c.clone(),
            line(8),
            TimerWaker::noop(),
        )),
    );
    add(
        &[(0x3f8, 8)],
        shared(devices::uart::Uart::new(
            "com1",
            0x3f8,
            line(4),
            Box::new(|_| {}),
        )),
    );
    add(
        &[(0x402, 1)],
        shared(devices::debugcon::DebugCon::new(0x402, Box::new(|_| {}))),
    );
    add(
        &devices::system_control::SYSTEM_CONTROL_PORT_RANGES,
        shared(devices::system_control::SystemControl::new(power.clone())),
    );
    add(
        &devices::dma::DMA_PORT_RANGES,
        shared(devices::dma::Dma8237::new()),
    );
    add(
        &devices::fw_cfg::FW_CFG_PORT_RANGES,
        shared(devices::fw_cfg::FwCfg::new(2)),
    );
    let pm: SharedDevice = shared(devices::piix4_pm::Piix4Pm::new(c.clone(), line(9), power));
    add(&devices::piix4_pm::PIIX4_PM_PORT_RANGES, pm.clone());
    let mut root = devices::pci::PciRoot::new();
    root.register(0, 0, shared(devices::i440fx::I440fx::new()))
        .unwrap();
    root.register(1, 0, shared(devices::piix3::Piix3::new()))
        .unwrap();
    root.register(1, 3, pm).unwrap();
    add(&devices::pci::PCI_PORT_RANGES, shared(root));
    let ioapic: SharedDevice = shared(devices::ioapic::IoApic::new(
        devices::ioapic::IOAPIC_BASE,
        Arc::new(NoMsi),
    ));
    mmio.insert(
        devices::ioapic::IOAPIC_BASE,
        devices::ioapic::IOAPIC_SIZE,
        ioapic.clone(),
    )
    .unwrap();
    all.push(ioapic);

    let interesting: [u16; 24] = [
        0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x70, 0x71, 0x3f8,
        0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0xcf8, 0xcfc, 0x510, 0x511, 0xb004,
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..400_000 {
        let r = rng.next();
        let size = [1usize, 2, 4][(r % 3) as usize];
        let mut data = (rng.next() as u32).to_le_bytes();
        match (r >> 8) % 8 {
            0..=4 => {
                let port = if r & 0x10000 != 0 {
                    interesting[((r >> 20) % interesting.len() as u64) as usize]
                        .wrapping_add(((r >> 32) % 4) as u16)
                } else {
                    (r >> 20) as u16
                };
                if r & 0x20000 != 0 {
                    ports.write(u64::from(port), &data[..size]);
                } else {
                    ports.read(u64::from(port), &mut data[..size]);
                }
            }
            5 | 6 => {
                let addr = devices::ioapic::IOAPIC_BASE + ((r >> 20) % 0x1000);
                if r & 0x20000 != 0 {
                    mmio.write(addr, &data[..size]);
                } else {
                    mmio.read(addr, &mut data[..size]);
                }
            }
            _ => {
                clock.advance(r >> 44);
                let now = clock.now_ns();
                for d in &all {
                    let mut d = d.lock().unwrap();
                    if let Some(p) = d.poll() {
                        p.poll(now);
                    }
                    if r & 0xff == 0 {
                        d.reset();
                    }
                }
            }
        }
    }
}
