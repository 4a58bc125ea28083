//! The VM library on disk.
//!
//! Every VM is a folder with a human-readable `vm.toml`; the library is a root folder holding
//! one such folder per VM, plus `library.toml` listing VM folders imported from elsewhere:
//!
//! ```text
//! <root>/                      ~/.local/share/terrarium/vms, %APPDATA%\Terrarium\vms,
//!                              or $TERRARIUM_HOME/vms
//!   library.toml               imported = ["/elsewhere/Old VM"]
//!   Debian 12/
//!     vm.toml                  the settings (VmConfig)
//!     disk.vhd                 a disk made by the New VM wizard (stored as "disk.vhd")
//!     screen.png               the last screen, written by the app
//!   Debian 12 (2)/ ...         a second VM of the same name
//!   Old.removed/               taken out of the library, files kept
//! ```
//!
//! Relative paths in `vm.toml` are relative to the VM folder, so a folder can be moved or
//! imported elsewhere. Every file is replaced atomically ([`write_atomic`]), and a broken file
//! never hides a VM: [`Library::list`] shows it with a one-line reason.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod atomic;
mod config;
mod error;
mod library;
pub mod snapshots;
pub mod undo;

pub use atomic::write_atomic;
pub use config::{
    BackendChoice, BootChoice, HostKey, VmConfig, CONFIG_FILE, CONFIG_FORMAT_VERSION, MAX_CPUS,
    MAX_MEMORY_MIB, MAX_NAME_CHARS, MIN_MEMORY_MIB,
};
pub use error::LibraryError;
pub use library::{
    folder_base_name, DiskPlan, Library, NewDiskFormat, VmEntry, LIBRARY_FILE, MIN_DISK_BYTES,
    REMOVED_SUFFIX, SAVED_STATE_DIR, THUMBNAIL_FILE,
};
pub use library::{has_saved_state, running_pid, RunningMark, RUNNING_FILE};
pub use media_detect::OsFamily;
