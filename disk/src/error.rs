//! The crate's error type: every variant that concerns a file names it.

use std::io;
use std::path::{Path, PathBuf};

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong with a disk image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused or failed an operation on the file.
    #[error("{}: {what}: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done ("cannot open", "read failed", ...).
        what: String,
        /// The operating system's error.
        err: io::Error,
    },
    /// The file's contents do not make a valid image (damaged, truncated or hostile).
    #[error("{}: {msg}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and, where one exists, the fix.
        msg: String,
    },
    /// The image uses a feature this crate does not implement.
    #[error("{}: {msg}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Which feature and how to get an image without it.
        msg: String,
    },
    /// A write to an image opened read-only.
    #[error("{}: the image is open read-only, writes are refused", path.display())]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// An access outside the virtual disk.
    #[error(
        "{}: access of {len} bytes at offset {offset} lies outside the {size}-byte disk",
        path.display()
    )]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// First byte of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Virtual size of the disk.
        size: u64,
    },
    /// A backing chain that refers back to one of its own images.
    #[error(
        "{}: the backing chain loops back to {} ({}); point one image at a different backing file",
        path.display(),
        again.display(),
        chain_text(chain)
    )]
    BackingLoop {
        /// The image whose backing reference closes the loop.
        path: PathBuf,
        /// The image met a second time.
        again: PathBuf,
        /// The chain from the top image down to `path`.
        chain: Vec<PathBuf>,
    },
    /// A backing chain longer than [`crate::MAX_CHAIN_DEPTH`].
    #[error(
        "{}: the backing chain is deeper than {max} images; merge overlays with `commit` first",
        path.display()
    )]
    ChainTooDeep {
        /// The image at which the limit was reached.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// A bad argument from the caller (not from an image file).
    #[error("{0}")]
    InvalidArgument(String),
}

fn chain_text(chain: &[PathBuf]) -> String {
    chain
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

impl Error {
    pub(crate) fn io(path: &Path, what: impl Into<String>, err: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            what: what.into(),
            err,
        }
    }

    pub(crate) fn invalid(path: &Path, msg: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    pub(crate) fn unsupported(path: &Path, msg: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    /// The file the error concerns, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. }
            | Error::Invalid { path, .. }
            | Error::Unsupported { path, .. }
            | Error::ReadOnly { path }
            | Error::OutOfRange { path, .. }
            | Error::BackingLoop { path, .. }
            | Error::ChainTooDeep { path, .. } => Some(path),
            Error::InvalidArgument(_) => None,
        }
    }
}
