//! `terrarium run`: one VM, headless, until it powers off.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use machine::{
    create_partition, Backend, BootDevice, IrqChipMode, LinuxBoot, Machine, MachineConfig,
    MachineEvent, OffReason,
};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// CPU backend choice on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BackendArg {
    /// KVM where usable.
    Auto,
    /// Linux KVM.
    Kvm,
    /// Windows Hypervisor Platform.
    Whp,
    /// Software CPU.
    Emu,
}

/// Interrupt controller placement on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IrqChipArg {
    /// PIC, IOAPIC and PIT in Terrarium, local APIC in the hypervisor.
    Split,
    /// Everything in the hypervisor (KVM only).
    Kernel,
}

/// Boot device on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BootArg {
    /// CD-ROM.
    Cd,
    /// Hard disk.
    Disk,
    /// Floppy.
    Floppy,
}

/// Options of `terrarium run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// CPU backend.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u64,
    /// Number of virtual CPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// BIOS image (default: SeaBIOS from the system's seabios package).
    #[arg(long)]
    firmware: Option<PathBuf>,
    /// ISO image for the CD-ROM drive.
    #[arg(long)]
    cdrom: Option<PathBuf>,
    /// Hard disk image (repeatable).
    #[arg(long)]
    disk: Vec<PathBuf>,
    /// Floppy image.
    #[arg(long)]
    floppy: Option<PathBuf>,
    /// First boot device.
    #[arg(long, value_enum)]
    boot: Option<BootArg>,
    /// Linux kernel (bzImage) to boot directly.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial RAM disk for --kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line for --kernel.
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// Where the first serial port goes: stdio or a file.
    #[arg(long, default_value = "stdio")]
    serial: String,
    /// Where debug port 0x402 output goes: stdio or a file.
    #[arg(long)]
    debugcon: Option<String>,
    /// Save the screen as PNG when the run ends.
    #[arg(long)]
    screenshot: Option<PathBuf>,
    /// Stop successfully once this text appears on the serial port.
    #[arg(long)]
    exit_on_serial: Option<String>,
    /// Give up (non-zero exit) after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Interrupt controller placement (KVM).
    #[arg(long, value_enum, default_value = "split")]
    irqchip: IrqChipArg,
}

/// A sink for guest output: stdout or a file, flushed whenever the event queue drains.
struct Output(Box<dyn Write>);

impl Output {
    fn open(spec: &str, what: &str) -> Result<Self> {
        if spec == "stdio" {
            return Ok(Self(Box::new(std::io::stdout())));
        }
        let f = std::fs::File::create(spec)
            .with_context(|| format!("cannot create {what} output file {spec}"))?;
        Ok(Self(Box::new(std::io::BufWriter::new(f))))
    }
}

/// Runs the VM; returns the process exit code.
pub fn run(args: RunArgs) -> Result<i32> {
    if let Some(t) = args.timeout {
        if !(t > 0.0 && t.is_finite()) {
            bail!("--timeout must be a positive number of seconds");
        }
    }
    let backend = match args.backend {
        BackendArg::Auto => Backend::Auto,
        BackendArg::Kvm => Backend::Kvm,
        BackendArg::Whp => Backend::Whp,
        BackendArg::Emu => Backend::Emu,
    };
    let irqchip = match args.irqchip {
        IrqChipArg::Split => IrqChipMode::Split,
        IrqChipArg::Kernel => IrqChipMode::InKernel,
    };
    let mut boot_order = vec![BootDevice::Cdrom, BootDevice::Disk, BootDevice::Floppy];
    if let Some(first) = args.boot {
        let first = match first {
            BootArg::Cd => BootDevice::Cdrom,
            BootArg::Disk => BootDevice::Disk,
            BootArg::Floppy => BootDevice::Floppy,
        };
        boot_order.retain(|d| *d != first);
        boot_order.insert(0, first);
    }
    let linux = args.kernel.map(|kernel| LinuxBoot {
        kernel,
        initrd: args.initrd,
        cmdline: args.append.unwrap_or_else(|| "console=ttyS0".into()),
    });
    let config = MachineConfig {
        memory_mib: args.memory,
        cpus: args.cpus,
        firmware: args.firmware,
        linux,
        boot_order,
        irqchip,
        disks: args.disk,
        cdrom: args.cdrom,
        floppy: args.floppy,
        vga_bios: None,
    };
    // Check the values before touching the hypervisor so the message is about them.
    if !(machine::MEMORY_RANGE_MIB.0..=machine::MEMORY_RANGE_MIB.1).contains(&config.memory_mib) {
        return Err(machine::MachineError::MemorySize(config.memory_mib).into());
    }
    if config.cpus == 0 || config.cpus > machine::MAX_CPUS {
        return Err(machine::MachineError::CpuCount(config.cpus).into());
    }
    let mut serial = Output::open(&args.serial, "serial")?;
    let mut debugcon = args
        .debugcon
        .as_deref()
        .map(|s| Output::open(s, "debug port"))
        .transpose()?;

    let partition = match backend {
        Backend::Auto => {
            let (partition, note) = machine::create_partition_auto(config.cpus, irqchip)?;
            if let Some(note) = note {
                eprintln!("terrarium: {note} (--backend kvm forces KVM)");
            }
            partition
        }
        b => create_partition(b, config.cpus, irqchip)?,
    };
    let mut vm = Machine::new(config, partition)?;
    let events = vm.take_events().context("event stream already taken")?;
    vm.start()?;

    let deadline = args
        .timeout
        .map(|t| Instant::now() + Duration::from_secs_f64(t));
    let mut watch = SerialWatch::new(args.exit_on_serial);
    let code = 'run: loop {
        let wait = deadline.map_or(Duration::from_millis(200), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200))
        });
        let mut next = match events.recv_timeout(wait) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break 0,
        };
        // Handle everything queued, then flush once so files follow the guest closely.
        while let Some(event) = next.take() {
            let outcome = match event {
                MachineEvent::Serial(bytes) => {
                    serial.0.write_all(&bytes)?;
                    watch.feed(&bytes).then_some(0)
                }
                MachineEvent::DebugPort(bytes) => {
                    if let Some(d) = debugcon.as_mut() {
                        d.0.write_all(&bytes)?;
                    }
                    None
                }
                MachineEvent::Off(OffReason::Error(msg)) => {
                    serial.0.flush()?;
                    eprintln!("terrarium: {msg}");
                    Some(1)
                }
                MachineEvent::Off(_) => Some(0),
                MachineEvent::Reset { cause } => {
                    tracing::info!("machine reset ({cause})");
                    None
                }
                MachineEvent::State(_) => None,
            };
            if let Some(code) = outcome {
                break 'run code;
            }
            next = events.try_recv().ok();
        }
        serial.0.flush()?;
        if let Some(d) = debugcon.as_mut() {
            d.0.flush()?;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!(
                "terrarium: timed out after {} s without the guest powering off",
                args.timeout.unwrap_or_default()
            );
            break 3;
        }
    };
    vm.power_off();
    vm.wait();
    if let Some(path) = &args.screenshot {
        let screen = vm.screen();
        machine::screenshot::save_png(&screen.lock(), path)?;
    }
    serial.0.flush()?;
    if let Some(d) = debugcon.as_mut() {
        d.0.flush()?;
    }
    Ok(code)
}

/// Looks for the `--exit-on-serial` text across chunk boundaries.
struct SerialWatch {
    needle: Option<Vec<u8>>,
    tail: Vec<u8>,
}

impl SerialWatch {
    fn new(text: Option<String>) -> Self {
        Self {
            needle: text.map(String::into_bytes).filter(|n| !n.is_empty()),
            tail: Vec::new(),
        }
    }

    /// Adds output; true once the text has appeared.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let Some(n) = &self.needle else { return false };
        self.tail.extend_from_slice(bytes);
        if self.tail.windows(n.len()).any(|w| w == n.as_slice()) {
            return true;
        }
        let keep = n.len() - 1;
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::SerialWatch;

    #[test]
    fn finds_text_split_across_chunks() {
        let mut w = SerialWatch::new(Some("BOOT-OK".into()));
        assert!(!w.feed(b"xx BO"));
        assert!(!w.feed(b"OT"));
        assert!(w.feed(b"-OK\n"));
        let mut none = SerialWatch::new(None);
        assert!(!none.feed(b"anything"));
    }
}
