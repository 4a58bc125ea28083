//! Disk image formats behind one block-device trait.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
