//! The PC chipset: which devices exist, where they decode, and how their interrupts are wired.
//!
//! Split irqchip: PIC, PIT and IOAPIC are the `devices` models; ISA line n drives PIC input n
//! and IOAPIC pin n (no IRQ0→pin 2 override, matching SeaBIOS's tables without fw_cfg), and
//! the IOAPIC delivers through the partition's MSI injection. In-kernel irqchip: those three
//! live in the hypervisor and lines are driven with `set_irq_line`.

use crate::storage::{self, GuestRam};
use crate::storage::{DriveActivity, IdeSlot, ImageBackend};
use crate::vcpu::Control;
use crate::{MachineConfig, MachineEvent, OffReason};
use devices::bus::{lock, shared, Bus, BusKind, SharedDevice};
use devices::debugcon::{DebugCon, DEBUGCON_PORT};
use devices::dma::{Dma8237, DMA_PORT_RANGES};
use devices::dma_memory::DmaMemory;
use devices::fdc::{FDC_IRQ, FDC_PORT_RANGES};
use devices::framebuffer::SharedFramebuffer;
use devices::fw_cfg::{FwCfg, FW_CFG_PORT_RANGES};
use devices::i440fx::I440fx;
use devices::i8042::{I8042, I8042_PORT_RANGES, KEYBOARD_IRQ, MOUSE_IRQ};
use devices::ide::{Piix3Ide, IDE_PORT_RANGES, PRIMARY_IRQ, SECONDARY_IRQ};
use devices::input::InputHandle;
use devices::ioapic::{IoApic, MsiSink, IOAPIC_BASE, IOAPIC_SIZE};
use devices::pci::{PciRoot, PciWindows, PCI_PORT_RANGES};
use devices::pic::Pic;
use devices::piix3::Piix3;
use devices::piix4_pm::{Piix4Pm, PIIX4_PM_PORT_RANGES, SCI_IRQ};
use devices::pit::{Pit, PIT_PORT_RANGES};
use devices::router::IrqRouter;
use devices::rtc::{PcCmosConfig, Rtc, RTC_PORT_RANGES};
use devices::system_control::{ResetKind, ResetRequest, SystemControl, SYSTEM_CONTROL_PORT_RANGES};
use devices::uart::Uart;
use devices::vga::{
    StdVga, VBE_DISPI_PORT_RANGES, VGA_PORT_RANGES, VGA_WINDOW_BASE, VGA_WINDOW_SIZE,
};
use devices::{Clock, HostClock, IrqLine, LineSink, TimerWaker};
use hv::{CpuIo, IrqChipMode, MsiMessage, Partition};
use std::collections::HashSet;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// First serial port.
pub const COM1: (u16, u32) = (0x3f8, 4);

/// Interrupt lines into the hypervisor's own PIC/IOAPIC (in-kernel mode).
struct KernelLines(Arc<dyn Partition>);

impl LineSink for KernelLines {
    fn set_line(&self, line: u32, level: bool) {
        if let Err(e) = self.0.set_irq_line(line, level) {
            tracing::warn!(line, "cannot drive interrupt line: {e}");
        }
    }
}

/// IOAPIC messages into the partition.
struct PartitionMsi(Arc<dyn Partition>);

impl MsiSink for PartitionMsi {
    fn deliver(&self, msi: MsiMessage) {
        if let Err(e) = self.0.request_msi(msi) {
            tracing::warn!(?msi, "MSI delivery failed: {e}");
        }
    }
    fn route_changed(&self, pin: u8, msi: Option<MsiMessage>) {
        if let Err(e) = self.0.set_ioapic_route(pin, msi) {
            tracing::warn!(pin, "IOAPIC route update failed: {e}");
        }
    }
}

#[derive(Default)]
struct TimerState {
    woken: bool,
    shutdown: bool,
}

/// All chipset devices of one machine and their dispatch tables.
pub struct Chipset {
    ports: Bus,
    mmio: Bus,
    pci: Arc<Mutex<PciRoot>>,
    /// Enabled PCI BARs, for accesses no fixed range claims.
    pci_windows: PciWindows,
    vga: Arc<Mutex<StdVga>>,
    ide: Arc<Mutex<Piix3Ide>>,
    /// Where the CD-ROM drive sits, when there is one.
    cd_slot: Option<IdeSlot>,
    activity: DriveActivity,
    framebuffer: SharedFramebuffer,
    input: InputHandle,
    pic: Option<Arc<Mutex<Pic>>>,
    ioapic: Option<Arc<Mutex<IoApic>>>,
    uart: Arc<Mutex<Uart>>,
    devices: Vec<SharedDevice>,
    clock: Arc<dyn Clock>,
    timer: Arc<(Mutex<TimerState>, Condvar)>,
    unclaimed: Mutex<HashSet<(bool, u64)>>,
}

fn add_ports(bus: &mut Bus, ranges: &[(u16, u16)], dev: &SharedDevice) -> Result<(), String> {
    for &(start, len) in ranges {
        bus.insert(u64::from(start), u64::from(len), dev.clone())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

impl Chipset {
    /// Builds the chipset for `config`.
    pub(crate) fn new(
        config: &MachineConfig,
        memory: &crate::memory::MemoryMap,
        partition: Arc<dyn Partition>,
        events: Sender<MachineEvent>,
        control: Arc<Control>,
    ) -> Result<Self, String> {
        let clock: Arc<dyn Clock> = Arc::new(HostClock::new());
        let timer: Arc<(Mutex<TimerState>, Condvar)> = Arc::default();
        let t = timer.clone();
        let waker = TimerWaker::new(move || {
            lock(&t.0).woken = true;
            t.1.notify_one();
        });
        let weak: Weak<Control> = Arc::downgrade(&control);
        let mut ports = Bus::new(BusKind::Port);
        let mut mmio = Bus::new(BusKind::Mmio);
        let mut devices: Vec<SharedDevice> = Vec::new();

        let (sink, pic, ioapic): (Arc<dyn LineSink>, _, _) = match partition.irqchip_mode() {
            IrqChipMode::Split => {
                let w = weak.clone();
                let pic = shared(Pic::new(Arc::new(move |high| {
                    if high {
                        if let Some(c) = w.upgrade() {
                            c.kick_bsp();
                        }
                    }
                })));
                let ioapic = shared(IoApic::new(
                    IOAPIC_BASE,
                    Arc::new(PartitionMsi(partition.clone())),
                ));
                let d: SharedDevice = pic.clone();
                add_ports(&mut ports, &[(0x20, 2), (0xa0, 2), (0x4d0, 2)], &d)?;
                devices.push(d);
                let d: SharedDevice = ioapic.clone();
                mmio.insert(IOAPIC_BASE, IOAPIC_SIZE, d.clone())
                    .map_err(|e| e.to_string())?;
                devices.push(d);
                let router = IrqRouter::new(pic.clone(), ioapic.clone());
                (
                    Arc::new(router) as Arc<dyn LineSink>,
                    Some(pic),
                    Some(ioapic),
                )
            }
            IrqChipMode::InKernel => (
                Arc::new(KernelLines(partition.clone())) as Arc<dyn LineSink>,
                None,
                None,
            ),
        };
        let line = |n: u32| IrqLine::new(sink.clone(), n);

        if partition.irqchip_mode() == IrqChipMode::Split {
            let pit: SharedDevice = shared(Pit::new(clock.clone(), line(0), waker.clone()));
            add_ports(&mut ports, &PIT_PORT_RANGES, &pit)?;
            devices.push(pit);
        }

        let ram: Arc<dyn DmaMemory> =
            Arc::new(GuestRam::new(memory.guest.clone(), partition.clone()));
        let dma = shared(Dma8237::with_memory(ram.clone()));
        let d: SharedDevice = dma.clone();
        add_ports(&mut ports, &DMA_PORT_RANGES, &d)?;
        devices.push(d);

        let activity = DriveActivity::default();
        let fdc = storage::floppy_controller(config, line(FDC_IRQ), dma, waker.clone(), &activity)?;
        let floppies = fdc.cmos_drive_types();
        let fdc: SharedDevice = shared(fdc);
        add_ports(&mut ports, &FDC_PORT_RANGES, &fdc)?;
        devices.push(fdc);

        let (ide, cd_slot) = storage::ide_controller(
            config,
            ram,
            line(PRIMARY_IRQ),
            line(SECONDARY_IRQ),
            &activity,
        )?;
        let ide = shared(ide);
        let ide_device: SharedDevice = ide.clone();
        add_ports(&mut ports, &IDE_PORT_RANGES, &ide_device)?;

        let mut rtc = Rtc::with_host_time(clock.clone(), line(8), waker.clone());
        rtc.apply_pc_config(&PcCmosConfig {
            ram_below_4g: memory.below_4g,
            ram_above_4g: memory.above_4g,
            cpus: config.cpus,
            boot_order: config.boot_order.clone(),
            floppies,
        });
        let rtc: SharedDevice = shared(rtc);
        add_ports(&mut ports, &RTC_PORT_RANGES, &rtc)?;
        devices.push(rtc);

        let tx = events.clone();
        let uart = shared(Uart::new(
            "com1",
            COM1.0,
            line(COM1.1),
            Box::new(move |b| {
                let _ = tx.send(MachineEvent::Serial(vec![b]));
            }),
        ));
        let d: SharedDevice = uart.clone();
        add_ports(&mut ports, &[(COM1.0, 8)], &d)?;
        devices.push(d);

        let tx = events;
        let debugcon: SharedDevice = shared(DebugCon::new(
            DEBUGCON_PORT,
            Box::new(move |b| {
                let _ = tx.send(MachineEvent::DebugPort(vec![b]));
            }),
        ));
        add_ports(&mut ports, &[(DEBUGCON_PORT, 1)], &debugcon)?;
        devices.push(debugcon);

        let w = weak;
        let power: ResetRequest = Arc::new(move |kind| {
            let Some(c) = w.upgrade() else { return };
            match kind {
                ResetKind::PowerOff => c.power_off(OffReason::GuestPowerOff),
                _ => c.request_reset("guest request"),
            }
        });
        let sysctl: SharedDevice = shared(SystemControl::new(power.clone()));
        add_ports(&mut ports, &SYSTEM_CONTROL_PORT_RANGES, &sysctl)?;
        devices.push(sysctl);

        let keyboard = shared(I8042::new(
            line(KEYBOARD_IRQ),
            line(MOUSE_IRQ),
            power.clone(),
            clock.clone(),
            waker.clone(),
        ));
        let input = InputHandle::new(keyboard.clone());
        let d: SharedDevice = keyboard;
        add_ports(&mut ports, &I8042_PORT_RANGES, &d)?;
        devices.push(d);

        let vga_bios = match &config.vga_bios {
            Some(path) => std::fs::read(path)
                .map_err(|e| format!("cannot read the VGA BIOS {}: {e}", path.display()))?,
            None => Vec::new(),
        };
        let vga = shared(StdVga::new(vga_bios).with_clock(clock.clone()));
        let framebuffer = lock(&vga).framebuffer();
        let d: SharedDevice = vga.clone();
        add_ports(&mut ports, &VGA_PORT_RANGES, &d)?;
        add_ports(&mut ports, &VBE_DISPI_PORT_RANGES, &d)?;
        mmio.insert(VGA_WINDOW_BASE, VGA_WINDOW_SIZE, d.clone())
            .map_err(|e| e.to_string())?;

        // Boot settings for SeaBIOS as QEMU passes them: no interactive boot-menu wait.
        let mut fw_cfg = FwCfg::new(config.cpus.min(u32::from(u16::MAX)) as u16);
        fw_cfg.add_file("etc/show-boot-menu", 0u16.to_le_bytes().to_vec())?;
        let fw_cfg: SharedDevice = shared(fw_cfg);
        add_ports(&mut ports, &FW_CFG_PORT_RANGES, &fw_cfg)?;
        devices.push(fw_cfg);

        let pm: SharedDevice = shared(Piix4Pm::new(clock.clone(), line(SCI_IRQ), power));
        add_ports(&mut ports, &PIIX4_PM_PORT_RANGES, &pm)?;

        let mut root = PciRoot::new();
        for (dev, func, d) in [
            (0, 0, shared(I440fx::new()) as SharedDevice),
            (1, 0, shared(Piix3::new()) as SharedDevice),
            (1, 1, ide_device),
            (1, 3, pm.clone()),
            (2, 0, vga.clone() as SharedDevice),
        ] {
            root.register(dev, func, d.clone())
                .map_err(|e| e.to_string())?;
            devices.push(d);
        }
        let pci_windows = root.windows();
        let root = shared(root);
        let pci: SharedDevice = root.clone();
        add_ports(&mut ports, &PCI_PORT_RANGES, &pci)?;
        devices.push(pci);

        Ok(Self {
            ports,
            mmio,
            pci: root,
            pci_windows,
            vga,
            ide,
            cd_slot,
            activity,
            framebuffer,
            input,
            pic,
            ioapic,
            uart,
            devices,
            clock,
            timer,
            unclaimed: Mutex::default(),
        })
    }

    /// Every device's saved state (the machine must be paused).
    pub fn save_devices(&self) -> Vec<devices::saved_state::SavedState> {
        let mut out = Vec::new();
        for d in &self.devices {
            let mut d = lock(d);
            if let Some(sr) = d.save_restore() {
                out.push(sr.save());
            }
        }
        out
    }

    /// Restores every device from `states` (matched by device name); refuses states for
    /// devices this machine lacks and devices without a state.
    pub fn restore_devices(
        &self,
        states: &[devices::saved_state::SavedState],
    ) -> Result<(), crate::saved::SavedStateError> {
        use crate::saved::SavedStateError;
        let mut used = vec![false; states.len()];
        for d in &self.devices {
            let mut d = lock(d);
            let name = d.name().to_string();
            let Some(sr) = d.save_restore() else { continue };
            let Some(i) = states
                .iter()
                .enumerate()
                .position(|(i, st)| !used[i] && st.device == name)
            else {
                return Err(SavedStateError::Mismatch(format!(
                    "it has no state for the {name} device"
                )));
            };
            used[i] = true;
            sr.restore(&states[i])?;
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(SavedStateError::Mismatch(format!(
                "it holds state for a {} device this VM does not have",
                states[i].device
            )));
        }
        lock(&self.pci).update_windows();
        Ok(())
    }

    /// Switches the hard disks (in configuration order) to the images at `paths`, which must
    /// have the same sizes and contents (new snapshot layers); the old images are flushed and
    /// closed. Call it with the machine paused.
    pub fn switch_disks(&self, paths: &[std::path::PathBuf]) -> Result<(), String> {
        let (slots, _) =
            storage::ide_layout(paths.len(), self.cd_slot.is_some()).map_err(|e| e.to_string())?;
        // Open every image before switching any, so that a bad one leaves all disks as they were.
        let images = paths
            .iter()
            .map(|path| {
                ImageBackend::open(path, false)
                    .map(|i| i.counting(&self.activity.disk))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ide = lock(&self.ide);
        for ((image, path), &(channel, unit)) in images.into_iter().zip(paths).zip(&slots) {
            ide.replace_disk_backend(channel, unit, Box::new(image))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// The drives' activity counters.
    pub fn activity(&self) -> DriveActivity {
        self.activity.clone()
    }

    /// Puts the image at `path` into the CD-ROM drive, or empties the drive with `None`.
    pub fn change_cdrom(&self, path: Option<&std::path::Path>) -> Result<(), String> {
        let (channel, unit) = self
            .cd_slot
            .ok_or("this machine has no CD-ROM drive: all four IDE slots hold disks")?;
        let mut ide = lock(&self.ide);
        match path {
            Some(path) => {
                let image = ImageBackend::open(path, true)
                    .map_err(|e| e.to_string())?
                    .counting(&self.activity.cdrom);
                ide.insert_media(channel, unit, Box::new(image))
                    .map_err(|e| e.to_string())?;
            }
            None => {
                ide.eject(channel, unit).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// The vCPU-side view of the chipset.
    pub fn io(&self) -> &dyn CpuIo {
        self
    }

    /// Puts every device back into its power-on state.
    pub fn reset(&self) {
        for d in &self.devices {
            lock(d).reset();
        }
        lock(&self.pci).update_windows();
        let (m, cv) = &*self.timer;
        lock(m).woken = true;
        cv.notify_one();
    }

    /// The screen as the display device last drew it.
    pub fn framebuffer(&self) -> SharedFramebuffer {
        self.framebuffer.clone()
    }

    /// Brings the framebuffer up to date with display memory now (the timer thread does it at
    /// 60 Hz; a screenshot must not miss the last writes).
    pub fn render_display(&self) {
        lock(&self.vga).render(self.clock.now_ns());
    }

    /// The characters of a text-mode screen, one string per row (`None` in graphics modes).
    pub fn text_screen(&self) -> Option<Vec<String>> {
        lock(&self.vga).text_screen()
    }

    /// Keyboard and mouse input into the PS/2 controller.
    pub fn input(&self) -> InputHandle {
        self.input.clone()
    }

    /// Queues bytes for the first serial port's receiver.
    pub fn serial_input(&self, bytes: &[u8]) {
        lock(&self.uart).push_input(bytes);
    }

    /// Stops the timer thread.
    pub fn shutdown(&self) {
        let (m, cv) = &*self.timer;
        lock(m).shutdown = true;
        cv.notify_one();
    }

    /// Runs device deadlines until [`Chipset::shutdown`].
    pub fn run_timers(&self) {
        let (m, cv) = &*self.timer;
        loop {
            let now = self.clock.now_ns();
            let mut next: Option<u64> = None;
            for d in &self.devices {
                let mut d = lock(d);
                if let Some(p) = d.poll() {
                    if let Some(t) = p.poll(now) {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                }
            }
            let mut g = lock(m);
            if g.shutdown {
                return;
            }
            if !g.woken {
                let wait = next.map_or(Duration::from_millis(100), |t| {
                    Duration::from_nanos(t.saturating_sub(self.clock.now_ns()))
                });
                g = cv
                    .wait_timeout(g, wait)
                    .map(|r| r.0)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            g.woken = false;
            if g.shutdown {
                return;
            }
        }
    }

    fn note_unclaimed(&self, mmio: bool, address: u64, write: bool) {
        if lock(&self.unclaimed).insert((mmio, address)) {
            let kind = if mmio { "MMIO" } else { "port" };
            let dir = if write { "write to" } else { "read of" };
            tracing::debug!("unclaimed {kind} {dir} {address:#x}");
        }
    }
}

impl CpuIo for Chipset {
    fn io_read(&self, _vp: u32, port: u16, data: &mut [u8]) {
        if !self.ports.read(u64::from(port), data) && !self.pci_windows.io_read(port, data) {
            data.fill(0xff);
            self.note_unclaimed(false, u64::from(port), false);
        }
    }

    fn io_write(&self, _vp: u32, port: u16, data: &[u8]) {
        if !self.ports.write(u64::from(port), data) && !self.pci_windows.io_write(port, data) {
            self.note_unclaimed(false, u64::from(port), true);
        }
    }

    fn mmio_read(&self, _vp: u32, address: u64, data: &mut [u8]) {
        if !self.mmio.read(address, data) && !self.pci_windows.mmio_read(address, data) {
            data.fill(0xff);
            self.note_unclaimed(true, address, false);
        }
    }

    fn mmio_write(&self, _vp: u32, address: u64, data: &[u8]) {
        if !self.mmio.write(address, data) && !self.pci_windows.mmio_write(address, data) {
            self.note_unclaimed(true, address, true);
        }
    }

    fn eoi(&self, _vp: u32, vector: u8) {
        if let Some(io) = &self.ioapic {
            lock(io).end_of_interrupt(vector);
        }
    }

    fn pic_interrupt_pending(&self, vp: u32) -> bool {
        vp == 0
            && self
                .pic
                .as_ref()
                .is_some_and(|p| lock(p).interrupt_pending())
    }

    fn pic_acknowledge(&self, vp: u32) -> Option<u8> {
        if vp != 0 {
            return None;
        }
        self.pic.as_ref().and_then(|p| lock(p).acknowledge())
    }
}
