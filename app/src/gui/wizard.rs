//! The new-VM wizard: one page of settings, prefilled from a dropped image when there is one.

use super::form::{path_field, VmForm};
use media_detect::{MediaInfo, MediaKind, OsFamily};
use std::path::{Path, PathBuf};
use vm_library::{BootChoice, DiskPlan, NewDiskFormat, VmConfig};

/// What to do about the new VM's hard disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskChoice {
    /// Create a new image in the VM folder.
    Create,
    /// Use an image that exists.
    Existing,
    /// No hard disk.
    None,
}

/// What the user did with the wizard this frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WizardOutcome {
    /// Still open.
    Open,
    /// Closed without creating anything.
    Cancelled,
    /// Create the VM (and start it when `start`).
    Create {
        /// Start it right away.
        start: bool,
    },
}

/// The wizard's state.
#[derive(Debug, Clone)]
pub struct Wizard {
    /// The shared settings fields.
    pub form: VmForm,
    /// Hard disk choice.
    pub disk: DiskChoice,
    /// Format of a new disk.
    pub new_disk_format: NewDiskFormat,
    /// Size of a new disk in GiB.
    pub new_disk_gib: u64,
    /// Path of an existing disk image.
    pub existing_disk: String,
    /// What detection found, shown to the user.
    pub detected: Vec<String>,
    /// The last problem creating the VM, shown in the wizard.
    pub error: Option<String>,
}

impl Wizard {
    /// An empty wizard ("New…").
    pub fn new() -> Self {
        let os = OsFamily::Linux;
        Self {
            form: VmForm::new("New VM", os),
            disk: DiskChoice::Create,
            new_disk_format: NewDiskFormat::Vhd,
            new_disk_gib: os.default_disk_gib().max(1),
            existing_disk: String::new(),
            detected: Vec::new(),
            error: None,
        }
    }

    /// A wizard prefilled for the image at `path` that `info` describes.
    pub fn for_media(path: &Path, info: &MediaInfo) -> Self {
        let mut w = Self::new();
        w.form = VmForm::new(&info.suggested_name, info.os);
        w.form.os_name = info.os_name.clone();
        w.new_disk_gib = info.os.default_disk_gib();
        w.disk = if info.os.default_disk_gib() == 0 {
            DiskChoice::None
        } else {
            DiskChoice::Create
        };
        let shown = path.display().to_string();
        match info.kind {
            MediaKind::Cdrom => {
                w.form.cdrom = shown;
                w.form.boot = BootChoice::Cd;
            }
            MediaKind::HardDisk => {
                w.disk = DiskChoice::Existing;
                w.existing_disk = shown;
                w.form.boot = BootChoice::Disk;
            }
            MediaKind::Floppy => {
                w.form.floppy = shown;
                w.form.boot = BootChoice::Floppy;
            }
        }
        let what = match info.kind {
            MediaKind::Cdrom => "CD image",
            MediaKind::HardDisk => "hard disk image",
            MediaKind::Floppy => "floppy image",
        };
        let name = info.os_name.as_deref().unwrap_or(info.os.label());
        w.detected.push(format!("{what}: {name}"));
        w.detected.extend(info.evidence.iter().cloned());
        w
    }

    /// Sets the defaults that follow from the OS family.
    pub fn apply_family_defaults(&mut self) {
        self.form.memory_mib = self.form.os.default_memory_mib();
        let gib = self.form.os.default_disk_gib();
        if gib > 0 {
            self.new_disk_gib = gib;
        }
    }

    /// The VM configuration and disk plan the wizard describes.
    pub fn plan(&self) -> Result<(VmConfig, DiskPlan), String> {
        let mut config = VmConfig::new(self.form.name.trim(), self.form.os);
        self.form.apply(&mut config);
        config.validate().map_err(|e| e.to_string())?;
        let disk = match self.disk {
            DiskChoice::None => DiskPlan::None,
            DiskChoice::Create => {
                if self.new_disk_gib == 0 {
                    return Err("the new hard disk needs a size of at least 1 GiB".into());
                }
                DiskPlan::Create {
                    format: self.new_disk_format,
                    size_bytes: self.new_disk_gib << 30,
                }
            }
            DiskChoice::Existing => {
                let p = self.existing_disk.trim();
                if p.is_empty() {
                    return Err("choose the existing hard disk image, or create a new one".into());
                }
                DiskPlan::Existing(PathBuf::from(p))
            }
        };
        Ok((config, disk))
    }

    /// Draws the wizard as a modal dialog.
    pub fn show(&mut self, ctx: &egui::Context) -> WizardOutcome {
        let mut outcome = WizardOutcome::Open;
        let modal = egui::Modal::new(egui::Id::unique("new-vm-wizard")).show(ctx, |ui| {
            ui.set_width(460.0);
            ui.heading("New virtual machine");
            if !self.detected.is_empty() {
                egui::Frame::group(ui.style()).show(ui, |ui| {
                    ui.label(egui::RichText::new("Detected").strong());
                    for line in &self.detected {
                        ui.label(line);
                    }
                });
            }
            ui.add_space(6.0);
            if self.form.show(ui) {
                self.apply_family_defaults();
            }
            ui.add_space(6.0);
            ui.label(egui::RichText::new("Hard disk").strong());
            ui.horizontal(|ui| {
                ui.radio_value(&mut self.disk, DiskChoice::Create, "Create new");
                ui.radio_value(&mut self.disk, DiskChoice::Existing, "Use existing");
                ui.radio_value(&mut self.disk, DiskChoice::None, "None");
            });
            match self.disk {
                DiskChoice::Create => {
                    ui.horizontal(|ui| {
                        let l = ui.label("Size (GiB)");
                        ui.add(egui::DragValue::new(&mut self.new_disk_gib).range(1..=2048))
                            .labelled_by(l.id);
                        ui.radio_value(&mut self.new_disk_format, NewDiskFormat::Vhd, "VHD");
                        ui.radio_value(&mut self.new_disk_format, NewDiskFormat::Qcow2, "qcow2");
                    });
                }
                DiskChoice::Existing => {
                    ui.horizontal(|ui| {
                        let l = ui.label("Image");
                        path_field(
                            ui,
                            &mut self.existing_disk,
                            l.id,
                            "Hard disk image",
                            &["vhd", "qcow2", "img", "raw"],
                        );
                    });
                }
                DiskChoice::None => {}
            }
            if let Some(e) = &self.error {
                ui.add_space(6.0);
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                if ui.button("Create").clicked() {
                    outcome = WizardOutcome::Create { start: false };
                }
                if ui.button("Create and start").clicked() {
                    outcome = WizardOutcome::Create { start: true };
                }
                if ui.button("Cancel").clicked() {
                    outcome = WizardOutcome::Cancelled;
                }
            });
        });
        if modal.should_close() && outcome == WizardOutcome::Open {
            outcome = WizardOutcome::Cancelled;
        }
        outcome
    }
}

impl Default for Wizard {
    fn default() -> Self {
        Self::new()
    }
}
