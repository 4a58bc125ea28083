//! The console window of a running VM: its screen, keyboard and mouse capture, the machine
//! menu, the status bar and the serial console.

use super::keymap::{pc_key, COMBOS};
use super::session::Session;
use machine::{DeviceKind, KeyEvent, MouseButtons, MouseEvent, RunState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vm_library::HostKey;

/// How often the screen watcher looks for changes while keyboard and mouse are captured: as
/// often as the machine renders (60 Hz), so typing and pointing feel immediate.
const INTERACTIVE_INTERVAL_MS: u64 = 16;
/// The watcher's interval otherwise: 30 Hz, QEMU's display refresh, at half the drawing cost.
const WATCHING_INTERVAL_MS: u64 = 33;

/// A thread that asks egui to repaint the console when the guest screen or the drive lights
/// change, so that an idle VM costs no frames.
struct ScreenWatcher {
    stop: Arc<AtomicBool>,
    interval_ms: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScreenWatcher {
    fn spawn(ctx: egui::Context, viewport: egui::ViewportId, machine: &machine::Machine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let interval_ms = Arc::new(AtomicU64::new(WATCHING_INTERVAL_MS));
        let interval = interval_ms.clone();
        let framebuffer = machine.framebuffer();
        let activity = machine.drive_activity();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("screen-watch".into())
            .spawn(move || {
                let total = || {
                    [&activity.disk, &activity.cdrom, &activity.floppy]
                        .iter()
                        .map(|c| c.read_bytes().wrapping_add(c.written_bytes()))
                        .fold(0u64, u64::wrapping_add)
                };
                let mut last = total();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(interval.load(Ordering::Relaxed)));
                    let io = total();
                    if framebuffer.lock().has_dirty() || io != last {
                        last = io;
                        // A non-zero delay asks for one frame; a plain request paints two.
                        ctx.request_repaint_after_for(Duration::from_nanos(1), viewport);
                    }
                }
            })
            .ok();
        Self {
            stop,
            interval_ms,
            thread,
        }
    }

    /// Watches at the interactive rate or the watching rate.
    fn set_interactive(&self, interactive: bool) {
        let ms = if interactive {
            INTERACTIVE_INTERVAL_MS
        } else {
            WATCHING_INTERVAL_MS
        };
        self.interval_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for ScreenWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the guest screen is fitted into the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScreenScale {
    /// Scaled to fit the window, keeping the aspect ratio.
    #[default]
    Fit,
    /// One guest pixel per screen pixel.
    OneToOne,
}

/// A request from the console to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleRequest {
    /// Close the console (the VM is off, or the user closed it after powering off).
    Close,
    /// Start the same VM again after it turned off.
    Restart,
    /// Show an error dialog.
    Error(String),
    /// The CD image changed: save it in the VM's settings (`None`: ejected).
    CdChanged(Option<PathBuf>),
    /// A snapshot action from the console's Snapshots panel.
    Snapshot(super::snapshots::SnapshotAction),
}

/// A console window and the VM it shows.
pub struct Console {
    /// The running VM.
    pub session: Session,
    /// Keyboard and mouse go to the guest.
    pub captured: bool,
    /// Screen scaling.
    pub scale: ScreenScale,
    /// Full-screen window.
    pub fullscreen: bool,
    /// The serial console panel is shown.
    pub show_serial: bool,
    /// Text typed in the serial console's input line.
    pub serial_line: String,
    /// A close was requested while the VM runs; ask first.
    pub confirm_close: bool,
    buttons: MouseButtons,
    /// The library thumbnail was saved after the VM turned off.
    pub thumbnail_saved: bool,
    /// Frames drawn, for statistics.
    pub frames: u64,
    watcher: Option<ScreenWatcher>,
    /// Requests for the app, collected when the console draws in its own window.
    pub requests: Vec<ConsoleRequest>,
    /// The Snapshots panel is shown.
    pub show_snapshots: bool,
    /// The Snapshots panel's state.
    pub snapshots: super::snapshots::SnapshotPanel,
    /// Whether undo layers wait for keep/commit/discard (known once the VM is off).
    undo_pending: Option<bool>,
}

/// The egui key that acts as `key`.
pub fn host_key(key: HostKey) -> egui::Key {
    match key {
        HostKey::RightCtrl => egui::Key::ControlRight,
        HostKey::LeftCtrl => egui::Key::ControlLeft,
        HostKey::RightAlt => egui::Key::AltRight,
        HostKey::ScrollLock => egui::Key::ScrollLock,
        HostKey::F12 => egui::Key::F12,
    }
}

impl Console {
    /// A console for `session`.
    pub fn new(session: Session) -> Self {
        Self {
            session,
            captured: false,
            scale: ScreenScale::Fit,
            fullscreen: false,
            show_serial: false,
            serial_line: String::new(),
            confirm_close: false,
            buttons: MouseButtons::default(),
            thumbnail_saved: false,
            frames: 0,
            watcher: None,
            requests: Vec::new(),
            show_snapshots: false,
            snapshots: Default::default(),
            undo_pending: None,
        }
    }

    /// Shows `session` (the same VM started again, e.g. from a snapshot) instead.
    pub fn replace_session(&mut self, session: Session) {
        self.watcher = None;
        self.captured = false;
        self.thumbnail_saved = false;
        self.buttons = MouseButtons::default();
        self.undo_pending = None;
        let old = std::mem::replace(&mut self.session, session);
        // Unmapping a large guest's RAM takes a while; the UI does not wait for it.
        std::thread::spawn(move || drop(old));
    }

    /// The window title.
    pub fn title(&self) -> String {
        let state = match self.session.state {
            RunState::Created | RunState::Running => "Running",
            RunState::Paused => "Paused",
            RunState::Off => "Off",
        };
        format!("{} — {state} — Terrarium", self.session.config.name)
    }

    /// Takes keyboard and mouse for the guest.
    pub fn capture(&mut self, ctx: &egui::Context) {
        if !self.captured && self.session.is_on() {
            self.captured = true;
            ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(egui::CursorGrab::Locked));
            ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(false));
        }
    }

    /// Gives keyboard and mouse back to the host; the guest sees every key and button released.
    pub fn release(&mut self, ctx: &egui::Context) {
        if self.captured {
            self.captured = false;
            self.session.machine().input().release_all_keys();
            if self.buttons != MouseButtons::default() {
                self.buttons = MouseButtons::default();
                self.session
                    .machine()
                    .input()
                    .mouse(MouseEvent::buttons(self.buttons));
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(egui::CursorGrab::None));
            ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(true));
        }
    }

    /// Draws the console into `ui` (the console's own window or an embedded one).
    pub fn show(&mut self, ui: &mut egui::Ui) -> Vec<ConsoleRequest> {
        let ctx = ui.ctx().clone();
        let mut requests = Vec::new();
        self.frames += 1;
        self.session.poll();
        if !self.session.is_on() {
            self.release(&ctx);
        }
        self.session
            .screen
            .update(&ctx, &self.session.machine().framebuffer());
        self.handle_drops(&ctx, &mut requests);

        egui::Panel::top("console-menu").show(ui, |ui| self.menu_bar(ui, &mut requests));
        egui::Panel::bottom("console-status").show(ui, |ui| self.status_bar(ui));
        if self.show_snapshots {
            egui::Panel::right("console-snapshots")
                .resizable(true)
                .default_size(260.0)
                .show(ui, |ui| {
                    let ram = self
                        .session
                        .is_on()
                        .then_some(self.session.config.memory_mib << 20);
                    if let Some(a) = self.snapshots.show(ui, &self.session.dir, ram) {
                        requests.push(ConsoleRequest::Snapshot(a));
                    }
                });
        }
        if self.show_serial {
            egui::Panel::bottom("console-serial")
                .resizable(true)
                .default_size(160.0)
                .show(ui, |ui| self.serial_view(ui));
        }
        egui::CentralPanel::default()
            .frame(egui::Frame::NONE.fill(egui::Color32::BLACK))
            .show(ui, |ui| self.screen_view(ui, &mut requests));

        if self.confirm_close {
            self.close_dialog(&ctx, &mut requests);
        }
        if self.session.is_on() {
            if self.watcher.is_none() {
                let viewport = ctx.viewport_id();
                self.watcher = Some(ScreenWatcher::spawn(
                    ctx.clone(),
                    viewport,
                    self.session.machine(),
                ));
            }
            if let Some(w) = &self.watcher {
                w.set_interactive(self.captured);
            }
            // Screen changes come from the watcher; the clock, the lights going out and serial
            // output need a slower beat.
            let beat = if self.show_serial { 100 } else { 500 };
            ctx.request_repaint_after(Duration::from_millis(beat));
        } else {
            self.watcher = None;
        }
        requests
    }

    fn handle_drops(&mut self, ctx: &egui::Context, requests: &mut Vec<ConsoleRequest>) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for path in dropped {
            match media_detect::probe(&path) {
                Ok(info) if info.kind == media_detect::MediaKind::Cdrom => {
                    match self.session.machine().change_cdrom(Some(&path)) {
                        Ok(()) => requests.push(ConsoleRequest::CdChanged(Some(path))),
                        Err(e) => requests.push(ConsoleRequest::Error(e.to_string())),
                    }
                }
                Ok(_) => requests.push(ConsoleRequest::Error(format!(
                    "{} is not a CD image: drop an ISO on a running VM to put it in the CD \
                     drive; other images are added in Settings while the VM is off",
                    path.display()
                ))),
                Err(e) => requests.push(ConsoleRequest::Error(e.to_string())),
            }
        }
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui, requests: &mut Vec<ConsoleRequest>) {
        let on = self.session.is_on();
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("Machine", |ui| {
                let pause = if self.session.state == RunState::Paused {
                    "Resume"
                } else {
                    "Pause"
                };
                if ui.add_enabled(on, egui::Button::new(pause)).clicked() {
                    self.session.toggle_pause();
                }
                if ui.add_enabled(on, egui::Button::new("Reset")).clicked() {
                    self.session.machine().reset();
                }
                if ui.add_enabled(on, egui::Button::new("Power off")).clicked() {
                    self.session.power_off();
                }
                if ui
                    .add_enabled(on, egui::Button::new("Save state and close"))
                    .on_hover_text("Starting the VM again resumes where it is now")
                    .clicked()
                {
                    match self.session.save_and_close() {
                        Ok(()) => requests.push(ConsoleRequest::Close),
                        Err(e) => requests.push(ConsoleRequest::Error(e)),
                    }
                }
                ui.separator();
                if ui
                    .add_enabled(on, egui::Button::new("Insert CD image…"))
                    .clicked()
                {
                    if let Some(p) = rfd::FileDialog::new()
                        .add_filter("CD image", &["iso"])
                        .pick_file()
                    {
                        match self.session.machine().change_cdrom(Some(&p)) {
                            Ok(()) => requests.push(ConsoleRequest::CdChanged(Some(p))),
                            Err(e) => requests.push(ConsoleRequest::Error(e.to_string())),
                        }
                    }
                }
                if ui.add_enabled(on, egui::Button::new("Eject CD")).clicked() {
                    match self.session.machine().change_cdrom(None) {
                        Ok(()) => requests.push(ConsoleRequest::CdChanged(None)),
                        Err(e) => requests.push(ConsoleRequest::Error(e.to_string())),
                    }
                }
            });
            ui.menu_button("Keyboard", |ui| {
                for (label, keys) in COMBOS {
                    if ui.add_enabled(on, egui::Button::new(*label)).clicked() {
                        let input = self.session.machine().input();
                        for k in keys.iter() {
                            input.key(KeyEvent::press(*k));
                        }
                        for k in keys.iter().rev() {
                            input.key(KeyEvent::release(*k));
                        }
                    }
                }
            });
            ui.menu_button("View", |ui| {
                ui.radio_value(&mut self.scale, ScreenScale::Fit, "Scale to fit");
                ui.radio_value(&mut self.scale, ScreenScale::OneToOne, "Actual size (1:1)");
                if ui.checkbox(&mut self.fullscreen, "Full screen").changed() {
                    ui.ctx()
                        .send_viewport_cmd(egui::ViewportCommand::Fullscreen(self.fullscreen));
                }
                ui.checkbox(&mut self.show_serial, "Serial console");
                ui.checkbox(&mut self.show_snapshots, "Snapshots");
            });
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        let lights = self.session.lights();
        ui.horizontal_wrapped(|ui| {
            let state = match self.session.state {
                RunState::Created | RunState::Running => "Running",
                RunState::Paused => "Paused",
                RunState::Off => "Off",
            };
            ui.label(egui::RichText::new(state).strong());
            ui.separator();
            if let Some((name, done, total)) = self.session.snapshot_saving() {
                let percent = (done * 100).checked_div(total).unwrap_or(0);
                ui.label(format!("Saving snapshot \"{name}\": {percent}%"));
                ui.separator();
                ui.ctx()
                    .request_repaint_after(std::time::Duration::from_millis(100));
            }
            let cpu = match self.session.backend {
                "kvm" => "CPU: KVM (hardware)",
                "emu" => "CPU: software",
                other => other,
            };
            ui.label(cpu);
            ui.separator();
            let up = self.session.uptime().as_secs();
            ui.label(format!(
                "Up {}:{:02}:{:02}",
                up / 3600,
                up / 60 % 60,
                up % 60
            ));
            ui.separator();
            for (name, lit) in [
                ("Disk", lights.disk),
                ("CD", lights.cdrom),
                ("Floppy", lights.floppy),
            ] {
                let color = if lit {
                    egui::Color32::from_rgb(0x3c, 0xd0, 0x5a)
                } else {
                    egui::Color32::from_gray(0x60)
                };
                let (rect, _) =
                    ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
                ui.painter().circle_filled(rect.center(), 4.5, color);
                ui.label(name);
            }
            ui.separator();
            let devices = self.session.machine().active_devices();
            let synthetic = devices
                .iter()
                .filter(|d| d.kind == DeviceKind::Synthetic)
                .count();
            let summary = format!(
                "Devices: {} emulated, {synthetic} synthetic",
                devices.len() - synthetic
            );
            let tip = devices
                .iter()
                .map(|d| {
                    let kind = match d.kind {
                        DeviceKind::Emulated => "emulated",
                        DeviceKind::Synthetic => "synthetic",
                    };
                    format!("{}: {} ({kind})", d.role, d.name)
                })
                .collect::<Vec<_>>()
                .join("\n");
            ui.label(summary).on_hover_text(tip);
            ui.separator();
            let hint = if self.captured {
                format!(
                    "Press {} to release keyboard and mouse",
                    self.session.config.host_key.label()
                )
            } else {
                "Click the screen to capture keyboard and mouse".to_string()
            };
            ui.label(egui::RichText::new(hint).italics());
        });
    }

    fn serial_view(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let l = ui.label("Serial input");
            let edit = ui
                .add(egui::TextEdit::singleline(&mut self.serial_line).desired_width(300.0))
                .labelled_by(l.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (ui.button("Send").clicked() || enter) && self.session.is_on() {
                let mut line = std::mem::take(&mut self.serial_line).into_bytes();
                line.push(b'\r');
                self.session.machine().serial_input(&line);
            }
        });
        egui::ScrollArea::vertical()
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show(ui, |ui| {
                ui.add(
                    egui::Label::new(egui::RichText::new(&self.session.serial).monospace())
                        .wrap_mode(egui::TextWrapMode::Wrap),
                );
            });
    }

    fn screen_view(&mut self, ui: &mut egui::Ui, requests: &mut Vec<ConsoleRequest>) {
        if let Some(banner) = &self.session.banner {
            egui::Frame::NONE
                .fill(egui::Color32::from_rgb(0x4a, 0x3b, 0x10))
                .inner_margin(6.0)
                .show(ui, |ui| {
                    ui.colored_label(egui::Color32::from_rgb(0xff, 0xe0, 0x90), banner);
                });
        }
        if !self.session.is_on() {
            ui.vertical_centered(|ui| {
                ui.add_space(40.0);
                let why = match &self.session.off {
                    Some(machine::OffReason::GuestPowerOff) => "The guest powered off.".into(),
                    Some(machine::OffReason::Error(e)) => format!("The VM stopped: {e}"),
                    _ => "The VM is off.".into(),
                };
                ui.colored_label(egui::Color32::WHITE, why);
                if self.undo_pending() {
                    self.undo_choice(ui, requests);
                    return;
                }
                ui.horizontal(|ui| {
                    if ui.button("Start again").clicked() {
                        requests.push(ConsoleRequest::Restart);
                    }
                    if ui.button("Close").clicked() {
                        requests.push(ConsoleRequest::Close);
                    }
                });
            });
            return;
        }
        let Some(texture) = self.session.screen.texture().cloned() else {
            ui.centered_and_justified(|ui| ui.colored_label(egui::Color32::GRAY, "No signal"));
            return;
        };
        let tex_size = texture.size_vec2();
        let avail = ui.available_size();
        let size = match self.scale {
            ScreenScale::OneToOne => tex_size / ui.ctx().pixels_per_point(),
            ScreenScale::Fit => {
                let s = (avail.x / tex_size.x).min(avail.y / tex_size.y).max(0.01);
                tex_size * s
            }
        };
        let response = ui
            .centered_and_justified(|ui| {
                ui.add(
                    egui::Image::new((texture.id(), size))
                        .sense(egui::Sense::click())
                        .fit_to_exact_size(size),
                )
            })
            .inner;
        let response = response.on_hover_text_at_pointer(if self.captured {
            ""
        } else {
            "Click to capture keyboard and mouse"
        });
        if response.clicked() && !self.captured {
            self.capture(ui.ctx());
            return;
        }
        if self.captured {
            let per_point = tex_size.x / size.x.max(1.0);
            self.forward_input(ui.ctx(), per_point);
        }
    }

    /// True when the VM is off (not saved) with undo disks holding this session's changes;
    /// looked up once when the VM has turned off.
    fn undo_pending(&mut self) -> bool {
        if self.session.is_on() || self.session.saved || !self.session.config.undo_disks {
            return false;
        }
        *self.undo_pending.get_or_insert_with(|| {
            vm_library::undo::has_pending_changes(&self.session.dir, &self.session.config)
        })
    }

    /// Asks what becomes of the undo disks' changes.
    fn undo_choice(&mut self, ui: &mut egui::Ui, requests: &mut Vec<ConsoleRequest>) {
        ui.add_space(12.0);
        ui.colored_label(
            egui::Color32::WHITE,
            "This VM has undo disks. What should happen to the changes of this session?",
        );
        let mut action = None;
        ui.horizontal(|ui| {
            if ui
                .button("Keep changes")
                .on_hover_text("The next start continues with them")
                .clicked()
            {
                action = Some(vm_library::undo::UndoAction::Keep);
            }
            if ui
                .button("Commit changes")
                .on_hover_text("Write them into the hard disks")
                .clicked()
            {
                action = Some(vm_library::undo::UndoAction::Commit);
            }
            if ui
                .button("Discard changes")
                .on_hover_text("The hard disks stay as they were before this session")
                .clicked()
            {
                action = Some(vm_library::undo::UndoAction::Discard);
            }
        });
        if let Some(action) = action {
            self.undo_pending = Some(false);
            let done = vm_library::undo::finish(
                &self.session.dir,
                &self.session.config,
                action,
                &mut |_, _| {},
            );
            match done {
                Ok(()) => requests.push(ConsoleRequest::Close),
                Err(e) => requests.push(ConsoleRequest::Error(e.to_string())),
            }
        }
    }

    /// Sends this frame's keyboard and mouse events to the guest.
    fn forward_input(&mut self, ctx: &egui::Context, guest_pixels_per_point: f32) {
        let host = host_key(self.session.config.host_key);
        let events = ctx.input(|i| i.events.clone());
        let raw_motion = events
            .iter()
            .any(|e| matches!(e, egui::Event::MouseMoved(_)));
        let input = self.session.machine().input();
        let mut motion = egui::Vec2::ZERO;
        let mut wheel = 0i32;
        let mut buttons = self.buttons;
        for event in &events {
            match event {
                egui::Event::Key {
                    key,
                    physical_key,
                    pressed,
                    ..
                } => {
                    let k = physical_key.unwrap_or(*key);
                    if k == host {
                        if *pressed {
                            self.release(ctx);
                            return;
                        }
                        continue;
                    }
                    if let Some(pc) = pc_key(k) {
                        input.key(KeyEvent {
                            key: pc,
                            pressed: *pressed,
                        });
                    }
                }
                egui::Event::MouseMoved(d) => motion += *d,
                egui::Event::PointerButton {
                    button, pressed, ..
                } => match button {
                    egui::PointerButton::Primary => buttons.left = *pressed,
                    egui::PointerButton::Secondary => buttons.right = *pressed,
                    egui::PointerButton::Middle => buttons.middle = *pressed,
                    _ => {}
                },
                egui::Event::MouseWheel { delta, .. } => {
                    if delta.y > 0.0 {
                        wheel += 1;
                    } else if delta.y < 0.0 {
                        wheel -= 1;
                    }
                }
                _ => {}
            }
        }
        if !raw_motion {
            motion = ctx.input(|i| i.pointer.delta()) * guest_pixels_per_point;
        }
        let (dx, dy) = (motion.x.round() as i32, motion.y.round() as i32);
        if dx != 0 || dy != 0 || wheel != 0 || buttons != self.buttons {
            self.buttons = buttons;
            input.mouse(MouseEvent {
                dx,
                dy,
                dz: wheel,
                buttons,
            });
        }
    }

    fn close_dialog(&mut self, ctx: &egui::Context, requests: &mut Vec<ConsoleRequest>) {
        let modal =
            egui::Modal::new(egui::Id::unique(("close-vm", &self.session.dir))).show(ctx, |ui| {
                ui.heading("Close the VM?");
                ui.label(format!(
                    "{} is still running. Save its state to resume it later where it is, or \
                     power it off like pulling the plug.",
                    self.session.config.name
                ));
                ui.horizontal(|ui| {
                    if ui.button("Save state").clicked() {
                        self.confirm_close = false;
                        match self.session.save_and_close() {
                            Ok(()) => requests.push(ConsoleRequest::Close),
                            Err(e) => requests.push(ConsoleRequest::Error(e)),
                        }
                    }
                    if ui.button("Power off").clicked() {
                        self.session.power_off();
                        self.confirm_close = false;
                        requests.push(ConsoleRequest::Close);
                    }
                    if ui.button("Keep running").clicked() {
                        self.confirm_close = false;
                    }
                });
            });
        if modal.should_close() {
            self.confirm_close = false;
        }
    }
}
