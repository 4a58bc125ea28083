//! Why a virtual processor stopped, and how other threads stop or wake it.

use std::sync::atomic::{AtomicU8, Ordering};

/// Why [`crate::VirtualProcessor::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A stop was requested (pause, or the machine wants the processor for something else).
    Stopped,
    /// The machine requested a reset (port 0xCF9, port 0x92, keyboard controller).
    Reset,
    /// The machine requested power-off.
    PowerOff,
    /// The guest triple-faulted (a PC resets on this).
    TripleFault,
    /// The hypervisor could not complete an instruction (KVM's instruction emulator gave up).
    EmulationFailure {
        /// Linear address of the instruction (CS base + RIP).
        address: u64,
        /// Instruction bytes, when the hypervisor reported them.
        bytes: Vec<u8>,
    },
}

const NONE: u8 = 0;
const STOPPED: u8 = 1;
const RESET: u8 = 2;
const POWER_OFF: u8 = 3;

/// Shared handle to stop a virtual processor or wake it from another thread.
///
/// The backend supplies the kick: KVM signals the vCPU thread so `KVM_RUN` returns, a software
/// CPU wakes its halt wait. A stop request is sticky until the processor takes it; when
/// several are made, the strongest wins (power-off > reset > stop).
pub struct StopHandle {
    pending: AtomicU8,
    kick: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish()
    }
}

impl StopHandle {
    /// Creates a handle whose `kick` forces the processor out of guest mode promptly.
    pub fn new(kick: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            pending: AtomicU8::new(NONE),
            kick: Box::new(kick),
        }
    }

    /// Asks the processor to return from `run` with `reason`
    /// ([`StopReason::Stopped`], [`StopReason::Reset`] or [`StopReason::PowerOff`]).
    pub fn request_stop(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Reset => RESET,
            StopReason::PowerOff => POWER_OFF,
            _ => STOPPED,
        };
        self.pending.fetch_max(code, Ordering::SeqCst);
        (self.kick)();
    }

    /// Wakes the processor so it looks for new interrupts, without stopping it.
    pub fn kick(&self) {
        (self.kick)();
    }

    /// True when a stop request is waiting to be taken.
    pub fn stop_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst) != NONE
    }

    /// Takes the pending stop request, if any. Called by the backend's run loop.
    pub fn take_stop(&self) -> Option<StopReason> {
        match self.pending.swap(NONE, Ordering::SeqCst) {
            NONE => None,
            RESET => Some(StopReason::Reset),
            POWER_OFF => Some(StopReason::PowerOff),
            _ => Some(StopReason::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn strongest_request_wins_and_is_taken_once() {
        let kicks = Arc::new(AtomicUsize::new(0));
        let k = kicks.clone();
        let h = StopHandle::new(move || {
            k.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(h.take_stop(), None);
        h.request_stop(StopReason::PowerOff);
        h.request_stop(StopReason::Stopped);
        assert_eq!(h.take_stop(), Some(StopReason::PowerOff));
        assert_eq!(h.take_stop(), None);
        h.kick();
        assert_eq!(kicks.load(Ordering::SeqCst), 3);
        assert!(!h.stop_pending());
    }
}
