//! The desktop app: the VM library window, one console window per running VM, the new-VM
//! wizard and the settings dialog.
//!
//! Drawing is egui on eframe's glow renderer. All state lives in [`TerrariumApp`]; the same
//! [`TerrariumApp::show`] draws the real window and the egui_kittest harness in the tests.

mod console;
mod form;
mod icons;
mod keymap;
mod session;
mod snapshots;
#[cfg(test)]
mod tests;
mod wizard;

use console::{Console, ConsoleRequest};
use form::VmForm;
use icons::{Icons, StateIcon};
use media_detect::OsFamily;
use session::Session;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use vm_library::{BackendChoice, DiskPlan, Library, VmConfig, VmEntry};
use wizard::{Wizard, WizardOutcome};

/// Options for [`run`].
#[derive(Debug, Default, Clone)]
pub struct GuiOptions {
    /// Start this VM (by name) when the window opens.
    pub start: Option<String>,
    /// Write frame statistics to this file when the app exits.
    pub stats: Option<PathBuf>,
}

/// Opens the desktop app; returns the process exit code.
pub fn run(options: GuiOptions) -> anyhow::Result<i32> {
    let library = Library::open_default()?;
    let mut app = TerrariumApp::new(library);
    app.firmware = firmware_override();
    app.offer_demo();
    if let Some(name) = &options.start {
        app.reload();
        match app.entries.iter().find(|e| e.display_name() == *name) {
            Some(e) => {
                let dir = e.dir.clone();
                app.start(&dir);
            }
            None => app
                .errors
                .push(format!("there is no VM named {name} in the library")),
        }
    }
    app.stats_file = options.stats;
    let icon = icons::decode_png(icons::APP_ICON_PNG).map(|(rgba, [w, h])| egui::IconData {
        rgba,
        width: w as u32,
        height: h as u32,
    });
    let mut viewport = egui::ViewportBuilder::default()
        .with_title("Terrarium")
        .with_app_id("terrarium")
        .with_inner_size([900.0, 600.0])
        .with_drag_and_drop(true);
    if let Some(icon) = icon {
        viewport = viewport.with_icon(icon);
    }
    let native = eframe::NativeOptions {
        viewport,
        renderer: eframe::Renderer::Glow,
        ..Default::default()
    };
    eframe::run_native(
        "Terrarium",
        native,
        Box::new(move |cc| {
            cc.egui_ctx.set_embed_viewports(false);
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot open the window: {e} (a desktop session with X11 or Wayland and OpenGL is \
             needed; `terrarium run` runs VMs without one)"
        )
    })?;
    Ok(0)
}

/// The open Settings dialog.
struct SettingsDialog {
    dir: PathBuf,
    base: VmConfig,
    form: VmForm,
    disks: Vec<String>,
    error: Option<String>,
}

/// A snapshot delete running on its own thread (it may merge gigabytes of disk layers).
struct MergeJob {
    dir: PathBuf,
    progress: Arc<Mutex<(u64, u64)>>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

/// A cached library thumbnail.
struct Thumbnail {
    modified: SystemTime,
    texture: egui::TextureHandle,
}

/// The whole desktop app.
pub struct TerrariumApp {
    library: Library,
    entries: Vec<VmEntry>,
    selected: Option<PathBuf>,
    /// Running VMs. Each console draws in its own deferred viewport, so a guest screen update
    /// repaints only its window, not the library.
    consoles: Vec<Arc<Mutex<Console>>>,
    wizard: Option<Wizard>,
    settings: Option<SettingsDialog>,
    confirm_remove: Option<PathBuf>,
    /// The Snapshots dialog of a VM that is off.
    library_snapshots: Option<(PathBuf, snapshots::SnapshotPanel)>,
    /// A snapshot delete in progress.
    merge: Option<MergeJob>,
    errors: Vec<String>,
    icons: Icons,
    thumbnails: HashMap<PathBuf, Thumbnail>,
    stats_file: Option<PathBuf>,
    /// BIOS image instead of the system's SeaBIOS (`TERRARIUM_FIRMWARE`).
    firmware: Option<PathBuf>,
    /// Frames drawn, for the statistics.
    frames: u64,
    /// When the first frame was drawn.
    cpu_started: Option<std::time::Instant>,
    /// When the statistics file was last written.
    stats_written: Option<std::time::Instant>,
}

/// The BIOS to use instead of the system's SeaBIOS: `TERRARIUM_FIRMWARE`, or, when the seabios
/// package is not installed, the copy a development checkout keeps with its test assets.
fn firmware_override() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TERRARIUM_FIRMWARE") {
        return Some(PathBuf::from(p));
    }
    if machine::firmware::find_default().is_ok() {
        return None;
    }
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/assets/bios.bin");
    dev.is_file().then_some(dev)
}

/// Locks a console; a panic while drawing it must not take the app down with it.
fn lock(console: &Mutex<Console>) -> MutexGuard<'_, Console> {
    console.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the demo ISO (a small Linux made from Debian packages) may be.
fn demo_iso_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("TERRARIUM_DEMO_ISO") {
        v.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            v.push(dir.join("../share/terrarium/demo.iso"));
            v.push(dir.join("demo.iso"));
        }
    }
    v.push(PathBuf::from("/usr/share/terrarium/demo.iso"));
    // A development checkout keeps it with the test assets.
    v.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/assets/demo.iso"));
    v
}

impl TerrariumApp {
    /// The app over `library`.
    pub fn new(library: Library) -> Self {
        let mut app = Self {
            library,
            entries: Vec::new(),
            selected: None,
            consoles: Vec::new(),
            wizard: None,
            settings: None,
            confirm_remove: None,
            library_snapshots: None,
            merge: None,
            errors: Vec::new(),
            icons: Icons::default(),
            thumbnails: HashMap::new(),
            stats_file: None,
            firmware: None,
            frames: 0,
            cpu_started: None,
            stats_written: None,
        };
        app.reload();
        app
    }

    /// Re-reads the library from disk.
    pub fn reload(&mut self) {
        self.entries = self.library.list();
        if let Some(sel) = &self.selected {
            if !self.entries.iter().any(|e| &e.dir == sel) {
                self.selected = None;
            }
        }
        if self.selected.is_none() {
            self.selected = self.entries.first().map(|e| e.dir.clone());
        }
    }

    /// On the very first start (empty library, never offered before), adds the demo VM when
    /// its ISO is present.
    pub fn offer_demo(&mut self) {
        let marker = self.library.root().join(".demo-offered");
        if !self.entries.is_empty() || marker.exists() {
            return;
        }
        if demo_iso_candidates().iter().any(|p| p.is_file()) {
            self.create_demo();
        }
        let _ = vm_library::write_atomic(&marker, b"");
    }

    /// Creates the demo VM from the demo ISO, or explains where the ISO comes from.
    fn create_demo(&mut self) {
        let Some(iso) = demo_iso_candidates().into_iter().find(|p| p.is_file()) else {
            self.errors.push(
                "the demo CD (demo.iso) is not installed: in a source checkout, \
                 scripts/fetch-assets.sh builds it from Debian's packages; or set \
                 TERRARIUM_DEMO_ISO to an ISO to use"
                    .into(),
            );
            return;
        };
        let iso = iso.canonicalize().unwrap_or(iso);
        let mut config = VmConfig::new("Demo Linux", OsFamily::Linux);
        config.os_name = Some("Linux with a busybox shell".into());
        config.memory_mib = 256;
        config.cdrom = Some(iso);
        match self.library.create(config, DiskPlan::None) {
            Ok(entry) => {
                self.selected = Some(entry.dir);
                self.reload();
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    fn console_index(&self, dir: &Path) -> Option<usize> {
        self.consoles
            .iter()
            .position(|c| lock(c).session.dir == dir)
    }

    /// Deletes snapshot `id` of the VM in `dir` on a thread, with a progress dialog.
    fn start_merge(&mut self, dir: &Path, id: u32) {
        if self.merge.is_some() {
            self.errors
                .push("another snapshot is being deleted; wait for it to finish".into());
            return;
        }
        let progress = Arc::new(Mutex::new((0, 0)));
        let (p, d) = (progress.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            vm_library::snapshots::delete(&d, id, &mut |done, total| {
                *p.lock().unwrap_or_else(|e| e.into_inner()) = (done, total);
            })
            .map_err(|e| e.to_string())
        });
        self.merge = Some(MergeJob {
            dir: dir.to_path_buf(),
            progress,
            thread,
        });
    }

    fn show_merge(&mut self, ctx: &egui::Context) {
        let Some(job) = &self.merge else { return };
        if job.thread.is_finished() {
            if let Some(job) = self.merge.take() {
                match job.thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => self.errors.push(e),
                    Err(_) => self.errors.push("deleting the snapshot failed".into()),
                }
            }
            self.reload();
            return;
        }
        let (done, total) = *job.progress.lock().unwrap_or_else(|e| e.into_inner());
        egui::Modal::new(egui::Id::unique("snapshot-merge")).show(ctx, |ui| {
            ui.heading("Deleting the snapshot");
            ui.label(
                "Merging its disk layers. The other snapshots and the current state are safe; \
                 if this is interrupted, delete the snapshot again to finish.",
            );
            let fraction = if total > 0 {
                done as f32 / total as f32
            } else {
                0.0
            };
            ui.add(egui::ProgressBar::new(fraction).show_percentage());
        });
        ctx.request_repaint_after(std::time::Duration::from_millis(100));
    }

    /// Starts the VM in `dir` (or focuses its console when it runs already).
    pub fn start(&mut self, dir: &Path) {
        if self.merge.as_ref().is_some_and(|m| m.dir == dir) {
            self.errors
                .push("a snapshot of this VM is being deleted; start it when that is done".into());
            return;
        }
        if let Some(i) = self.console_index(dir) {
            if lock(&self.consoles[i]).session.is_on() {
                return;
            }
            self.consoles.remove(i);
        }
        let config = match Library::load(dir) {
            Ok(c) => c,
            Err(e) => {
                self.errors.push(e.to_string());
                return;
            }
        };
        match Session::start(dir, &config, self.firmware.as_deref()) {
            Ok(s) => self.consoles.push(Arc::new(Mutex::new(Console::new(s)))),
            Err(e) => self
                .errors
                .push(format!("cannot start {}: {e}", config.name)),
        }
    }

    fn state_of(&self, dir: &Path) -> StateIcon {
        match self
            .console_index(dir)
            .map(|i| lock(&self.consoles[i]).session.state)
        {
            Some(machine::RunState::Running | machine::RunState::Created) => StateIcon::Running,
            Some(machine::RunState::Paused) => StateIcon::Paused,
            _ if vm_library::has_saved_state(dir) => StateIcon::Saved,
            _ => StateIcon::Off,
        }
    }

    /// Draws everything: the library in `ui`, consoles in their own windows, dialogs on top.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.frames += 1;
        self.cpu_started.get_or_insert_with(std::time::Instant::now);
        let due = self
            .stats_written
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if self.stats_file.is_some() && due {
            self.stats_written = Some(std::time::Instant::now());
            self.write_stats();
        }
        self.handle_library_drops(&ctx);
        self.library_view(ui);
        self.show_consoles(&ctx);
        self.show_wizard(&ctx);
        self.show_settings(&ctx);
        self.show_remove_dialog(&ctx);
        self.show_library_snapshots(&ctx);
        self.show_merge(&ctx);
        self.show_errors(&ctx);
    }

    fn handle_library_drops(&mut self, ctx: &egui::Context) {
        // Embedded consoles share the library's input: a drop then belongs to the console.
        if ctx.embed_viewports() && self.consoles.iter().any(|c| lock(c).session.is_on()) {
            return;
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for path in dropped {
            self.open_path(&path);
        }
    }

    /// Handles a file or folder given by drop or Open: a VM folder is imported, an image opens
    /// the wizard prefilled, anything else is refused with a dialog.
    pub fn open_path(&mut self, path: &Path) {
        if path.is_dir() {
            match self.library.import(path) {
                Ok(entry) => {
                    self.selected = Some(entry.dir);
                    self.reload();
                }
                Err(e) => self.errors.push(e.to_string()),
            }
            return;
        }
        match media_detect::probe(path) {
            Ok(info) => self.wizard = Some(Wizard::for_media(path, &info)),
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    fn library_view(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        egui::Panel::top("library-toolbar").show(ui, |ui| {
            ui.add_space(4.0);
            ui.horizontal(|ui| {
                ui.heading("Terrarium");
                ui.separator();
                if ui.button("New…").clicked() {
                    self.wizard = Some(Wizard::new());
                }
                if ui.button("Import…").clicked() {
                    if let Some(dir) = rfd::FileDialog::new()
                        .set_title("VM folder to import")
                        .pick_folder()
                    {
                        self.open_path(&dir);
                    }
                }
                let selected = self.selected.clone();
                let has = selected.is_some();
                let running = selected
                    .as_deref()
                    .and_then(|d| self.console_index(d))
                    .is_some_and(|i| lock(&self.consoles[i]).session.is_on());
                if ui
                    .add_enabled(has && !running, egui::Button::new("Settings…"))
                    .clicked()
                {
                    if let Some(dir) = &selected {
                        self.open_settings(dir);
                    }
                }
                if ui
                    .add_enabled(has && !running, egui::Button::new("Start"))
                    .clicked()
                {
                    if let Some(dir) = &selected {
                        self.start(dir);
                    }
                }
                if ui
                    .add_enabled(has && !running, egui::Button::new("Snapshots…"))
                    .clicked()
                {
                    if let Some(dir) = &selected {
                        self.library_snapshots = Some((dir.clone(), Default::default()));
                    }
                }
                if ui
                    .add_enabled(has && !running, egui::Button::new("Remove…"))
                    .clicked()
                {
                    self.confirm_remove = selected.clone();
                }
                let saved = selected
                    .as_deref()
                    .is_some_and(|d| !running && self.state_of(d) == StateIcon::Saved);
                if saved
                    && ui
                        .button("Discard saved state")
                        .on_hover_text("The next start boots the VM afresh")
                        .clicked()
                {
                    if let Some(dir) = &selected {
                        if let Err(e) = session::discard_saved_state(dir) {
                            self.errors.push(e);
                        }
                    }
                }
            });
            ui.add_space(4.0);
        });
        egui::Panel::bottom("library-status").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(format!("Library: {}", self.library.root().display()));
                if let Some(why) = machine::kvm_limitation() {
                    ui.separator();
                    ui.label("VMs set to Automatic run on the software CPU")
                        .on_hover_text(why);
                }
            });
        });
        egui::CentralPanel::default().show(ui, |ui| {
            if self.entries.is_empty() {
                self.empty_library(ui);
                return;
            }
            let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());
            if hovering {
                ui.label(
                    egui::RichText::new("Drop to create a VM from the image, or import a folder")
                        .strong(),
                );
            }
            egui::ScrollArea::vertical().show(ui, |ui| {
                let entries = self.entries.clone();
                for entry in &entries {
                    self.library_row(ui, entry);
                    ui.separator();
                }
            });
        });
    }

    fn empty_library(&mut self, ui: &mut egui::Ui) {
        ui.vertical_centered(|ui| {
            ui.add_space(60.0);
            ui.heading("No virtual machines yet");
            ui.add_space(8.0);
            ui.label("Drop an ISO, VHD, qcow2 or floppy image here to create one,");
            ui.label("or click New… to start from scratch.");
            ui.add_space(16.0);
            if ui.button("Create demo VM").clicked() {
                self.create_demo();
            }
        });
    }

    fn thumbnail(&mut self, ctx: &egui::Context, entry: &VmEntry) -> Option<egui::TextureHandle> {
        let path = entry.thumbnail_path();
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        if let Some(t) = self.thumbnails.get(&path) {
            if t.modified == modified {
                return Some(t.texture.clone());
            }
        }
        let bytes = std::fs::read(&path).ok()?;
        let (rgba, size) = icons::decode_png(&bytes)?;
        let image = egui::ColorImage::from_rgba_unmultiplied(size, &rgba);
        let texture = ctx.load_texture(
            path.display().to_string(),
            image,
            egui::TextureOptions::LINEAR,
        );
        self.thumbnails.insert(
            path,
            Thumbnail {
                modified,
                texture: texture.clone(),
            },
        );
        Some(texture)
    }

    fn library_row(&mut self, ui: &mut egui::Ui, entry: &VmEntry) {
        let ctx = ui.ctx().clone();
        let selected = self.selected.as_ref() == Some(&entry.dir);
        let os = entry
            .config
            .as_ref()
            .map(|c| c.os)
            .unwrap_or(OsFamily::Other);
        let icon = self.icons.os(&ctx, os);
        let state = self.state_of(&entry.dir);
        let state_icon = self.icons.state(&ctx, state);
        // A running VM shows its live screen; others the screen they were left at.
        let live = self.console_index(&entry.dir).and_then(|i| {
            let c = lock(&self.consoles[i]);
            c.session
                .is_on()
                .then(|| c.session.screen.texture().cloned())
                .flatten()
        });
        let thumb = live.or_else(|| self.thumbnail(&ctx, entry));
        let row = ui.horizontal(|ui| {
            ui.add(egui::Image::new((icon.id(), egui::vec2(48.0, 48.0))));
            ui.vertical(|ui| {
                let name = entry.display_name();
                let text = egui::RichText::new(&name).size(16.0).strong();
                let label = ui.selectable_label(selected, text);
                if label.clicked() {
                    self.selected = Some(entry.dir.clone());
                }
                let stopped = matches!(state, StateIcon::Off | StateIcon::Saved);
                if label.double_clicked() && stopped && entry.config.is_ok() {
                    self.start(&entry.dir.clone());
                }
                match &entry.config {
                    Ok(c) => {
                        let os_name = c.os_name.as_deref().unwrap_or(c.os.label());
                        ui.label(format!(
                            "{os_name} · {} MiB · {} CPU{}{}",
                            c.memory_mib,
                            c.cpus,
                            if c.cpus == 1 { "" } else { "s" },
                            if c.backend == BackendChoice::Emu {
                                " · software CPU"
                            } else {
                                ""
                            }
                        ));
                    }
                    Err(e) => {
                        ui.colored_label(ui.visuals().error_fg_color, e);
                    }
                }
                ui.horizontal(|ui| {
                    ui.add(egui::Image::new((state_icon.id(), egui::vec2(16.0, 16.0))));
                    ui.label(match state {
                        StateIcon::Running => "Running",
                        StateIcon::Paused => "Paused",
                        StateIcon::Saved => "Saved",
                        StateIcon::Off => "Off",
                    });
                });
            });
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if let Some(t) = thumb {
                    let s = t.size_vec2();
                    let scale = (160.0 / s.x).min(100.0 / s.y);
                    ui.add(egui::Image::new((t.id(), s * scale)));
                }
            });
        });
        if row.response.interact(egui::Sense::click()).clicked() {
            self.selected = Some(entry.dir.clone());
        }
    }

    fn open_settings(&mut self, dir: &Path) {
        match Library::load(dir) {
            Ok(base) => {
                self.settings = Some(SettingsDialog {
                    dir: dir.to_path_buf(),
                    form: VmForm::from_config(&base),
                    disks: base.disks.iter().map(|p| p.display().to_string()).collect(),
                    base,
                    error: None,
                })
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    fn show_settings(&mut self, ctx: &egui::Context) {
        let Some(dialog) = &mut self.settings else {
            return;
        };
        let mut close = false;
        let mut save = false;
        let modal = egui::Modal::new(egui::Id::unique("vm-settings")).show(ctx, |ui| {
            ui.set_width(460.0);
            ui.heading(format!("Settings of {}", dialog.base.name));
            dialog.form.show(ui);
            ui.add_space(6.0);
            ui.label(egui::RichText::new("Hard disks").strong());
            let mut remove = None;
            for (i, d) in dialog.disks.iter_mut().enumerate() {
                ui.horizontal(|ui| {
                    let l = ui.label(format!("Disk {}", i + 1));
                    form::path_field(ui, d, l.id, "Hard disk image", &["vhd", "qcow2", "img"]);
                    if ui.small_button("Remove").clicked() {
                        remove = Some(i);
                    }
                });
            }
            if let Some(i) = remove {
                dialog.disks.remove(i);
            }
            if dialog.disks.len() < 3 && ui.button("Add disk…").clicked() {
                if let Some(p) = rfd::FileDialog::new()
                    .add_filter("Hard disk image", &["vhd", "qcow2", "img", "raw"])
                    .pick_file()
                {
                    dialog.disks.push(p.display().to_string());
                }
            }
            if let Some(e) = &dialog.error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                if ui.button("Save").clicked() {
                    save = true;
                }
                if ui.button("Cancel").clicked() {
                    close = true;
                }
            });
        });
        if modal.should_close() {
            close = true;
        }
        if save {
            let mut config = dialog.base.clone();
            dialog.form.apply(&mut config);
            config.disks = dialog
                .disks
                .iter()
                .filter(|d| !d.trim().is_empty())
                .map(|d| PathBuf::from(d.trim()))
                .collect();
            let result = config
                .validate()
                .and_then(|()| self.library.save(&dialog.dir, &config));
            match result {
                Ok(()) => close = true,
                Err(e) => dialog.error = Some(e.to_string()),
            }
        }
        if close {
            self.settings = None;
            self.reload();
        }
    }

    fn show_wizard(&mut self, ctx: &egui::Context) {
        let Some(wizard) = &mut self.wizard else {
            return;
        };
        match wizard.show(ctx) {
            WizardOutcome::Open => {}
            WizardOutcome::Cancelled => self.wizard = None,
            WizardOutcome::Create { start } => {
                let created = wizard.plan().and_then(|(config, disk)| {
                    self.library.create(config, disk).map_err(|e| e.to_string())
                });
                match created {
                    Ok(entry) => {
                        self.wizard = None;
                        self.selected = Some(entry.dir.clone());
                        self.reload();
                        if start {
                            self.start(&entry.dir);
                        }
                    }
                    Err(e) => wizard.error = Some(e),
                }
            }
        }
    }

    fn show_library_snapshots(&mut self, ctx: &egui::Context) {
        let Some((dir, panel)) = &mut self.library_snapshots else {
            return;
        };
        let mut close = false;
        let mut action = None;
        let modal = egui::Modal::new(egui::Id::unique("library-snapshots")).show(ctx, |ui| {
            ui.set_width(360.0);
            action = panel.show(ui, dir, None);
            ui.add_space(8.0);
            if ui.button("Close").clicked() {
                close = true;
            }
        });
        let dir = dir.clone();
        if close || modal.should_close() {
            self.library_snapshots = None;
        }
        if let Some(action) = action {
            // Reverting to a running snapshot starts the VM: the dialog makes way for it.
            if matches!(action, snapshots::SnapshotAction::Revert(_)) {
                self.library_snapshots = None;
            }
            self.snapshot_action(&dir, action);
        }
    }

    fn show_remove_dialog(&mut self, ctx: &egui::Context) {
        let Some(dir) = self.confirm_remove.clone() else {
            return;
        };
        let Some(entry) = self.entries.iter().find(|e| e.dir == dir).cloned() else {
            self.confirm_remove = None;
            return;
        };
        let mut outcome = None;
        let modal = egui::Modal::new(egui::Id::unique("remove-vm")).show(ctx, |ui| {
            ui.heading(format!("Remove {}?", entry.display_name()));
            ui.label(format!("Its folder is {}.", entry.dir.display()));
            ui.horizontal(|ui| {
                if ui.button("Remove from library").clicked() {
                    outcome = Some(false);
                }
                if ui.button("Delete files").clicked() {
                    outcome = Some(true);
                }
                if ui.button("Cancel").clicked() {
                    self.confirm_remove = None;
                }
            });
        });
        if modal.should_close() {
            self.confirm_remove = None;
        }
        if let Some(delete_files) = outcome {
            self.confirm_remove = None;
            if let Err(e) = self.library.remove(&entry, delete_files) {
                self.errors.push(e.to_string());
            }
            self.reload();
        }
    }

    fn show_errors(&mut self, ctx: &egui::Context) {
        let Some(message) = self.errors.first().cloned() else {
            return;
        };
        let mut ok = false;
        let modal = egui::Modal::new(egui::Id::unique("error-dialog")).show(ctx, |ui| {
            ui.set_max_width(460.0);
            ui.heading("Something went wrong");
            ui.label(&message);
            ui.add_space(8.0);
            if ui.button("OK").clicked() {
                ok = true;
            }
        });
        if ok || modal.should_close() {
            self.errors.remove(0);
        }
    }

    fn show_consoles(&mut self, ctx: &egui::Context) {
        for console in &self.consoles {
            let (id, title) = {
                let c = lock(console);
                (
                    egui::ViewportId::from_hash_of(("console", &c.session.dir)),
                    c.title(),
                )
            };
            let builder = egui::ViewportBuilder::default()
                .with_title(title)
                .with_inner_size([820.0, 680.0])
                .with_position([280.0, 120.0])
                .with_drag_and_drop(true);
            let shared = console.clone();
            ctx.show_viewport_deferred(id, builder, move |ui, _class| {
                let mut c = lock(&shared);
                let mut requests = Vec::new();
                if ui.ctx().input(|i| i.viewport().close_requested()) {
                    if c.session.is_on() {
                        ui.ctx()
                            .send_viewport_cmd(egui::ViewportCommand::CancelClose);
                        c.confirm_close = true;
                    } else {
                        requests.push(ConsoleRequest::Close);
                    }
                }
                requests.extend(c.show(ui));
                if !requests.is_empty() {
                    c.requests.extend(requests);
                    ui.ctx().request_repaint_of(egui::ViewportId::ROOT);
                }
            });
        }
        let mut closed = Vec::new();
        let mut restart = Vec::new();
        let mut cd_changes = Vec::new();
        let mut snapshot_actions = Vec::new();
        for (i, console) in self.consoles.iter().enumerate() {
            let mut c = lock(console);
            for r in std::mem::take(&mut c.requests) {
                match r {
                    ConsoleRequest::Close => closed.push(i),
                    ConsoleRequest::Restart => restart.push(c.session.dir.clone()),
                    ConsoleRequest::Error(e) => self.errors.push(e),
                    ConsoleRequest::CdChanged(p) => cd_changes.push((c.session.dir.clone(), p)),
                    ConsoleRequest::Snapshot(a) => {
                        snapshot_actions.push((c.session.dir.clone(), a))
                    }
                }
            }
            match c.session.poll_snapshot() {
                Some(Err(e)) => self.errors.push(e),
                Some(Ok(_)) => c.snapshots = Default::default(),
                None => {}
            }
            // Thumbnails are saved as a VM turns off, while its last screen is still there.
            if !c.session.is_on() && !c.thumbnail_saved {
                c.thumbnail_saved = true;
                let path = c.session.dir.join(vm_library::THUMBNAIL_FILE);
                if let Err(e) = c.session.save_thumbnail(&path) {
                    tracing::warn!("{e}");
                }
            }
        }
        for (dir, cd) in cd_changes {
            match Library::load(&dir) {
                Ok(mut c) => {
                    c.cdrom = cd;
                    if let Err(e) = self.library.save(&dir, &c) {
                        self.errors.push(e.to_string());
                    }
                }
                Err(e) => self.errors.push(e.to_string()),
            }
        }
        if self.consoles.iter().any(|c| lock(c).session.is_on()) {
            // Keep the library's live thumbnails and run states moving.
            ctx.request_repaint_after_for(
                std::time::Duration::from_secs(1),
                egui::ViewportId::ROOT,
            );
        }
        closed.dedup();
        for i in closed.into_iter().rev() {
            self.consoles.remove(i);
        }
        for dir in restart {
            self.start(&dir);
        }
        for (dir, action) in snapshot_actions {
            self.snapshot_action(&dir, action);
        }
    }

    /// Carries out a Snapshots-panel action for the VM in `dir`, running or not.
    pub fn snapshot_action(&mut self, dir: &Path, action: snapshots::SnapshotAction) {
        use snapshots::SnapshotAction;
        use vm_library::snapshots as snap;
        let console = self.console_index(dir).map(|i| self.consoles[i].clone());
        let running = console.as_ref().is_some_and(|c| lock(c).session.is_on());
        let saving = console.as_ref().and_then(|c| {
            let c = lock(c);
            c.session
                .snapshot_saving()
                .map(|(name, _, _)| name.to_string())
        });
        if let Some(name) = saving {
            self.errors.push(format!(
                "snapshot \"{name}\" is still being saved; try again when it is done"
            ));
            return;
        }
        let result = match action {
            SnapshotAction::Take(name) => match &console {
                Some(c) => lock(c).session.take_snapshot(&name).map(|_| ()),
                None => snap::take(dir, &name, None)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            },
            SnapshotAction::Rename(id, name) => {
                snap::rename(dir, id, &name).map_err(|e| e.to_string())
            }
            SnapshotAction::Delete(id) => {
                let current = snap::SnapshotTree::load(dir).map(|t| t.current == Some(id));
                if running && current.unwrap_or(true) {
                    Err(
                        "power off the VM to delete the snapshot it runs from (its changes \
                         are merged into it)"
                            .to_string(),
                    )
                } else {
                    self.start_merge(dir, id);
                    Ok(())
                }
            }
            SnapshotAction::Revert(id) => {
                if let Some(c) = &console {
                    let mut c = lock(c);
                    c.session.power_off();
                    c.session.saved = true; // No undo question: the state is being replaced.
                }
                match snap::revert(dir, id) {
                    Ok(state) => {
                        let _ = session::discard_saved_state(dir);
                        if let Some(state) = state {
                            self.start_restored(dir, &state);
                        }
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        if let Err(e) = result {
            self.errors.push(e);
        }
        self.reload();
    }

    /// Starts the VM in `dir` from the machine state in `state` (a live snapshot), replacing
    /// a console that shows it turned off.
    fn start_restored(&mut self, dir: &Path, state: &Path) {
        let config = match Library::load(dir) {
            Ok(c) => c,
            Err(e) => return self.errors.push(e.to_string()),
        };
        match Session::start_from(dir, &config, self.firmware.as_deref(), Some(state)) {
            Ok(s) => match self.console_index(dir) {
                Some(i) => lock(&self.consoles[i]).replace_session(s),
                None => self.consoles.push(Arc::new(Mutex::new(Console::new(s)))),
            },
            Err(e) => self.errors.push(format!(
                "cannot start {} from the snapshot: {e}",
                config.name
            )),
        }
    }

    /// Saves the state of every running VM (powering off those that cannot be saved), keeps
    /// their thumbnails and writes the statistics; called on exit.
    pub fn shut_down(&mut self) {
        for c in &self.consoles {
            let mut c = lock(c);
            let path = c.session.dir.join(vm_library::THUMBNAIL_FILE);
            if c.session.is_on() {
                let _ = c.session.save_thumbnail(&path);
                // Closing the app saves running VMs, as closing their windows offers to.
                if let Err(e) = c.session.save_and_close() {
                    tracing::error!("{e}; powering it off");
                }
            }
            c.session.power_off();
        }
        self.write_stats();
    }

    /// Writes frame and texture-upload counts to the statistics file, if there is one.
    fn write_stats(&self) {
        if let Some(path) = &self.stats_file {
            let (uploads, pixels, console_frames) =
                self.consoles.iter().fold((0, 0, 0), |(u, p, f), c| {
                    let c = lock(c);
                    (
                        u + c.session.screen.uploads,
                        p + c.session.screen.uploaded_pixels,
                        f + c.frames,
                    )
                });
            let secs = self.cpu_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            let text = format!(
                "frames {}\nconsole_frames {console_frames}\nuploads {uploads}\n\
                 uploaded_pixels {pixels}\nseconds {secs:.3}\n",
                self.frames
            );
            if let Err(e) = vm_library::write_atomic(path, text.as_bytes()) {
                tracing::warn!("cannot write {}: {e}", path.display());
            }
        }
    }
}

impl eframe::App for TerrariumApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.shut_down();
    }
}
