//! The library folder: one subfolder per VM, plus imported folders listed in `library.toml`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{sync_dir, write_atomic};
use crate::config::{check_format_version, toml_message, CONFIG_FILE, CONFIG_FORMAT_VERSION};
use crate::{LibraryError, VmConfig};

/// Name of the file in the library root that lists imported VM folders.
pub const LIBRARY_FILE: &str = "library.toml";

/// Name of the last-screen picture in a VM folder.
pub const THUMBNAIL_FILE: &str = "screen.png";

/// Folder in a VM folder that holds the state the VM was saved in when it was closed.
pub const SAVED_STATE_DIR: &str = "saved-state";

/// Suffix of VM folders taken out of the library without deleting their files.
pub const REMOVED_SUFFIX: &str = ".removed";

/// Smallest disk [`Library::create`] makes (1 MiB).
pub const MIN_DISK_BYTES: u64 = 1 << 20;

/// Prefix of the hidden folder a VM is built in before it gets its name.
const BUILD_PREFIX: &str = ".new-";

/// The new VM's hard disk, as the wizard chose it.
#[derive(Debug, Clone, PartialEq)]
pub enum DiskPlan {
    /// No hard disk.
    None,
    /// Create an image in the VM folder: `disk.vhd` (dynamic VHD) or `disk.qcow2`.
    Create {
        /// Image format.
        format: NewDiskFormat,
        /// Virtual size in bytes (at least 1 MiB; rounded up to a multiple of 512).
        size_bytes: u64,
    },
    /// Use an existing image where it is (stored as an absolute path).
    Existing(PathBuf),
}

/// Format of a disk made by [`DiskPlan::Create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NewDiskFormat {
    /// Dynamic (sparse) VHD, as Virtual PC and Hyper-V use: `disk.vhd`.
    #[default]
    Vhd,
    /// QEMU copy-on-write v3: `disk.qcow2`.
    Qcow2,
}

impl NewDiskFormat {
    /// The image format passed to [`disk::create`].
    pub fn disk_format(self) -> disk::Format {
        match self {
            NewDiskFormat::Vhd => disk::Format::VhdDynamic,
            NewDiskFormat::Qcow2 => disk::Format::Qcow2,
        }
    }

    /// The file name of the new image in the VM folder.
    pub fn file_name(self) -> &'static str {
        match self {
            NewDiskFormat::Vhd => "disk.vhd",
            NewDiskFormat::Qcow2 => "disk.qcow2",
        }
    }
}

/// A VM in the library.
#[derive(Debug, Clone)]
pub struct VmEntry {
    /// The VM folder (absolute).
    pub dir: PathBuf,
    /// The settings, or a one-line reason they cannot be read (corrupt or missing `vm.toml`,
    /// missing folder), to show in the library rather than hide the VM.
    pub config: Result<VmConfig, String>,
}

impl VmEntry {
    /// The config's name, or the folder name when the config is broken.
    pub fn display_name(&self) -> String {
        match &self.config {
            Ok(c) => c.name.clone(),
            Err(_) => folder_name(&self.dir),
        }
    }

    /// `dir/screen.png`: the last screen, written by the app.
    pub fn thumbnail_path(&self) -> PathBuf {
        self.dir.join(THUMBNAIL_FILE)
    }

    /// The folder of the VM's saved state (see [`SAVED_STATE_DIR`]).
    pub fn saved_state_dir(&self) -> PathBuf {
        self.dir.join(SAVED_STATE_DIR)
    }

    /// True when the VM was saved and starting it resumes where it was.
    pub fn has_saved_state(&self) -> bool {
        has_saved_state(&self.dir)
    }

    /// `dir/vm.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }
}

fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// `library.toml`.
#[derive(Debug, Serialize, Deserialize)]
struct LibraryFile {
    #[serde(default = "current_version")]
    format_version: u32,
    /// Absolute paths of VM folders outside the root.
    #[serde(default)]
    imported: Vec<PathBuf>,
}

fn current_version() -> u32 {
    CONFIG_FORMAT_VERSION
}

impl Default for LibraryFile {
    fn default() -> Self {
        LibraryFile {
            format_version: CONFIG_FORMAT_VERSION,
            imported: Vec::new(),
        }
    }
}

/// The library: a root folder with one subfolder per VM, plus `library.toml` listing imported
/// folders that live elsewhere.
#[derive(Debug, Clone)]
pub struct Library {
    root: PathBuf,
}

impl Library {
    /// The platform default: `$XDG_DATA_HOME/terrarium/vms` (~/.local/share/terrarium/vms) on
    /// Linux, `%APPDATA%\Terrarium\vms` on Windows, `~/Library/Application Support/Terrarium/vms`
    /// on macOS. A non-empty `TERRARIUM_HOME` comes first (tests, portable installs): then the
    /// root is `$TERRARIUM_HOME/vms`.
    pub fn open_default() -> Result<Library, LibraryError> {
        Library::open(&default_root()?)
    }

    /// A library rooted at `root` (created if missing).
    pub fn open(root: &Path) -> Result<Library, LibraryError> {
        fs::create_dir_all(root).map_err(|e| LibraryError::io(root, e))?;
        let root = std::path::absolute(root).map_err(|e| LibraryError::io(root, e))?;
        if !root.is_dir() {
            return Err(LibraryError::io(
                &root,
                io::Error::new(io::ErrorKind::NotADirectory, "not a folder"),
            ));
        }
        Ok(Library { root })
    }

    /// The library folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every VM: subfolders of the root that hold a `vm.toml` (readable or not) plus imported
    /// folders, sorted by display name. An imported folder that no longer exists appears with
    /// `Err("folder … is missing; …")`; an unreadable `library.toml` appears as an entry for
    /// that file with the reason. Hidden folders and `*.removed` folders are skipped.
    pub fn list(&self) -> Vec<VmEntry> {
        let mut out: Vec<VmEntry> = Vec::new();
        match fs::read_dir(&self.root) {
            Ok(rd) => {
                for ent in rd.flatten() {
                    let name = ent.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with('.') || name.ends_with(REMOVED_SUFFIX) {
                        continue;
                    }
                    let dir = ent.path();
                    if dir.is_dir() && dir.join(CONFIG_FILE).exists() {
                        out.push(entry_for(dir));
                    }
                }
            }
            Err(e) => tracing::warn!(root = %self.root.display(), "cannot list library: {e}"),
        }
        match self.read_library_file() {
            Ok(file) => {
                for dir in file.imported {
                    if out.iter().any(|e| same_path(&e.dir, &dir)) {
                        continue;
                    }
                    if dir.is_dir() {
                        out.push(entry_for(dir));
                    } else {
                        let config = Err(format!(
                            "folder {} is missing; reconnect its drive or remove the VM from \
                             the library",
                            dir.display()
                        ));
                        out.push(VmEntry { dir, config });
                    }
                }
            }
            Err(e) => out.push(VmEntry {
                dir: self.library_file(),
                config: Err(e.to_string()),
            }),
        }
        out.sort_by_cached_key(|e| (e.display_name().to_lowercase(), e.dir.clone()));
        out
    }

    /// Creates a folder for `config` (named after the VM, sanitized to `[A-Za-z0-9 ._-]` and
    /// made unique with " (2)" etc.), creates the disk per `disk` (a created image goes into the
    /// folder and is put first in `config.disks` as a relative file name; an existing one is
    /// stored absolute), writes `vm.toml` and returns the entry. Validates first. The VM is
    /// built in a hidden folder and renamed into place, so on any failure nothing is left
    /// behind and [`Library::list`] never sees a half-made VM.
    pub fn create(&self, mut config: VmConfig, disk: DiskPlan) -> Result<VmEntry, LibraryError> {
        config.validate()?;
        let existing = match &disk {
            DiskPlan::None => None,
            DiskPlan::Create { size_bytes, .. } => {
                if *size_bytes < MIN_DISK_BYTES {
                    return Err(LibraryError::Invalid {
                        field: "disk size",
                        message: format!("{size_bytes} bytes is too small; choose at least 1 MiB"),
                    });
                }
                None
            }
            DiskPlan::Existing(p) => {
                let abs = std::path::absolute(p).map_err(|e| LibraryError::io(p, e))?;
                if !abs.is_file() {
                    return Err(LibraryError::Invalid {
                        field: "disk",
                        message: format!(
                            "{} is not an existing file; choose a disk image that exists",
                            abs.display()
                        ),
                    });
                }
                // Refuse files that are not images (or whose backing chain is broken) now,
                // not at first boot.
                disk::info(&abs)?;
                Some(abs)
            }
        };

        let build = self.make_build_dir()?;
        let result = (|| {
            match (&disk, existing) {
                (DiskPlan::Create { format, size_bytes }, _) => {
                    let file = format.file_name();
                    let opts = disk::CreateOptions::new(format.disk_format(), *size_bytes);
                    disk::create(&build.join(file), &opts)?;
                    config.disks.insert(0, PathBuf::from(file));
                }
                (DiskPlan::Existing(_), Some(abs)) => config.disks.insert(0, abs),
                _ => {}
            }
            write_atomic(&build.join(CONFIG_FILE), config.to_toml()?.as_bytes())
                .map_err(|e| LibraryError::io(&build.join(CONFIG_FILE), e))?;
            self.rename_into_place(&build, &folder_base_name(&config.name))
        })();
        match result {
            Ok(dir) => {
                tracing::info!(vm = %config.name, dir = %dir.display(), "created VM");
                Ok(VmEntry {
                    dir,
                    config: Ok(config),
                })
            }
            Err(e) => {
                if let Err(rm) = fs::remove_dir_all(&build) {
                    tracing::warn!(dir = %build.display(), "cannot clean up: {rm}");
                }
                Err(e)
            }
        }
    }

    /// Writes `dir/vm.toml` atomically (temp file in the same folder, fsync, rename, fsync the
    /// folder), after [`VmConfig::validate`].
    pub fn save(&self, dir: &Path, config: &VmConfig) -> Result<(), LibraryError> {
        config.validate()?;
        let path = dir.join(CONFIG_FILE);
        write_atomic(&path, config.to_toml()?.as_bytes()).map_err(|e| LibraryError::io(&path, e))
    }

    /// Reads and checks `dir/vm.toml`: [`LibraryError::NotAVm`] when there is none,
    /// [`LibraryError::NewerFormat`] for a newer format, [`LibraryError::Parse`] (with the line)
    /// for bad TOML or out-of-range values.
    pub fn load(dir: &Path) -> Result<VmConfig, LibraryError> {
        let path = dir.join(CONFIG_FILE);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LibraryError::NotAVm {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(LibraryError::io(&path, e)),
        };
        let text = String::from_utf8(text).map_err(|e| LibraryError::Parse {
            path: path.clone(),
            message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        })?;
        VmConfig::from_toml(&text, &path)
    }

    /// Adds a VM folder that lives elsewhere (it must hold a valid `vm.toml`) to
    /// `library.toml`, stored as an absolute path. A folder already in the library (imported
    /// before, or under the root) is not added twice. A `*.removed` folder under the root is
    /// restored: renamed back to the VM's name (made unique). Returns its entry.
    pub fn import(&self, dir: &Path) -> Result<VmEntry, LibraryError> {
        let mut dir = std::path::absolute(dir).map_err(|e| LibraryError::io(dir, e))?;
        if !dir.is_dir() {
            return Err(LibraryError::NotAVm { path: dir });
        }
        let config = Library::load(&dir)?;
        if self.is_under_root(&dir) {
            let name = folder_name(&dir);
            if name.starts_with('.') || name.ends_with(REMOVED_SUFFIX) {
                dir = self.rename_into_place(&dir, &folder_base_name(&config.name))?;
                tracing::info!(vm = %config.name, dir = %dir.display(), "restored VM");
            }
        } else {
            let mut file = self.read_library_file()?;
            if !file.imported.iter().any(|p| same_path(p, &dir)) {
                file.imported.push(dir.clone());
                self.write_library_file(&file)?;
                tracing::info!(vm = %config.name, dir = %dir.display(), "imported VM");
            }
        }
        Ok(VmEntry {
            dir,
            config: Ok(config),
        })
    }

    /// Removes a VM from the library.
    ///
    /// A VM folder under the root: with `delete_files` the folder and everything in it is
    /// deleted; without, it is kept but renamed to `<folder>.removed` (or `<folder> (2).removed`
    /// ...) so it no longer lists; [`Library::import`] of that folder restores it. (The entry
    /// [`Library::list`] shows for a broken `library.toml` is handled the same way: the file is
    /// deleted or set aside as `library.toml.removed`.)
    ///
    /// An imported folder: it is dropped from `library.toml`; with `delete_files` the files the
    /// VM owns are deleted too (`vm.toml`, `screen.png` and disk images given by relative paths
    /// inside the folder), then the folder if that left it empty. Other files stay. Disk images
    /// stored as absolute paths (existing disks chosen in the wizard) are never deleted.
    pub fn remove(&self, entry: &VmEntry, delete_files: bool) -> Result<(), LibraryError> {
        let dir = std::path::absolute(&entry.dir).map_err(|e| LibraryError::io(&entry.dir, e))?;
        if self.is_under_root(&dir) {
            if delete_files {
                // A file here is a broken `library.toml` shown as an entry.
                let r = if dir.is_dir() {
                    fs::remove_dir_all(&dir)
                } else {
                    fs::remove_file(&dir)
                };
                r.map_err(|e| LibraryError::io(&dir, e))?;
            } else {
                let base = folder_name(&dir);
                let target = self.unique_path(&base, REMOVED_SUFFIX)?;
                fs::rename(&dir, &target).map_err(|e| LibraryError::io(&dir, e))?;
            }
            sync_dir(&self.root).map_err(|e| LibraryError::io(&self.root, e))?;
            tracing::info!(dir = %dir.display(), delete_files, "removed VM");
            return Ok(());
        }
        let mut file = self.read_library_file()?;
        let before = file.imported.len();
        file.imported.retain(|p| !same_path(p, &dir));
        if file.imported.len() != before {
            self.write_library_file(&file)?;
        }
        if delete_files && dir.is_dir() {
            delete_owned_files(&dir, entry.config.as_ref().ok())?;
        }
        tracing::info!(dir = %dir.display(), delete_files, "removed imported VM");
        Ok(())
    }

    fn library_file(&self) -> PathBuf {
        self.root.join(LIBRARY_FILE)
    }

    fn is_under_root(&self, dir: &Path) -> bool {
        dir.parent().is_some_and(|p| same_path(p, &self.root))
    }

    fn read_library_file(&self) -> Result<LibraryFile, LibraryError> {
        let path = self.library_file();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LibraryFile::default()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(LibraryError::Parse {
                    path,
                    message: "not UTF-8 text".into(),
                })
            }
            Err(e) => return Err(LibraryError::io(&path, e)),
        };
        let parse = |e: toml::de::Error| LibraryError::Parse {
            path: path.clone(),
            message: toml_message(&e, &text),
        };
        let table: toml::Table = toml::from_str(&text).map_err(parse)?;
        check_format_version(&table, &path)?;
        toml::from_str(&text).map_err(parse)
    }

    fn write_library_file(&self, file: &LibraryFile) -> Result<(), LibraryError> {
        let path = self.library_file();
        let body = toml::to_string(file).map_err(|e| LibraryError::Invalid {
            field: "imported",
            message: format!("{e}; import folders whose paths are valid Unicode"),
        })?;
        let text = format!(
            "# Terrarium VM library: VM folders kept outside this folder.\n\
             # VMs inside this folder are found without being listed here.\n{body}"
        );
        write_atomic(&path, text.as_bytes()).map_err(|e| LibraryError::io(&path, e))
    }

    fn make_build_dir(&self) -> Result<PathBuf, LibraryError> {
        let mut n = 0u32;
        loop {
            let dir = self
                .root
                .join(format!("{BUILD_PREFIX}{}-{n}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
                Err(e) => return Err(LibraryError::io(&dir, e)),
            }
        }
    }

    /// Renames the finished `build` folder to `base`, `base (2)`, ... under the root.
    fn rename_into_place(&self, build: &Path, base: &str) -> Result<PathBuf, LibraryError> {
        for n in 1u32..=10_000 {
            let target = self.root.join(numbered(base, n, ""));
            if fs::symlink_metadata(&target).is_ok() {
                continue;
            }
            match fs::rename(build, &target) {
                Ok(()) => {
                    sync_dir(&self.root).map_err(|e| LibraryError::io(&self.root, e))?;
                    return Ok(target);
                }
                // Another process took the name between the check and the rename.
                Err(_) if fs::symlink_metadata(&target).is_ok() => continue,
                Err(e) => return Err(LibraryError::io(&target, e)),
            }
        }
        Err(self.too_many(base))
    }

    /// The first free `base<suffix>`, `base (2)<suffix>`, ... under the root.
    fn unique_path(&self, base: &str, suffix: &str) -> Result<PathBuf, LibraryError> {
        (1u32..=10_000)
            .map(|n| self.root.join(numbered(base, n, suffix)))
            .find(|p| fs::symlink_metadata(p).is_err())
            .ok_or_else(|| self.too_many(base))
    }

    fn too_many(&self, base: &str) -> LibraryError {
        LibraryError::io(
            &self.root.join(base),
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "10000 folders of this name exist already",
            ),
        )
    }
}

fn numbered(base: &str, n: u32, suffix: &str) -> String {
    if n == 1 {
        format!("{base}{suffix}")
    } else {
        format!("{base} ({n}){suffix}")
    }
}

fn entry_for(dir: PathBuf) -> VmEntry {
    let config = Library::load(&dir).map_err(|e| e.to_string());
    VmEntry { dir, config }
}

fn default_root() -> Result<PathBuf, LibraryError> {
    if let Some(home) = std::env::var_os("TERRARIUM_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home).join("vms"));
    }
    let base = directories::BaseDirs::new().ok_or(LibraryError::NoDataDir)?;
    let app = if cfg!(any(windows, target_os = "macos")) {
        "Terrarium"
    } else {
        "terrarium"
    };
    Ok(base.data_dir().join(app).join("vms"))
}

/// The folder name for a VM called `name`: characters outside `[A-Za-z0-9 ._-]` become `_`
/// (a run of them one `_`), leading and trailing spaces and dots go (hidden folders, Windows),
/// Windows device names and names ending in `.removed` get a `_`, and a result without a letter
/// or digit becomes `VM`.
pub fn folder_base_name(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-');
        if ok {
            s.push(c);
        } else if !s.ends_with('_') {
            s.push('_');
        }
    }
    let mut s: String = s
        .trim_matches(|c| c == ' ' || c == '.')
        .chars()
        .take(64)
        .collect();
    s.truncate(s.trim_end_matches([' ', '.']).len());
    if !s.chars().any(|c| c.is_ascii_alphanumeric()) {
        return "VM".to_string();
    }
    let stem = s
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end()
        .to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved || s.to_ascii_lowercase().ends_with(REMOVED_SUFFIX) {
        s.push('_');
    }
    s
}

/// True if `a` and `b` name the same folder (equal, or equal once canonicalized).
fn same_path(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Deletes what an imported VM owns in its folder, then the folder if it is empty.
fn delete_owned_files(dir: &Path, config: Option<&VmConfig>) -> Result<(), LibraryError> {
    let mut files: Vec<PathBuf> = vec![dir.join(CONFIG_FILE), dir.join(THUMBNAIL_FILE)];
    if let Some(c) = config {
        for d in &c.disks {
            if is_plain_relative(d) {
                files.push(dir.join(d));
            }
        }
    }
    for f in files {
        match fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LibraryError::io(&f, e)),
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        tracing::info!(dir = %dir.display(), "folder kept, it holds other files: {e}");
    }
    Ok(())
}

/// A relative path that stays inside its folder (no `..`, no root or prefix).
fn is_plain_relative(p: &Path) -> bool {
    use std::path::Component;
    p.file_name().is_some()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_base_names() {
        for (name, want) in [
            ("Debian 12", "Debian 12"),
            ("Windows XP (SP3)", "Windows XP _SP3_"),
            ("a/b\\c:d*e?f\"g<h>i|j", "a_b_c_d_e_f_g_h_i_j"),
            ("  .hidden. ", "hidden"),
            ("...", "VM"),
            ("Привет", "VM"),
            ("Привет 2", "_ 2"),
            ("nul.txt", "nul.txt_"),
            ("COM1", "COM1_"),
            ("COMPAQ", "COMPAQ"),
            ("old.REMOVED", "old.REMOVED_"),
            ("tab\there", "tab_here"),
        ] {
            assert_eq!(folder_base_name(name), want, "{name:?}");
        }
        assert_eq!(folder_base_name(&"x".repeat(80)).len(), 64);
        assert_eq!(
            folder_base_name(&format!("{}.  y", "x".repeat(62))),
            "x".repeat(62)
        );
    }

    #[test]
    fn plain_relative_paths() {
        assert!(is_plain_relative(Path::new("disk.vhd")));
        assert!(is_plain_relative(Path::new("disks/a.vhd")));
        assert!(!is_plain_relative(Path::new("../a.vhd")));
        assert!(!is_plain_relative(Path::new("/a.vhd")));
        assert!(!is_plain_relative(Path::new("")));
        assert!(!is_plain_relative(Path::new(".")));
    }
}

/// True when the VM in `vm_dir` was saved and starting it resumes where it was.
pub fn has_saved_state(vm_dir: &Path) -> bool {
    vm_dir.join(SAVED_STATE_DIR).join("state.bin").is_file()
}

/// File in a VM folder that marks it as running, holding the process id.
pub const RUNNING_FILE: &str = ".running";

/// Marks a VM as running for as long as it lives (other processes, such as the command line,
/// then leave the VM's disks alone).
#[derive(Debug)]
pub struct RunningMark {
    path: PathBuf,
}

impl RunningMark {
    /// Marks the VM in `vm_dir` as run by this process.
    pub fn new(vm_dir: &Path) -> Self {
        let path = vm_dir.join(RUNNING_FILE);
        if let Err(e) = write_atomic(&path, std::process::id().to_string().as_bytes()) {
            tracing::warn!("cannot mark {} as running: {e}", vm_dir.display());
        }
        Self { path }
    }
}

impl Drop for RunningMark {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The process running the VM in `vm_dir`, if one is (a mark left by a process that died is
/// ignored).
pub fn running_pid(vm_dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(vm_dir.join(RUNNING_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let alive = if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    };
    alive.then_some(pid)
}
