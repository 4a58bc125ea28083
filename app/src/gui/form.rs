//! The VM settings form shared by the new-VM wizard and the Settings dialog.

use media_detect::OsFamily;
use std::path::PathBuf;
use vm_library::{BackendChoice, BootChoice, HostKey, VmConfig};

/// Largest memory the form offers, in MiB (the machine accepts more from the config file).
const FORM_MAX_MEMORY_MIB: u64 = 64 * 1024;

/// Editable VM settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VmForm {
    /// VM name.
    pub name: String,
    /// OS family (icon and defaults).
    pub os: OsFamily,
    /// Detected OS name, kept from the image.
    pub os_name: Option<String>,
    /// Guest RAM.
    pub memory_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// CPU backend.
    pub backend: BackendChoice,
    /// First boot device.
    pub boot: BootChoice,
    /// CD image path ("" for an empty drive).
    pub cdrom: String,
    /// Floppy image path ("" for none).
    pub floppy: String,
    /// Host key that releases capture.
    pub host_key: HostKey,
    /// Changes go to undo layers; kept, committed or discarded at power-off.
    pub undo_disks: bool,
}

impl VmForm {
    /// Defaults for `os`.
    pub fn new(name: &str, os: OsFamily) -> Self {
        Self::from_config(&VmConfig::new(name, os))
    }

    /// The form for an existing configuration.
    pub fn from_config(c: &VmConfig) -> Self {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        Self {
            name: c.name.clone(),
            os: c.os,
            os_name: c.os_name.clone(),
            memory_mib: c.memory_mib,
            cpus: c.cpus,
            backend: c.backend,
            boot: c.boot,
            cdrom: path(&c.cdrom),
            floppy: path(&c.floppy),
            host_key: c.host_key,
            undo_disks: c.undo_disks,
        }
    }

    /// Writes the form into `c` (disks and other fields stay).
    pub fn apply(&self, c: &mut VmConfig) {
        let path = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
        c.name = self.name.trim().to_string();
        c.os = self.os;
        c.os_name = self.os_name.clone();
        c.memory_mib = self.memory_mib;
        c.cpus = self.cpus;
        c.backend = self.backend;
        c.boot = self.boot;
        c.cdrom = path(&self.cdrom);
        c.floppy = path(&self.floppy);
        c.host_key = self.host_key;
        c.undo_disks = self.undo_disks;
    }

    /// Draws the fields; true when the OS family changed (callers may update defaults).
    pub fn show(&mut self, ui: &mut egui::Ui) -> bool {
        let mut os_changed = false;
        egui::Grid::new("vm-form")
            .num_columns(2)
            .spacing([12.0, 8.0])
            .show(ui, |ui| {
                let l = ui.label("Name");
                ui.add(egui::TextEdit::singleline(&mut self.name).desired_width(260.0))
                    .labelled_by(l.id);
                ui.end_row();

                let l = ui.label("Operating system");
                let before = self.os;
                egui::ComboBox::from_id_salt("os-family")
                    .selected_text(self.os.label())
                    .show_ui(ui, |ui| {
                        for os in OsFamily::ALL {
                            ui.selectable_value(&mut self.os, os, os.label());
                        }
                    })
                    .response
                    .labelled_by(l.id);
                os_changed = before != self.os;
                ui.end_row();

                let l = ui.label("Memory (MiB)");
                ui.add(
                    egui::DragValue::new(&mut self.memory_mib)
                        .range(machine::MEMORY_RANGE_MIB.0..=FORM_MAX_MEMORY_MIB)
                        .speed(16.0),
                )
                .labelled_by(l.id);
                ui.end_row();

                let l = ui.label("Processors");
                ui.add(egui::DragValue::new(&mut self.cpus).range(1..=64))
                    .labelled_by(l.id);
                ui.end_row();

                let l = ui.label("CPU");
                egui::ComboBox::from_id_salt("backend")
                    .selected_text(backend_label(self.backend))
                    .show_ui(ui, |ui| {
                        for b in [
                            BackendChoice::Auto,
                            BackendChoice::Kvm,
                            BackendChoice::Whp,
                            BackendChoice::Emu,
                        ] {
                            ui.selectable_value(&mut self.backend, b, backend_label(b));
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();

                ui.label("Boot from");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut self.boot, BootChoice::Cd, "CD");
                    ui.radio_value(&mut self.boot, BootChoice::Disk, "Hard disk");
                    ui.radio_value(&mut self.boot, BootChoice::Floppy, "Floppy");
                });
                ui.end_row();

                let l = ui.label("CD image");
                path_field(ui, &mut self.cdrom, l.id, "CD image", &["iso"]);
                ui.end_row();

                let l = ui.label("Floppy image");
                path_field(
                    ui,
                    &mut self.floppy,
                    l.id,
                    "Floppy image",
                    &["img", "ima", "flp", "vfd"],
                );
                ui.end_row();

                let l = ui.label("Host key");
                egui::ComboBox::from_id_salt("host-key")
                    .selected_text(self.host_key.label())
                    .show_ui(ui, |ui| {
                        for k in [
                            HostKey::RightCtrl,
                            HostKey::LeftCtrl,
                            HostKey::RightAlt,
                            HostKey::ScrollLock,
                            HostKey::F12,
                        ] {
                            ui.selectable_value(&mut self.host_key, k, k.label());
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();

                ui.label("Disk changes");
                ui.checkbox(&mut self.undo_disks, "Undo disks")
                    .on_hover_text(
                        "Changes go to an undo layer; at power-off keep, commit or discard them",
                    );
                ui.end_row();
            });
        os_changed
    }
}

/// How the backend choice reads in the UI.
pub fn backend_label(b: BackendChoice) -> &'static str {
    match b {
        BackendChoice::Auto => "Automatic (hardware if usable)",
        BackendChoice::Kvm => "KVM (hardware)",
        BackendChoice::Whp => "Windows Hypervisor Platform",
        BackendChoice::Emu => "Software CPU",
    }
}

/// A path text field with Browse… and Clear buttons.
pub fn path_field(
    ui: &mut egui::Ui,
    value: &mut String,
    label: egui::Id,
    title: &str,
    extensions: &[&str],
) {
    ui.horizontal(|ui| {
        ui.add(egui::TextEdit::singleline(value).desired_width(200.0))
            .labelled_by(label);
        if ui
            .button("Browse…")
            .on_hover_text(format!("Choose the {}", title.to_lowercase()))
            .clicked()
        {
            if let Some(p) = rfd::FileDialog::new()
                .set_title(title)
                .add_filter(title, extensions)
                .add_filter("All files", &["*"])
                .pick_file()
            {
                *value = p.display().to_string();
            }
        }
        if !value.is_empty() && ui.small_button("Clear").clicked() {
            value.clear();
        }
    });
}
