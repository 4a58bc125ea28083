//! The crate's error type: one line that names the file (or field) and says the fix.

use std::io;
use std::path::{Path, PathBuf};

use crate::CONFIG_FORMAT_VERSION;

/// What went wrong with the VM library.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// The operating system refused or failed an operation on a file or folder.
    #[error(
        "{}: {source}; check that the path exists and that you may read and write it",
        path.display()
    )]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A `vm.toml` or `library.toml` that is not valid TOML or does not describe a valid VM.
    #[error(
        "{} is not a valid {}: {message}; fix or remove the file",
        path.display(),
        file_kind(path)
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what (`line 3: invalid string`), one line.
        message: String,
    },
    /// A file written by a newer Terrarium, in a format this version cannot read.
    #[error(
        "{} has format version {found}, newer than the {CONFIG_FORMAT_VERSION} this version of \
         Terrarium reads; update Terrarium to use it",
        path.display()
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The `format_version` it records.
        found: u32,
    },
    /// A setting outside its allowed range.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The setting (`name`, `memory_mib`, `cpus`, `disk size`, ...).
        field: &'static str,
        /// What is wrong and the allowed range.
        message: String,
    },
    /// Creating or opening a disk image failed.
    #[error("disk image: {0}")]
    Disk(#[from] disk::Error),
    /// A folder without a `vm.toml`.
    #[error(
        "{} holds no vm.toml; choose a folder that contains a Terrarium VM",
        path.display()
    )]
    NotAVm {
        /// The folder.
        path: PathBuf,
    },
    /// The platform has no data folder for the library (no home directory).
    #[error(
        "no data folder found for the VM library; set TERRARIUM_HOME to a folder to keep VMs in"
    )]
    NoDataDir,
}

fn file_kind(path: &Path) -> &'static str {
    if path.file_name().is_some_and(|n| n == crate::LIBRARY_FILE) {
        "library file"
    } else {
        "VM config"
    }
}

impl LibraryError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        LibraryError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The file or folder the error concerns, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            LibraryError::Io { path, .. }
            | LibraryError::Parse { path, .. }
            | LibraryError::NewerFormat { path, .. }
            | LibraryError::NotAVm { path } => Some(path),
            LibraryError::Disk(e) => e.path(),
            LibraryError::Invalid { .. } | LibraryError::NoDataDir => None,
        }
    }
}
