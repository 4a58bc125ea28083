//! One VM's settings and their `vm.toml` form.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{LibraryError, OsFamily};

/// The `format_version` this version of Terrarium writes and the newest it reads.
pub const CONFIG_FORMAT_VERSION: u32 = 1;

/// Name of the settings file in a VM folder.
pub const CONFIG_FILE: &str = "vm.toml";

/// Smallest guest memory, MiB.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest guest memory, MiB (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1_048_576;
/// Most virtual CPUs.
pub const MAX_CPUS: u32 = 255;
/// Longest VM name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

const HEADER: &str = "# Terrarium virtual machine settings. Edit only while the VM is off.\n\
# Relative paths are relative to this folder.\n";

/// Which CPU backend a VM uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// The fastest one the host offers (KVM or WHP, else the emulator).
    #[default]
    Auto,
    /// Linux KVM.
    Kvm,
    /// Windows Hypervisor Platform.
    Whp,
    /// The software CPU emulator.
    Emu,
}

/// First boot device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootChoice {
    /// The CD/DVD drive.
    #[default]
    Cd,
    /// The first hard disk.
    Disk,
    /// The floppy drive.
    Floppy,
}

/// The host key that releases keyboard/mouse capture in the console window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKey {
    /// Right Ctrl (as in VirtualBox).
    #[default]
    RightCtrl,
    /// Left Ctrl.
    LeftCtrl,
    /// Right Alt (as in Virtual PC).
    RightAlt,
    /// Scroll Lock.
    ScrollLock,
    /// F12.
    F12,
}

impl HostKey {
    /// Every host key, in menu order.
    pub const ALL: [HostKey; 5] = [
        HostKey::RightCtrl,
        HostKey::LeftCtrl,
        HostKey::RightAlt,
        HostKey::ScrollLock,
        HostKey::F12,
    ];

    /// The name shown to people: "Right Ctrl", "Scroll Lock", ...
    pub fn label(self) -> &'static str {
        match self {
            HostKey::RightCtrl => "Right Ctrl",
            HostKey::LeftCtrl => "Left Ctrl",
            HostKey::RightAlt => "Right Alt",
            HostKey::ScrollLock => "Scroll Lock",
            HostKey::F12 => "F12",
        }
    }
}

/// One VM's settings, stored as `vm.toml` in its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    /// Format of this file: [`CONFIG_FORMAT_VERSION`]; a newer one is refused.
    pub format_version: u32,
    /// The VM's name, 1 to 64 characters.
    pub name: String,
    /// The guest's operating system family.
    pub os: OsFamily,
    /// The detected OS name, e.g. "Debian GNU/Linux 12".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// Guest memory in MiB (16 to 1048576).
    pub memory_mib: u64,
    /// Virtual CPUs (1 to 255).
    pub cpus: u32,
    /// CPU backend.
    #[serde(default)]
    pub backend: BackendChoice,
    /// First boot device.
    #[serde(default)]
    pub boot: BootChoice,
    /// Hard disk images, first is the boot disk; relative paths are relative to the VM folder.
    #[serde(default)]
    pub disks: Vec<PathBuf>,
    /// CD/DVD image in the drive, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<PathBuf>,
    /// Floppy image in the drive, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floppy: Option<PathBuf>,
    /// The key that releases keyboard/mouse capture.
    #[serde(default)]
    pub host_key: HostKey,
    /// Discard the session's disk writes when the VM is turned off.
    #[serde(default)]
    pub undo_disks: bool,
}

/// Keys `vm.toml` may hold; others are ignored with a warning.
const KNOWN_KEYS: [&str; 13] = [
    "format_version",
    "name",
    "os",
    "os_name",
    "memory_mib",
    "cpus",
    "backend",
    "boot",
    "disks",
    "cdrom",
    "floppy",
    "host_key",
    "undo_disks",
];

impl VmConfig {
    /// A new VM's settings: memory from `os`, one CPU, Auto backend, boot from CD, no media.
    pub fn new(name: &str, os: OsFamily) -> Self {
        VmConfig {
            format_version: CONFIG_FORMAT_VERSION,
            name: name.to_string(),
            os,
            os_name: None,
            memory_mib: os.default_memory_mib(),
            cpus: 1,
            backend: BackendChoice::default(),
            boot: BootChoice::default(),
            disks: Vec::new(),
            cdrom: None,
            floppy: None,
            host_key: HostKey::default(),
            undo_disks: false,
        }
    }

    /// Checks values (name non-empty and ≤ 64 chars, memory 16..=1048576 MiB, cpus 1..=255);
    /// Err names the field and range.
    pub fn validate(&self) -> Result<(), LibraryError> {
        let invalid = |field, message: String| Err(LibraryError::Invalid { field, message });
        if self.format_version == 0 || self.format_version > CONFIG_FORMAT_VERSION {
            return invalid(
                "format_version",
                format!(
                    "{} is not supported; use {CONFIG_FORMAT_VERSION}",
                    self.format_version
                ),
            );
        }
        let chars = self.name.chars().count();
        if self.name.trim().is_empty() {
            return invalid(
                "name",
                format!("the name is empty; enter 1 to {MAX_NAME_CHARS} characters"),
            );
        }
        if chars > MAX_NAME_CHARS {
            return invalid(
                "name",
                format!("the name has {chars} characters; use 1 to {MAX_NAME_CHARS}"),
            );
        }
        if self.name.chars().any(char::is_control) {
            return invalid(
                "name",
                "the name contains a control character (such as a line break); remove it".into(),
            );
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return invalid(
                "memory_mib",
                format!(
                    "{} MiB is out of range; choose {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB",
                    self.memory_mib
                ),
            );
        }
        if !(1..=MAX_CPUS).contains(&self.cpus) {
            return invalid(
                "cpus",
                format!("{} is out of range; choose 1 to {MAX_CPUS} CPUs", self.cpus),
            );
        }
        let empty = |p: &PathBuf| p.as_os_str().is_empty();
        if self.disks.iter().any(empty) {
            return invalid(
                "disks",
                "a disk path is empty; remove it or name a file".into(),
            );
        }
        if self.cdrom.as_ref().is_some_and(empty) {
            return invalid("cdrom", "the path is empty; eject or name a file".into());
        }
        if self.floppy.as_ref().is_some_and(empty) {
            return invalid("floppy", "the path is empty; eject or name a file".into());
        }
        Ok(())
    }

    /// Absolute path of a config path given the VM folder: relative paths are relative to it.
    pub fn resolve(&self, vm_dir: &Path, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            vm_dir.join(p)
        }
    }

    /// The `vm.toml` text: a comment header, then one `key = value` line per setting.
    pub fn to_toml(&self) -> Result<String, LibraryError> {
        let body = toml::to_string(self).map_err(|e| LibraryError::Invalid {
            field: "config",
            message: format!("{e}; use paths that are valid Unicode"),
        })?;
        Ok(format!("{HEADER}{body}"))
    }

    /// Parses and checks `vm.toml` text; `path` is only used in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<VmConfig, LibraryError> {
        let parse = |message: String| LibraryError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| parse(toml_message(&e, text)))?;
        check_format_version(&table, path)?;
        for key in table.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                tracing::warn!(file = %path.display(), key = %key, "unknown setting ignored");
            }
        }
        let config: VmConfig = toml::from_str(text).map_err(|e| parse(toml_message(&e, text)))?;
        config.validate().map_err(|e| match e {
            LibraryError::Invalid { field, message } => parse(format!("{field}: {message}")),
            other => other,
        })?;
        Ok(config)
    }
}

/// Refuses a file whose `format_version` is newer than [`CONFIG_FORMAT_VERSION`]. A missing or
/// mistyped version is left to the typed parse, which reports it with its line.
pub(crate) fn check_format_version(table: &toml::Table, path: &Path) -> Result<(), LibraryError> {
    if let Some(toml::Value::Integer(v)) = table.get("format_version") {
        if *v > i64::from(CONFIG_FORMAT_VERSION) {
            return Err(match u32::try_from(*v) {
                Ok(found) => LibraryError::NewerFormat {
                    path: path.to_path_buf(),
                    found,
                },
                Err(_) => LibraryError::Parse {
                    path: path.to_path_buf(),
                    message: format!("format_version {v} is out of range"),
                },
            });
        }
    }
    Ok(())
}

/// A TOML error as one line: `line 3: invalid string`.
pub(crate) fn toml_message(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text.as_bytes()[..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_names() {
        let labels: Vec<&str> = HostKey::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(
            labels,
            ["Right Ctrl", "Left Ctrl", "Right Alt", "Scroll Lock", "F12"]
        );
        let mut c = VmConfig::new("k", OsFamily::Other);
        for (key, text) in
            HostKey::ALL
                .iter()
                .zip(["right-ctrl", "left-ctrl", "right-alt", "scroll-lock", "f12"])
        {
            c.host_key = *key;
            let t = c.to_toml().unwrap();
            assert!(t.contains(&format!("host_key = \"{text}\"\n")), "{t}");
            assert_eq!(VmConfig::from_toml(&t, Path::new("vm.toml")).unwrap(), c);
        }
    }

    #[test]
    fn new_uses_os_defaults() {
        for os in [
            OsFamily::Linux,
            OsFamily::Windows,
            OsFamily::Dos,
            OsFamily::Other,
        ] {
            let c = VmConfig::new("n", os);
            assert_eq!(c.memory_mib, os.default_memory_mib());
            assert_eq!(
                (c.cpus, c.backend, c.boot),
                (1, BackendChoice::Auto, BootChoice::Cd)
            );
            assert_eq!(c.format_version, CONFIG_FORMAT_VERSION);
            c.validate().unwrap();
        }
    }

    #[test]
    fn toml_errors_are_one_line_with_line_number() {
        let text = "a = 1\nb = 2\nc = \"open\n";
        let e = toml::from_str::<toml::Table>(text).unwrap_err();
        let m = toml_message(&e, text);
        assert!(m.starts_with("line 3: "), "{m}");
        assert!(!m.contains('\n'), "{m}");
    }

    #[test]
    fn resolve_paths() {
        let c = VmConfig::new("r", OsFamily::Other);
        let dir = std::env::temp_dir().join("vm");
        assert_eq!(c.resolve(&dir, Path::new("disk.vhd")), dir.join("disk.vhd"));
        let abs = std::env::temp_dir().join("x.iso");
        assert_eq!(c.resolve(&dir, &abs), abs);
    }
}
