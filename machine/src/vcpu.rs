//! vCPU threads and the lifecycle they share: run, pause, reset (all processors parked, then
//! chipset and memory reset, then each processor resets itself), power off.

use crate::chipset::Chipset;
use crate::linux::{self, LinuxBoot, LoadedKernel};
use crate::memory::{BiosRom, MemoryMap};
use crate::{MachineEvent, OffReason, RunState};
use hv::{StopHandle, StopReason, VirtualProcessor, VpState};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

struct Inner {
    state: RunState,
    reset_pending: Option<&'static str>,
    generation: u64,
    parked: u32,
    off: Option<OffReason>,
    /// Bumped to ask every parked vCPU for its state.
    capture: u64,
    /// The states handed in for the current capture, by vCPU index.
    captured: Vec<Option<Result<VpState, String>>>,
}

/// What the machine's threads need besides the lifecycle state.
struct Parts {
    chipset: Arc<Chipset>,
    memory: MemoryMap,
    bios: Option<BiosRom>,
}

/// Lifecycle state shared by the machine, its vCPU threads and its devices.
pub(crate) struct Control {
    inner: Mutex<Inner>,
    cv: Condvar,
    vcpus: u32,
    events: Mutex<Sender<MachineEvent>>,
    stops: OnceLock<Vec<Arc<StopHandle>>>,
    parts: OnceLock<Parts>,
    linux: OnceLock<LinuxBoot>,
    /// Where the direct-boot kernel was last loaded (a restored machine learns it at reset).
    kernel: Mutex<Option<LoadedKernel>>,
    /// Processor states to start from instead of power-on (a restored machine).
    restored: OnceLock<Vec<VpState>>,
}

enum Gate {
    Quit,
    Run { reset: bool },
    Capture,
}

/// How long a state capture waits for the vCPUs to hand in their state.
const CAPTURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Control {
    pub(crate) fn new(vcpus: u32, events: Sender<MachineEvent>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: RunState::Created,
                reset_pending: None,
                generation: 0,
                parked: 0,
                off: None,
                capture: 0,
                captured: Vec::new(),
            }),
            cv: Condvar::new(),
            vcpus,
            events: Mutex::new(events),
            stops: OnceLock::new(),
            parts: OnceLock::new(),
            linux: OnceLock::new(),
            kernel: Mutex::new(None),
            restored: OnceLock::new(),
        }
    }

    /// Makes the vCPUs start from `states` (one per vCPU) instead of their power-on state.
    pub(crate) fn set_restored(&self, states: Vec<VpState>) {
        let _ = self.restored.set(states);
    }

    /// Reads every vCPU's state; the machine must be paused. Each parked vCPU thread reads its
    /// own processor and hands the state in.
    pub(crate) fn capture_vcpus(&self) -> Result<Vec<VpState>, String> {
        let mut g = self.lock();
        if g.state != RunState::Paused {
            return Err("the machine must be paused".into());
        }
        g.capture += 1;
        g.captured = vec![None; self.vcpus as usize];
        self.cv.notify_all();
        let deadline = std::time::Instant::now() + CAPTURE_TIMEOUT;
        while g.captured.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err("the vCPUs did not answer in time".into());
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if g.state == RunState::Off {
                return Err("the machine turned off".into());
            }
        }
        std::mem::take(&mut g.captured)
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Err("missing".into())))
            .collect()
    }

    fn hand_in(&self, index: u32, state: Result<VpState, String>) {
        let mut g = self.lock();
        if let Some(slot) = g.captured.get_mut(index as usize) {
            *slot = Some(state);
        }
        self.cv.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn emit(&self, e: MachineEvent) {
        let _ = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(e);
    }

    pub(crate) fn attach(&self, chipset: Arc<Chipset>, memory: MemoryMap, bios: Option<BiosRom>) {
        let _ = self.parts.set(Parts {
            chipset,
            memory,
            bios,
        });
    }

    /// Remembers the direct-boot kernel so a reset can load it again.
    pub(crate) fn set_linux(&self, boot: LinuxBoot, kernel: Option<LoadedKernel>) {
        let _ = self.linux.set(boot);
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner()) = kernel;
    }

    /// Guest RAM, once attached.
    pub(crate) fn memory(&self) -> Option<&MemoryMap> {
        self.parts.get().map(|p| &p.memory)
    }

    pub(crate) fn run_state(&self) -> RunState {
        self.lock().state
    }

    pub(crate) fn off_reason(&self) -> Option<OffReason> {
        self.lock().off.clone()
    }

    fn stop_all(&self) {
        for s in self.stops.get().into_iter().flatten() {
            s.request_stop(StopReason::Stopped);
        }
    }

    /// Wakes the boot processor so it picks up a PIC interrupt.
    pub(crate) fn kick_bsp(&self) {
        if let Some(s) = self.stops.get().and_then(|s| s.first()) {
            s.kick();
        }
    }

    pub(crate) fn pause(&self) {
        let mut g = self.lock();
        if g.state != RunState::Running {
            return;
        }
        g.state = RunState::Paused;
        drop(g);
        self.stop_all();
        self.emit(MachineEvent::State(RunState::Paused));
    }

    pub(crate) fn resume(&self) {
        let mut g = self.lock();
        if g.state != RunState::Paused {
            return;
        }
        g.state = RunState::Running;
        self.cv.notify_all();
        drop(g);
        self.emit(MachineEvent::State(RunState::Running));
    }

    pub(crate) fn request_reset(&self, cause: &'static str) {
        let mut g = self.lock();
        if g.state == RunState::Off || g.reset_pending.is_some() {
            return;
        }
        g.reset_pending = Some(cause);
        self.cv.notify_all();
        drop(g);
        self.stop_all();
    }

    pub(crate) fn power_off(&self, reason: OffReason) {
        let mut g = self.lock();
        if g.state == RunState::Off {
            return;
        }
        g.state = RunState::Off;
        g.off = Some(reason.clone());
        self.cv.notify_all();
        drop(g);
        self.stop_all();
        if let Some(p) = self.parts.get() {
            p.chipset.shutdown();
        }
        self.emit(MachineEvent::Off(reason));
        self.emit(MachineEvent::State(RunState::Off));
    }

    pub(crate) fn serial_input(&self, bytes: &[u8]) {
        if let Some(p) = self.parts.get() {
            p.chipset.serial_input(bytes);
        }
    }

    /// Resets chipset and memory contents that a reset restores. Called with every vCPU parked.
    fn reset_platform(&self, cause: &'static str) {
        let Some(p) = self.parts.get() else { return };
        p.chipset.reset();
        if let Some(b) = &p.bios {
            b.load_low_alias(&p.memory);
        }
        if let Some(boot) = self.linux.get() {
            let loaded = linux::load(&p.memory, boot, self.vcpus)
                .map_err(|e| tracing::error!("reloading the kernel after reset: {e}"))
                .ok();
            *self.kernel.lock().unwrap_or_else(|e| e.into_inner()) = loaded;
        }
        tracing::info!(cause, "machine reset");
        self.emit(MachineEvent::Reset { cause });
    }

    fn wait_runnable(&self, generation: &mut u64, capture: &mut u64) -> Gate {
        let mut g = self.lock();
        loop {
            if g.state == RunState::Off {
                return Gate::Quit;
            }
            if g.capture != *capture {
                *capture = g.capture;
                if g.state == RunState::Paused {
                    return Gate::Capture;
                }
            }
            if let Some(cause) = g.reset_pending {
                g.parked += 1;
                if g.parked == self.vcpus {
                    self.reset_platform(cause);
                    g.reset_pending = None;
                    g.parked = 0;
                    g.generation += 1;
                    self.cv.notify_all();
                } else {
                    let gen = g.generation;
                    while g.generation == gen && g.state != RunState::Off {
                        g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                }
                continue;
            }
            if g.state != RunState::Running {
                g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let reset = *generation != g.generation;
            *generation = g.generation;
            return Gate::Run { reset };
        }
    }
}

fn failure_message(index: u32, address: u64, bytes: &[u8]) -> String {
    let bytes = if bytes.is_empty() {
        String::new()
    } else {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!(" (bytes {})", hex.join(" "))
    };
    format!(
        "vCPU {index}: the hypervisor could not emulate the instruction at {address:#x}{bytes}; \
         this host's KVM cannot run this guest, use --backend emu"
    )
}

fn enter_kernel(control: &Control, vp: &mut dyn VirtualProcessor) -> hv::Result<()> {
    let kernel = *control.kernel.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(kernel) = kernel {
        let s = linux::entry_state(vp.state()?, &kernel);
        vp.set_state(&s)?;
    }
    Ok(())
}

fn vcpu_loop(control: Arc<Control>, mut vp: Box<dyn VirtualProcessor>) {
    let index = vp.index();
    let Some(parts) = control.parts.get() else {
        return;
    };
    let io = parts.chipset.io();
    let mut generation = 0;
    let mut capture = 0;
    if let Some(states) = control.restored.get() {
        let r = match states.get(index as usize) {
            Some(s) => vp.set_state(s).map_err(|e| e.to_string()),
            None => Err("the saved state has no state for it".into()),
        };
        if let Err(e) = r {
            control.power_off(OffReason::Error(format!("vCPU {index} restore: {e}")));
        }
    } else if index == 0 {
        if let Err(e) = enter_kernel(&control, vp.as_mut()) {
            control.power_off(OffReason::Error(format!("vCPU 0: {e}")));
        }
    }
    loop {
        match control.wait_runnable(&mut generation, &mut capture) {
            Gate::Quit => return,
            Gate::Capture => {
                control.hand_in(index, vp.state().map_err(|e| e.to_string()));
                continue;
            }
            Gate::Run { reset: true } => {
                let r = vp.reset().and_then(|_| {
                    if index == 0 {
                        enter_kernel(&control, vp.as_mut())
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = r {
                    control.power_off(OffReason::Error(format!("vCPU {index} reset: {e}")));
                    continue;
                }
            }
            Gate::Run { reset: false } => {}
        }
        match vp.run(io) {
            Ok(StopReason::Stopped) => {}
            Ok(StopReason::Reset) => control.request_reset("guest request"),
            Ok(StopReason::TripleFault) => control.request_reset("triple fault"),
            Ok(StopReason::PowerOff) => control.power_off(OffReason::GuestPowerOff),
            Ok(StopReason::EmulationFailure { address, bytes }) => {
                control.power_off(OffReason::Error(failure_message(index, address, &bytes)))
            }
            Err(e) => control.power_off(OffReason::Error(format!("vCPU {index}: {e}"))),
        }
    }
}

/// Starts one thread per vCPU plus the device timer thread, and sets the machine running.
pub(crate) fn spawn(
    control: &Arc<Control>,
    vps: Vec<Box<dyn VirtualProcessor>>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let _ = control
        .stops
        .set(vps.iter().map(|v| v.stop_handle()).collect());
    let mut threads = Vec::new();
    if let Some(p) = control.parts.get() {
        let chipset = p.chipset.clone();
        threads.push(
            std::thread::Builder::new()
                .name("timers".into())
                .spawn(move || chipset.run_timers())?,
        );
    }
    for vp in vps {
        let c = control.clone();
        let name = format!("vcpu{}", vp.index());
        threads.push(
            std::thread::Builder::new()
                .name(name)
                .spawn(move || vcpu_loop(c, vp))?,
        );
    }
    let mut g = control.lock();
    if g.state == RunState::Created {
        g.state = RunState::Running;
        control.cv.notify_all();
        drop(g);
        control.emit(MachineEvent::State(RunState::Running));
    }
    Ok(threads)
}
