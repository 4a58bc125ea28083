//! A running VM as the desktop app holds it: the machine, its event stream, the serial log,
//! the screen texture and the activity lights.

use machine::{
    Backend, BootDevice, IrqChipMode, Machine, MachineConfig, MachineEvent, OffReason, RunState,
};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_library::{BackendChoice, BootChoice, VmConfig};

/// Most serial output kept for the serial-console view.
const SERIAL_KEEP: usize = 256 * 1024;
/// How long an activity light stays on after the last transfer.
const ACTIVITY_HOLD: Duration = Duration::from_millis(250);
/// Widest thumbnail saved for the library.
const THUMBNAIL_WIDTH: u32 = 320;

/// The machine configuration for a library VM stored in `dir`.
pub fn machine_config(dir: &Path, config: &VmConfig) -> MachineConfig {
    let first = match config.boot {
        BootChoice::Cd => BootDevice::Cdrom,
        BootChoice::Disk => BootDevice::Disk,
        BootChoice::Floppy => BootDevice::Floppy,
    };
    let mut boot_order = vec![BootDevice::Cdrom, BootDevice::Disk, BootDevice::Floppy];
    boot_order.retain(|d| *d != first);
    boot_order.insert(0, first);
    MachineConfig {
        memory_mib: config.memory_mib,
        cpus: config.cpus,
        boot_order,
        disks: config
            .disks
            .iter()
            .map(|p| config.resolve(dir, p))
            .collect(),
        cdrom: config.cdrom.as_ref().map(|p| config.resolve(dir, p)),
        floppy: config.floppy.as_ref().map(|p| config.resolve(dir, p)),
        ..MachineConfig::default()
    }
}

/// Checks that every image the VM uses exists, so that the error names the image and the fix.
fn check_media(config: &MachineConfig) -> Result<(), String> {
    let media = config
        .disks
        .iter()
        .map(|p| ("hard disk", p))
        .chain(config.cdrom.iter().map(|p| ("CD", p)))
        .chain(config.floppy.iter().map(|p| ("floppy", p)));
    for (what, path) in media {
        if !path.is_file() {
            return Err(format!(
                "the {what} image {} is missing: put it back, or choose another image in \
                 Settings",
                path.display()
            ));
        }
    }
    Ok(())
}

/// What the activity lights show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lights {
    /// A hard disk moved data recently.
    pub disk: bool,
    /// The CD drive read recently.
    pub cdrom: bool,
    /// The floppy drive moved data recently.
    pub floppy: bool,
}

#[derive(Default)]
struct ActivityLight {
    last_total: u64,
    lit_until: Option<Instant>,
}

impl ActivityLight {
    fn sample(&mut self, total: u64, now: Instant) -> bool {
        if total != self.last_total {
            self.last_total = total;
            self.lit_until = Some(now + ACTIVITY_HOLD);
        }
        self.lit_until.is_some_and(|t| now < t)
    }
}

/// The guest screen as an egui texture, updated from the framebuffer's dirty rectangles.
#[derive(Default)]
pub struct ScreenTexture {
    texture: Option<egui::TextureHandle>,
    generation: u64,
    /// Texture uploads (full or partial) so far.
    pub uploads: u64,
    /// Pixels uploaded so far.
    pub uploaded_pixels: u64,
}

impl ScreenTexture {
    /// Brings the texture up to date with `framebuffer`; true when something was uploaded.
    pub fn update(
        &mut self,
        ctx: &egui::Context,
        framebuffer: &machine::SharedFramebuffer,
    ) -> bool {
        let mut fb = framebuffer.lock();
        let (w, h) = (fb.width() as usize, fb.height() as usize);
        if w == 0 || h == 0 {
            return false;
        }
        let options = egui::TextureOptions::NEAREST;
        let fresh = self.texture.is_none() || self.generation != fb.generation();
        if fresh {
            fb.take_dirty();
            let image = egui::ColorImage::from_rgba_unmultiplied([w, h], fb.pixels());
            self.generation = fb.generation();
            self.uploads += 1;
            self.uploaded_pixels += (w * h) as u64;
            match &mut self.texture {
                Some(t) => t.set(image, options),
                None => self.texture = Some(ctx.load_texture("guest-screen", image, options)),
            }
            return true;
        }
        let rects = fb.take_dirty();
        let Some(texture) = &mut self.texture else {
            return false;
        };
        for r in &rects {
            let Some(r) = r.clipped(w as u32, h as u32) else {
                continue;
            };
            let pixels = fb.copy_rect(r);
            let size = [r.width as usize, r.height as usize];
            if pixels.len() != size[0] * size[1] * 4 {
                continue;
            }
            let image = egui::ColorImage::from_rgba_unmultiplied(size, &pixels);
            texture.set_partial([r.x as usize, r.y as usize], image, options);
            self.uploads += 1;
            self.uploaded_pixels += (size[0] * size[1]) as u64;
        }
        !rects.is_empty()
    }

    /// The texture, once the screen has content.
    pub fn texture(&self) -> Option<&egui::TextureHandle> {
        self.texture.as_ref()
    }
}

/// A VM running (or paused, or just turned off) in the app.
pub struct Session {
    /// The VM's library folder.
    pub dir: PathBuf,
    /// Its settings as they were at start (CD changes are written back).
    pub config: VmConfig,
    machine: Machine,
    events: Receiver<MachineEvent>,
    /// Current run state.
    pub state: RunState,
    /// Why it turned off, once it did.
    pub off: Option<OffReason>,
    /// The CPU backend in use ("kvm", "emu").
    pub backend: &'static str,
    /// Why the software CPU runs this VM although hardware virtualization was allowed.
    pub banner: Option<String>,
    /// Serial output so far (the newest [`SERIAL_KEEP`] bytes).
    pub serial: String,
    /// The guest screen.
    pub screen: ScreenTexture,
    lights: [ActivityLight; 3],
    started: Instant,
    /// The VM was saved (not powered off) when it stopped.
    pub saved: bool,
    /// Tells other processes the VM runs here.
    running: Option<vm_library::RunningMark>,
    /// A live snapshot whose machine state is being written.
    pending_take: Option<TakeJob>,
}

/// The background half of a live snapshot: its state written while the VM runs.
struct TakeJob {
    name: String,
    /// RAM bytes written and in all.
    progress: Arc<Mutex<(u64, u64)>>,
    thread: std::thread::JoinHandle<Result<vm_library::snapshots::Snapshot, String>>,
}

fn lock_progress(p: &Mutex<(u64, u64)>) -> std::sync::MutexGuard<'_, (u64, u64)> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deletes the VM's saved state (starting it then boots afresh).
pub fn discard_saved_state(dir: &Path) -> Result<(), String> {
    let saved = dir.join(vm_library::SAVED_STATE_DIR);
    match std::fs::remove_dir_all(&saved) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", saved.display())),
    }
}

impl Session {
    /// Builds and starts the VM stored in `dir` with `config`; `firmware` overrides the
    /// system's SeaBIOS. A saved state in the VM folder is resumed (and then removed).
    pub fn start(dir: &Path, config: &VmConfig, firmware: Option<&Path>) -> Result<Self, String> {
        Self::start_from(dir, config, firmware, None)
    }

    /// Like [`Session::start`], restoring the machine state in `state` (a live snapshot's
    /// folder, which stays as it is) when given.
    pub fn start_from(
        dir: &Path,
        config: &VmConfig,
        firmware: Option<&Path>,
        state: Option<&Path>,
    ) -> Result<Self, String> {
        let mut machine_config = machine_config(dir, config);
        machine_config.firmware = firmware.map(Path::to_path_buf);
        check_media(&machine_config)?;
        // With undo disks the machine writes to the undo layers, never to the disks.
        machine_config.disks =
            vm_library::undo::disks_to_open(dir, config).map_err(|e| e.to_string())?;
        let cpus = machine_config.cpus;
        let (partition, banner) = match config.backend {
            BackendChoice::Auto => machine::create_partition_auto(cpus, IrqChipMode::Split),
            BackendChoice::Kvm => {
                machine::create_partition(Backend::Kvm, cpus, IrqChipMode::Split).map(|p| (p, None))
            }
            BackendChoice::Whp => {
                machine::create_partition(Backend::Whp, cpus, IrqChipMode::Split).map(|p| (p, None))
            }
            BackendChoice::Emu => {
                machine::create_partition(Backend::Emu, cpus, IrqChipMode::Split).map(|p| (p, None))
            }
        }
        .map_err(|e| e.to_string())?;
        let saved = dir.join(vm_library::SAVED_STATE_DIR);
        let resumed = state.is_none() && saved.join(machine::saved::STATE_FILE).is_file();
        let mut machine = if let Some(state) = state {
            Machine::restore(machine_config, partition, state).map_err(|e| e.to_string())?
        } else if resumed {
            Machine::restore(machine_config, partition, &saved)
                .map_err(|e| format!("{e} (Discard saved state starts the VM afresh)"))?
        } else {
            Machine::new(machine_config, partition).map_err(|e| e.to_string())?
        };
        let events = machine
            .take_events()
            .ok_or("the machine's event stream is gone")?;
        machine.start().map_err(|e| e.to_string())?;
        if resumed {
            // The VM goes on from here; its RAM stays mapped from the (unlinked) file.
            discard_saved_state(dir)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config: config.clone(),
            backend: machine.backend_name(),
            machine,
            events,
            state: RunState::Running,
            off: None,
            banner,
            serial: String::new(),
            screen: ScreenTexture::default(),
            lights: Default::default(),
            started: Instant::now(),
            saved: false,
            running: Some(vm_library::RunningMark::new(dir)),
            pending_take: None,
        })
    }

    /// Handles the machine's queued events; true when something the UI shows changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        while let Ok(event) = self.events.try_recv() {
            changed = true;
            match event {
                MachineEvent::Serial(bytes) => {
                    self.serial.push_str(&String::from_utf8_lossy(&bytes));
                    if self.serial.len() > SERIAL_KEEP {
                        let mut cut = self.serial.len() - SERIAL_KEEP;
                        while !self.serial.is_char_boundary(cut) {
                            cut += 1;
                        }
                        self.serial.drain(..cut);
                    }
                }
                MachineEvent::State(state) => self.state = state,
                MachineEvent::Off(reason) => {
                    self.state = RunState::Off;
                    self.off = Some(reason);
                }
                MachineEvent::DebugPort(_) | MachineEvent::Reset { .. } => {}
            }
        }
        changed
    }

    /// The machine (for input, pause/resume and the like).
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// True while the guest runs or is paused.
    pub fn is_on(&self) -> bool {
        !matches!(self.state, RunState::Off)
    }

    /// Pauses or resumes.
    pub fn toggle_pause(&mut self) {
        match self.state {
            RunState::Running => {
                self.machine.pause();
                self.state = RunState::Paused;
            }
            RunState::Paused => {
                self.machine.resume();
                self.state = RunState::Running;
            }
            RunState::Created | RunState::Off => {}
        }
    }

    /// Takes a snapshot: of the disks alone when the VM is off; with the machine's state while
    /// it is on. Then the VM pauses only while its state is captured and its disks switch to
    /// the new layers; the state is written while it runs on ([`Session::snapshot_saving`],
    /// [`Session::poll_snapshot`]).
    pub fn take_snapshot(&mut self, name: &str) -> Result<(), String> {
        if self.config.undo_disks {
            return Err("snapshots need undo disks turned off (both layer the disks)".into());
        }
        if let Some(job) = &self.pending_take {
            return Err(format!(
                "snapshot \"{}\" is still being saved; wait for it to finish",
                job.name
            ));
        }
        if !self.is_on() {
            vm_library::snapshots::take(&self.dir, name, None).map_err(|e| e.to_string())?;
            self.reload_config();
            return Ok(());
        }
        let was_running = self.state == RunState::Running;
        let machine = &self.machine;
        let progress = Arc::new(Mutex::new((0u64, 0u64)));
        let shared = progress.clone();
        let mut live = |state: &Path,
                        layers: &[PathBuf]|
         -> Result<vm_library::snapshots::StateCompletion, String> {
            machine.pause();
            let captured = machine.save_state_background(state).and_then(|save| {
                machine.switch_disks(layers)?;
                Ok(save)
            });
            if was_running {
                machine.resume();
            }
            let mut save = captured.map_err(|e| e.to_string())?;
            let progress = shared.clone();
            Ok(Box::new(move || {
                while !save.is_ready() {
                    *lock_progress(&progress) = save.progress();
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                *lock_progress(&progress) = save.progress();
                save.finish().map_err(|e| e.to_string())
            }))
        };
        let pending = vm_library::snapshots::begin_take(&self.dir, name, Some(&mut live))
            .map_err(|e| e.to_string())?;
        self.reload_config();
        let thread = std::thread::spawn(move || pending.complete().map_err(|e| e.to_string()));
        self.pending_take = Some(TakeJob {
            name: name.trim().to_string(),
            progress,
            thread,
        });
        Ok(())
    }

    /// While a snapshot's machine state is being written: its name and the RAM bytes written
    /// so far and in all.
    pub fn snapshot_saving(&self) -> Option<(&str, u64, u64)> {
        self.pending_take.as_ref().map(|job| {
            let (done, total) = *lock_progress(&job.progress);
            (job.name.as_str(), done, total)
        })
    }

    /// Collects a snapshot whose state has been written since the last call: `Some(Err)` says
    /// it was kept with its disks only, and why.
    pub fn poll_snapshot(&mut self) -> Option<Result<vm_library::snapshots::Snapshot, String>> {
        if !self.pending_take.as_ref()?.thread.is_finished() {
            return None;
        }
        let job = self.pending_take.take()?;
        Some(
            job.thread
                .join()
                .unwrap_or_else(|_| Err(format!("saving snapshot \"{}\" failed", job.name))),
        )
    }

    fn reload_config(&mut self) {
        if let Ok(c) = vm_library::Library::load(&self.dir) {
            self.config = c;
        }
    }

    /// Saves the VM's state into its folder and turns it off; the next start resumes there.
    pub fn save_and_close(&mut self) -> Result<(), String> {
        if !self.is_on() {
            return Ok(());
        }
        self.machine.pause();
        let dir = self.dir.join(vm_library::SAVED_STATE_DIR);
        if let Err(e) = self.machine.save_state(&dir) {
            // Nothing is lost: the VM goes on running.
            let _ = std::fs::remove_dir_all(&dir);
            self.machine.resume();
            return Err(format!(
                "cannot save the state of {}: {e}",
                self.config.name
            ));
        }
        self.power_off();
        self.off = Some(OffReason::Requested);
        self.saved = true;
        Ok(())
    }

    /// Turns the VM off and waits for its processors to stop.
    pub fn power_off(&mut self) {
        if self.is_on() {
            self.machine.power_off();
            self.machine.wait();
            self.running = None;
            self.state = RunState::Off;
            self.off.get_or_insert(OffReason::Requested);
        }
    }

    /// Samples the activity counters.
    pub fn lights(&mut self) -> Lights {
        let a = self.machine.drive_activity();
        let now = Instant::now();
        let total = |c: &machine::IoCounter| c.read_bytes().wrapping_add(c.written_bytes());
        Lights {
            disk: self.lights[0].sample(total(&a.disk), now),
            cdrom: self.lights[1].sample(total(&a.cdrom), now),
            floppy: self.lights[2].sample(total(&a.floppy), now),
        }
    }

    /// How long the VM has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Saves a thumbnail of the screen as the library's `screen.png` (atomically).
    pub fn save_thumbnail(&self, path: &Path) -> Result<(), String> {
        let fb = self.machine.framebuffer();
        let thumb = {
            let fb = fb.lock();
            thumbnail(&fb)
        };
        let png = machine::screenshot::encode_png(&thumb)?;
        vm_library::write_atomic(path, &png)
            .map_err(|e| format!("cannot save {}: {e}", path.display()))
    }
}

impl Drop for Session {
    /// Turns the VM off and lets a snapshot being saved finish (it no longer needs the VM).
    fn drop(&mut self) {
        self.power_off();
        if let Some(job) = self.pending_take.take() {
            let _ = job.thread.join();
        }
    }
}

/// A box-filtered copy of `fb` at most [`THUMBNAIL_WIDTH`] wide.
fn thumbnail(fb: &machine::Framebuffer) -> machine::Framebuffer {
    let (w, h) = (fb.width().max(1), fb.height().max(1));
    let factor = w.div_ceil(THUMBNAIL_WIDTH).max(1);
    let (tw, th) = ((w / factor).max(1), (h / factor).max(1));
    let mut out = machine::Framebuffer::new(tw, th);
    for ty in 0..th {
        for tx in 0..tw {
            let mut sum = [0u32; 3];
            let mut n = 0;
            for y in ty * factor..(ty + 1) * factor {
                for x in tx * factor..(tx + 1) * factor {
                    if let Some(p) = fb.pixel(x, y) {
                        for c in 0..3 {
                            sum[c] += u32::from(p[c]);
                        }
                        n += 1;
                    }
                }
            }
            let n = n.max(1);
            let avg = |c: usize| (sum[c] / n) as u8;
            out.set_pixel(tx, ty, [avg(0), avg(1), avg(2), 0xFF]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnail_scales_down_by_whole_factors() {
        let mut fb = machine::Framebuffer::new(1024, 768);
        fb.fill([200, 100, 50, 255]);
        let t = thumbnail(&fb);
        assert_eq!((t.width(), t.height()), (256, 192));
        assert_eq!(t.pixel(10, 10), Some([200, 100, 50, 255]));
        let small = thumbnail(&machine::Framebuffer::new(320, 200));
        assert_eq!((small.width(), small.height()), (320, 200));
    }

    #[test]
    fn boot_choice_goes_first() {
        let mut c = VmConfig::new("x", media_detect::OsFamily::Linux);
        c.boot = BootChoice::Floppy;
        let m = machine_config(Path::new("/vms/x"), &c);
        assert_eq!(m.boot_order[0], BootDevice::Floppy);
        assert_eq!(m.boot_order.len(), 3);
    }
}
