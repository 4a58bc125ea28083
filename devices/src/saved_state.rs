//! Saved state: every device keeps its own versioned saved-state type, separate from its
//! runtime type, and converts between the two in [`SaveRestore`].
//!
//! A snapshot stores one [`SavedState`] per device: the device's name, the version of its
//! saved-state type and the encoded bytes (postcard, a compact serde format with a documented
//! wire format). Restore refuses a version it does not know, or bytes that do not decode, with a
//! [`RestoreError`] that names the device; it never panics on a damaged file.
//!
//! Times are saved relative to the device's clock (a deadline 3 ms away is saved as 3 ms), so a
//! state restored in another process, whose clock started elsewhere, keeps its timing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One device's saved state, as a snapshot stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// The device it belongs to (its [`crate::Device::name`]).
    pub device: String,
    /// Version of the device's saved-state type.
    pub version: u32,
    /// The encoded saved-state value.
    pub data: Vec<u8>,
}

/// Why a saved state could not be restored; each message names the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The state was written by a version of the device this build does not read.
    #[error(
        "the saved state of {device} has version {found}, this Terrarium reads version \
         {supported}: restore it with the Terrarium that saved it"
    )]
    Version {
        /// The device.
        device: String,
        /// Version in the state.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The state belongs to another device.
    #[error("the saved state for {device} belongs to {found}")]
    WrongDevice {
        /// The device restoring.
        device: String,
        /// The device named in the state.
        found: String,
    },
    /// The bytes do not decode, or hold values the device cannot have.
    #[error("the saved state of {device} is damaged: {reason}")]
    Corrupt {
        /// The device.
        device: String,
        /// What is wrong.
        reason: String,
    },
}

/// A device that saves and restores its state.
pub trait SaveRestore {
    /// The device's state now.
    fn save(&mut self) -> SavedState;
    /// Puts the device into `state`. On error the device is left as it was or reset, never
    /// half-restored in a way that can panic later.
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError>;
}

/// Encodes `value` as `device`'s saved state at `version`.
pub fn encode<T: Serialize>(device: &str, version: u32, value: &T) -> SavedState {
    SavedState {
        device: device.to_string(),
        version,
        // Serializing plain data into a Vec cannot fail; an empty state would be refused on
        // restore rather than panicking here.
        data: postcard::to_allocvec(value).unwrap_or_default(),
    }
}

/// Decodes `state` as `device`'s saved state at `version`, checking both first.
pub fn decode<T: DeserializeOwned>(
    state: &SavedState,
    device: &str,
    version: u32,
) -> Result<T, RestoreError> {
    if state.device != device {
        return Err(RestoreError::WrongDevice {
            device: device.to_string(),
            found: state.device.clone(),
        });
    }
    if state.version != version {
        return Err(RestoreError::Version {
            device: device.to_string(),
            found: state.version,
            supported: version,
        });
    }
    postcard::from_bytes(&state.data).map_err(|e| RestoreError::Corrupt {
        device: device.to_string(),
        reason: e.to_string(),
    })
}

/// A check on a restored value: `Err(Corrupt)` naming `device` unless `ok`.
pub fn ensure(ok: bool, device: &str, reason: impl Into<String>) -> Result<(), RestoreError> {
    if ok {
        Ok(())
    } else {
        Err(RestoreError::Corrupt {
            device: device.to_string(),
            reason: reason.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Demo {
        a: u8,
        b: Vec<u16>,
    }

    #[test]
    fn round_trip_and_refusals() {
        let v = Demo {
            a: 7,
            b: vec![1, 2, 3],
        };
        let s = encode("demo", 1, &v);
        assert_eq!(decode::<Demo>(&s, "demo", 1).unwrap(), v);
        assert!(matches!(
            decode::<Demo>(&s, "demo", 2),
            Err(RestoreError::Version {
                found: 1,
                supported: 2,
                ..
            })
        ));
        assert!(matches!(
            decode::<Demo>(&s, "other", 1),
            Err(RestoreError::WrongDevice { .. })
        ));
        let mut cut = s.clone();
        cut.data.truncate(2);
        let e = decode::<Demo>(&cut, "demo", 1).unwrap_err();
        assert!(e.to_string().contains("demo"), "{e}");
    }
}
