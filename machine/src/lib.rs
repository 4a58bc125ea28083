//! The motherboard: assembles a PC from a [`MachineConfig`] on a hypervisor partition and runs
//! it.
//!
//! It owns the memory map (RAM, the BIOS ROM and its low alias), the chipset devices and their
//! port/MMIO dispatch, interrupt routing (user-space PIC/IOAPIC/PIT in split mode, the
//! hypervisor's in in-kernel mode), one thread per vCPU, a timer thread for device deadlines,
//! the lifecycle (start, pause, resume, reset, power off) and an event stream for the UI.
#![forbid(unsafe_code)]

pub mod acpi;
pub mod chipset;
pub mod firmware;
pub mod linux;
pub mod memory;
pub mod saved;
pub mod screenshot;
pub mod storage;
mod vcpu;

pub use devices::rtc::BootDevice;
pub use hv::IrqChipMode;
pub use linux::LinuxBoot;

use chipset::Chipset;
pub use devices::framebuffer::{Framebuffer, SharedFramebuffer};
pub use devices::input::{InputHandle, Key, KeyEvent, MouseButtons, MouseEvent};
use hv::{Partition, PartitionConfig};
use memory::{BiosRom, MemoryMap};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
pub use storage::{DriveActivity, IoCounter};
use vcpu::Control;

/// Smallest and largest guest memory accepted, in MiB.
pub const MEMORY_RANGE_MIB: (u64, u64) = (16, 1 << 20);
/// Largest vCPU count accepted (the hypervisor may allow fewer).
pub const MAX_CPUS: u32 = 255;

/// Which CPU backend runs the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The best one available on this host.
    #[default]
    Auto,
    /// Linux KVM.
    Kvm,
    /// Windows Hypervisor Platform.
    Whp,
    /// The software CPU.
    Emu,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub cpus: u32,
    /// BIOS image; `None` searches the usual system paths.
    pub firmware: Option<PathBuf>,
    /// Direct Linux boot instead of firmware.
    pub linux: Option<LinuxBoot>,
    /// Boot device order recorded in CMOS for the firmware.
    pub boot_order: Vec<BootDevice>,
    /// Interrupt controller placement.
    pub irqchip: IrqChipMode,
    /// Hard disk images (raw, VHD or qcow2), in IDE order: primary master, primary slave,
    /// secondary slave (and secondary master when there is no CD-ROM image).
    pub disks: Vec<PathBuf>,
    /// CD-ROM image in the secondary master drive (the drive exists, empty, without one).
    pub cdrom: Option<PathBuf>,
    /// Floppy image in drive A.
    pub floppy: Option<PathBuf>,
    /// The standard VGA's option ROM (`vgabios-stdvga.bin`); `None` finds it next to the
    /// firmware or in the usual system folders, and without one the VGA has no ROM.
    pub vga_bios: Option<PathBuf>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            memory_mib: 128,
            cpus: 1,
            firmware: None,
            linux: None,
            boot_order: vec![BootDevice::Cdrom, BootDevice::Disk, BootDevice::Floppy],
            irqchip: IrqChipMode::Split,
            disks: Vec::new(),
            cdrom: None,
            floppy: None,
            vga_bios: None,
        }
    }
}

/// Errors setting up or running a machine; each message names the file or value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// Memory size out of range.
    #[error("--memory {0} MiB is out of range: use {min} to {max} MiB", min = MEMORY_RANGE_MIB.0, max = MEMORY_RANGE_MIB.1)]
    MemorySize(u64),
    /// CPU count out of range.
    #[error("--cpus {0} is out of range: use 1 to {MAX_CPUS}")]
    CpuCount(u32),
    /// The chosen backend cannot run here.
    #[error("{0}")]
    Backend(String),
    /// Hypervisor failure.
    #[error(transparent)]
    Hv(#[from] hv::HvError),
    /// Firmware problem.
    #[error(transparent)]
    Firmware(#[from] firmware::FirmwareError),
    /// Direct-boot problem.
    #[error(transparent)]
    Linux(#[from] linux::LinuxBootError),
    /// Guest memory problem.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// Device assembly problem (a bug, reported rather than panicking).
    #[error("device setup: {0}")]
    Devices(String),
    /// Saved state could not be written or used.
    #[error(transparent)]
    SavedState(#[from] saved::SavedStateError),
    /// Removable media could not be changed (the message names the image).
    #[error("{0}")]
    Media(String),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// Coarse machine state, as the UI shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Built, not started.
    Created,
    /// Guest code is running.
    Running,
    /// All vCPUs are stopped; devices keep their state.
    Paused,
    /// The machine is off (guest power-off, user power-off, or a fatal error).
    Off,
}

/// Why the machine turned off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffReason {
    /// The guest powered off.
    GuestPowerOff,
    /// The user (or the embedding program) powered it off.
    Requested,
    /// A vCPU could not continue.
    Error(String),
}

/// Things the machine tells its user, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineEvent {
    /// Bytes the guest sent out of the first serial port.
    Serial(Vec<u8>),
    /// Bytes the guest wrote to the debug port 0x402 (SeaBIOS's log).
    DebugPort(Vec<u8>),
    /// The run state changed.
    State(RunState),
    /// The machine reset (guest request or triple fault).
    Reset {
        /// "guest request", "triple fault" or "user request".
        cause: &'static str,
    },
    /// The machine turned off.
    Off(OffReason),
}

/// Creates a partition on the requested backend. `Auto` means the host's hypervisor (KVM on
/// Linux, WHP on Windows); callers that want the software-CPU fallback use
/// [`create_partition_auto`], which explains the fallback to the user.
pub fn create_partition(
    backend: Backend,
    cpus: u32,
    irqchip: IrqChipMode,
) -> Result<Arc<dyn Partition>, MachineError> {
    let config = PartitionConfig {
        vcpu_count: cpus,
        irqchip,
    };
    match backend {
        #[cfg(target_os = "linux")]
        Backend::Auto | Backend::Kvm => {
            let kvm = backend_kvm::KvmHypervisor::open()?;
            Ok(Arc::new(kvm.create_partition(&config)?))
        }
        #[cfg(not(target_os = "linux"))]
        Backend::Kvm => Err(MachineError::Backend(
            "KVM exists only on Linux hosts".into(),
        )),
        #[cfg(not(target_os = "linux"))]
        Backend::Auto => Ok(backend_whp::create_partition(&config)?),
        Backend::Whp => Ok(backend_whp::create_partition(&config)?),
        Backend::Emu => Ok(Arc::new(
            backend_emu::EmuHypervisor.create_partition(&config)?,
        )),
    }
}

/// Whether a device is a model of real hardware or a paravirtual (synthetic) one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A model of real PC hardware that any guest drives without extra drivers.
    Emulated,
    /// A paravirtual device the guest uses once its driver is up.
    Synthetic,
}

/// One device the guest currently uses for a job, as the UI lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveDevice {
    /// The job: "Display", "Storage", "Keyboard and mouse".
    pub role: &'static str,
    /// The device model.
    pub name: &'static str,
    /// Emulated or synthetic.
    pub kind: DeviceKind,
}

/// Why this host's KVM cannot run unmodified guests although it opens, if that is so.
///
/// KVM-PVM (the `kvm_pvm` module without `kvm_intel`/`kvm_amd`) runs only paravirtualized
/// guests: firmware POST works, bootloaders and ordinary kernels stop in its instruction
/// emulator.
pub fn kvm_limitation() -> Option<String> {
    let module = |name: &str| std::path::Path::new("/sys/module").join(name).exists();
    (cfg!(target_os = "linux") && module("kvm_pvm") && !module("kvm_intel") && !module("kvm_amd"))
        .then(|| {
            "this host's KVM is KVM-PVM, which runs only paravirtualized guests; with VT-x or \
             AMD-V enabled in the firmware setup, KVM runs VMs at full speed"
                .to_string()
        })
}

/// Creates a partition for `Backend::Auto`: the host's hypervisor (KVM on Linux, WHP on
/// Windows) when it can run full guests here, the software CPU otherwise, with a one-line note saying why and how to get hardware virtualization.
pub fn create_partition_auto(
    cpus: u32,
    irqchip: IrqChipMode,
) -> Result<(Arc<dyn Partition>, Option<String>), MachineError> {
    let (name, limitation) = if cfg!(windows) {
        ("the Windows Hypervisor Platform", None)
    } else {
        ("KVM", kvm_limitation())
    };
    let why = match create_partition(Backend::Auto, cpus, irqchip) {
        Ok(p) => match limitation {
            None => return Ok((p, None)),
            Some(why) => why,
        },
        Err(e) => format!("{name} is not usable: {e}"),
    };
    let partition = create_partition(Backend::Emu, cpus, IrqChipMode::Split)?;
    Ok((
        partition,
        Some(format!("using the software CPU (slower) because {why}")),
    ))
}

struct Display {
    framebuffer: SharedFramebuffer,
    input: InputHandle,
}

/// A PC.
pub struct Machine {
    config: MachineConfig,
    partition: Arc<dyn Partition>,
    control: Arc<Control>,
    chipset: Arc<Chipset>,
    display: Display,
    events: Option<Receiver<MachineEvent>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Machine {
    /// Builds the machine on `partition` (created for `config.cpus` processors).
    pub fn new(config: MachineConfig, partition: Arc<dyn Partition>) -> Result<Self, MachineError> {
        Self::build(config, partition, None)
    }

    /// Builds the machine from the saved state in `dir` (see [`Machine::save_state`]) instead
    /// of powering it on: RAM is mapped privately from the RAM file, devices and processors
    /// continue where they were. `config` must describe the same machine (memory, CPUs,
    /// drives, with the disks as they were when the state was saved).
    pub fn restore(
        config: MachineConfig,
        partition: Arc<dyn Partition>,
        dir: &std::path::Path,
    ) -> Result<Self, MachineError> {
        let state = saved::MachineStateV1::read(&dir.join(saved::STATE_FILE))?;
        if state.memory_mib != config.memory_mib {
            return Err(saved::SavedStateError::Mismatch(format!(
                "it has {} MiB of memory, the VM {} MiB",
                state.memory_mib, config.memory_mib
            ))
            .into());
        }
        if state.vcpus.len() != config.cpus as usize {
            return Err(saved::SavedStateError::Mismatch(format!(
                "it has {} processors, the VM {}",
                state.vcpus.len(),
                config.cpus
            ))
            .into());
        }
        let vcpus = state
            .vcpus
            .iter()
            .enumerate()
            .map(|(i, v)| v.to_runtime(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| saved::SavedStateError::Corrupt {
                path: dir.join(saved::STATE_FILE),
                reason,
            })?;
        let memory = MemoryMap::from_file(config.memory_mib << 20, &dir.join(saved::RAM_FILE))?;
        let machine = Self::build(config, partition, Some(memory))?;
        machine.chipset.restore_devices(&state.devices)?;
        machine.control.set_restored(vcpus);
        Ok(machine)
    }

    /// Saves the machine's state into `dir` (created if needed): `state.bin` with every
    /// processor and device, and `ram.bin`. The machine must be paused; it stays paused. Each
    /// file is written under a temporary name and renamed, so a failure (a full disk) leaves
    /// an earlier state in `dir` whole and the machine untouched.
    pub fn save_state(&self, dir: &std::path::Path) -> Result<(), MachineError> {
        let state = self.capture_state()?;
        create_state_dir(dir)?;
        let memory = self.attached_memory()?;
        saved::write_file_atomic(&dir.join(saved::RAM_FILE), |f| memory.save(f))?;
        state.write(&dir.join(saved::STATE_FILE))?;
        Ok(())
    }

    /// Starts saving the machine's state into `dir` and returns as soon as it is fixed, so
    /// the machine can resume while the files are written: processors and devices are
    /// captured in memory and RAM is written from a copy-on-write snapshot (`ram-snapshot`).
    /// The machine must be paused; it stays paused. [`BackgroundSave::finish`] completes the
    /// files (same names and guarantees as [`Machine::save_state`]).
    pub fn save_state_background(
        &self,
        dir: &std::path::Path,
    ) -> Result<BackgroundSave, MachineError> {
        let state = self.capture_state()?;
        create_state_dir(dir)?;
        let memory = self.attached_memory()?;
        let ram = dir.join(saved::RAM_FILE);
        let tmp = dir.join(format!(".{}.tmp-{}", saved::RAM_FILE, std::process::id()));
        let io = |source| saved::SavedStateError::Io {
            path: ram.clone(),
            source,
        };
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let writer = ram_snapshot::start(&memory.ram, file).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        Ok(BackgroundSave {
            dir: dir.to_path_buf(),
            tmp,
            state,
            writer: Some(writer),
        })
    }

    fn capture_state(&self) -> Result<saved::MachineStateV1, MachineError> {
        if self.config.irqchip != IrqChipMode::Split {
            return Err(saved::SavedStateError::Mismatch(
                "saving needs the interrupt controllers in Terrarium (split irqchip); the \
                 in-kernel ones cannot be saved yet"
                    .into(),
            )
            .into());
        }
        let vcpus = self
            .control
            .capture_vcpus()
            .map_err(saved::SavedStateError::Vcpu)?;
        Ok(saved::MachineStateV1 {
            memory_mib: self.config.memory_mib,
            vcpus: vcpus.iter().map(saved::VpStateV1::from).collect(),
            devices: self.chipset.save_devices(),
        })
    }

    fn attached_memory(&self) -> Result<&MemoryMap, MachineError> {
        Ok(self.control.memory().ok_or_else(|| {
            saved::SavedStateError::Vcpu("the machine has no memory attached".into())
        })?)
    }

    fn build(
        config: MachineConfig,
        partition: Arc<dyn Partition>,
        restored_memory: Option<MemoryMap>,
    ) -> Result<Self, MachineError> {
        let restoring = restored_memory.is_some();
        let (min, max) = MEMORY_RANGE_MIB;
        if !(min..=max).contains(&config.memory_mib) {
            return Err(MachineError::MemorySize(config.memory_mib));
        }
        if config.cpus == 0 || config.cpus > MAX_CPUS {
            return Err(MachineError::CpuCount(config.cpus));
        }
        let mut config = config;
        let memory = match restored_memory {
            Some(m) => m,
            None => MemoryMap::new(config.memory_mib << 20)?,
        };
        let firmware_path = match (&config.linux, &config.firmware) {
            (Some(_), _) => None,
            (None, Some(p)) => Some(p.clone()),
            (None, None) => Some(firmware::find_default()?),
        };
        let bios = match &firmware_path {
            Some(path) => Some(BiosRom::new(firmware::load(path)?)?),
            None => None,
        };
        if config.vga_bios.is_none() {
            config.vga_bios = firmware::find_vga_bios(firmware_path.as_deref());
            if config.vga_bios.is_none() && firmware_path.is_some() {
                // Headless runs with custom firmware need no screen; say it for the curious.
                tracing::info!(
                    "no vgabios-stdvga.bin found: the screen stays blank until the guest sets a \
                     mode (install the seabios package)"
                );
            }
        }
        let (tx, rx) = channel();
        let control = Arc::new(Control::new(config.cpus, tx.clone()));
        if let Some(boot) = &config.linux {
            // A restored machine keeps its RAM; the kernel is loaded again only on reset.
            let kernel = if restoring {
                None
            } else {
                Some(linux::load(&memory, boot, config.cpus)?)
            };
            control.set_linux(boot.clone(), kernel);
        }
        let chipset = Chipset::new(&config, &memory, partition.clone(), tx, control.clone())
            .map_err(MachineError::Devices)?;
        let mut slot = 0;
        for r in &memory.ram {
            partition.map_memory(slot, r.clone(), false)?;
            slot += 1;
        }
        if let Some(b) = &bios {
            partition.map_memory(slot, b.region.clone(), true)?;
            if !restoring {
                b.load_low_alias(&memory);
            }
        }
        let display = Display {
            framebuffer: chipset.framebuffer(),
            input: chipset.input(),
        };
        let chipset = Arc::new(chipset);
        control.attach(chipset.clone(), memory, bios);
        Ok(Self {
            config,
            partition,
            control,
            chipset,
            display,
            events: Some(rx),
            threads: Vec::new(),
        })
    }

    /// Takes the event stream (once).
    pub fn take_events(&mut self) -> Option<Receiver<MachineEvent>> {
        self.events.take()
    }

    /// Short name of the CPU backend in use.
    pub fn backend_name(&self) -> &'static str {
        self.partition.backend_name()
    }

    /// Creates the vCPUs and the timer thread and starts running.
    pub fn start(&mut self) -> Result<(), MachineError> {
        if !self.threads.is_empty() {
            return Ok(());
        }
        let mut vps = Vec::new();
        for i in 0..self.config.cpus {
            vps.push(self.partition.create_vp(i)?);
        }
        self.threads = vcpu::spawn(&self.control, vps).map_err(MachineError::Thread)?;
        Ok(())
    }

    /// Current run state.
    pub fn state(&self) -> RunState {
        self.control.run_state()
    }

    /// Stops all vCPUs; devices keep their state.
    pub fn pause(&self) {
        self.control.pause();
    }

    /// Continues after [`Machine::pause`].
    pub fn resume(&self) {
        self.control.resume();
    }

    /// Resets the machine as the reset button would.
    pub fn reset(&self) {
        self.control.request_reset("user request");
    }

    /// Turns the machine off.
    pub fn power_off(&self) {
        self.control.power_off(OffReason::Requested);
    }

    /// The screen: RGBA pixels with dirty rectangles, kept current at 60 Hz while running.
    pub fn framebuffer(&self) -> SharedFramebuffer {
        self.display.framebuffer.clone()
    }

    /// Redraws the framebuffer from display memory now and returns it (for a screenshot).
    pub fn screen(&self) -> SharedFramebuffer {
        self.chipset.render_display();
        self.display.framebuffer.clone()
    }

    /// The characters on a text-mode screen, one string per row; `None` in graphics modes.
    pub fn text_screen(&self) -> Option<Vec<String>> {
        self.chipset.text_screen()
    }

    /// The PS/2 keyboard and mouse.
    pub fn input(&self) -> InputHandle {
        self.display.input.clone()
    }

    /// The devices serving each job, and whether they are emulated or synthetic.
    pub fn active_devices(&self) -> Vec<ActiveDevice> {
        let emulated = |role, name| ActiveDevice {
            role,
            name,
            kind: DeviceKind::Emulated,
        };
        vec![
            emulated("Display", "Standard VGA with Bochs VBE"),
            emulated("Storage", "PIIX3 IDE"),
            emulated("Floppy", "82077AA floppy controller"),
            emulated("Keyboard and mouse", "i8042 PS/2"),
            emulated("Serial", "16550A UART"),
        ]
    }

    /// The drives' activity counters (bytes read and written since start).
    pub fn drive_activity(&self) -> DriveActivity {
        self.chipset.activity()
    }

    /// Puts the image at `path` into the CD-ROM drive (the guest sees a media change), or
    /// empties the drive with `None`.
    pub fn change_cdrom(&self, path: Option<&std::path::Path>) -> Result<(), MachineError> {
        self.chipset.change_cdrom(path).map_err(MachineError::Media)
    }

    /// Switches the running machine's hard disks to new images with the same contents (the
    /// layers a live snapshot puts on top), in configuration order. The machine must be paused.
    pub fn switch_disks(&self, paths: &[std::path::PathBuf]) -> Result<(), MachineError> {
        if paths.len() != self.config.disks.len() {
            return Err(MachineError::Media(format!(
                "{} disk images given for {} disks",
                paths.len(),
                self.config.disks.len()
            )));
        }
        self.chipset
            .switch_disks(paths)
            .map_err(MachineError::Media)
    }

    /// Sends bytes to the guest's first serial port.
    pub fn serial_input(&self, bytes: &[u8]) {
        self.control.serial_input(bytes);
    }

    /// Waits until the machine is off and its threads have ended; returns why it turned off.
    pub fn wait(&mut self) -> OffReason {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.control.off_reason().unwrap_or(OffReason::Requested)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.control.power_off(OffReason::Requested);
            self.wait();
        }
    }
}

fn create_state_dir(dir: &std::path::Path) -> Result<(), MachineError> {
    std::fs::create_dir_all(dir).map_err(|source| {
        saved::SavedStateError::Io {
            path: dir.to_path_buf(),
            source,
        }
        .into()
    })
}

/// A machine state being written while the machine runs on (see
/// [`Machine::save_state_background`]). Dropping it unfinished stops the write and leaves
/// `dir` without the new state.
#[derive(Debug)]
pub struct BackgroundSave {
    dir: std::path::PathBuf,
    tmp: std::path::PathBuf,
    state: saved::MachineStateV1,
    writer: Option<ram_snapshot::Writer>,
}

impl BackgroundSave {
    /// Bytes of RAM written so far and in all.
    pub fn progress(&self) -> (u64, u64) {
        self.writer
            .as_ref()
            .map_or((0, 0), |w| (w.written(), w.total()))
    }

    /// True when [`BackgroundSave::finish`] would not wait for RAM any more.
    pub fn is_ready(&mut self) -> bool {
        self.writer.as_mut().is_none_or(|w| w.is_finished())
    }

    /// Waits for RAM to be written and synced, then puts `ram.bin` and `state.bin` in place.
    /// On failure (a full disk) neither file of this save is left behind.
    pub fn finish(mut self) -> Result<(), MachineError> {
        let ram = self.dir.join(saved::RAM_FILE);
        let written = match self.writer.take() {
            Some(w) => w.wait(),
            None => Ok(()),
        };
        let placed = written.and_then(|()| std::fs::rename(&self.tmp, &ram));
        if let Err(source) = placed {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(saved::SavedStateError::Io { path: ram, source }.into());
        }
        self.state.write(&self.dir.join(saved::STATE_FILE))?;
        Ok(())
    }
}

impl Drop for BackgroundSave {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
