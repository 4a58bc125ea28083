//! Kicking a vCPU thread out of `KVM_RUN` from another thread.
//!
//! The kicker sends a real-time signal to the vCPU thread. The handler sets `immediate_exit` in
//! the `kvm_run` of the thread it interrupts, so `KVM_RUN` returns `EINTR` whether the signal
//! lands inside the ioctl or just before it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};

thread_local! {
    static KVM_RUN: Cell<*mut kvm_bindings::kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer is set by `VcpuThread::enter` on this thread to its vCPU's
        // kvm_run mapping and cleared by `leave` before that mapping can go away. A volatile
        // byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the kick signal handler once per process.
pub(crate) fn install_signal_handler() -> hv::Result<()> {
    INSTALL.call_once(|| {
        if vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).is_ok() {
            INSTALLED.store(true, Ordering::SeqCst);
        }
    });
    if INSTALLED.load(Ordering::SeqCst) {
        Ok(())
    } else {
        Err(hv::HvError::Unavailable(
            "cannot install the vCPU kick signal handler".into(),
        ))
    }
}

/// The thread currently running a vCPU, if any.
pub(crate) struct VcpuThread {
    thread: Mutex<Option<libc::pthread_t>>,
}

impl VcpuThread {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            thread: Mutex::new(None),
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<libc::pthread_t>> {
        self.thread.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the calling thread as running the vCPU whose kvm_run is `run`.
    pub(crate) fn enter(&self, run: &mut kvm_bindings::kvm_run) {
        KVM_RUN.with(|r| r.set(run));
        // SAFETY: pthread_self has no preconditions.
        *self.slot() = Some(unsafe { libc::pthread_self() });
    }

    /// The calling thread stops running the vCPU.
    pub(crate) fn leave(&self) {
        *self.slot() = None;
        KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
    }

    /// Interrupts the vCPU thread if it is running the vCPU. A stop flag checked by the run
    /// loop must be set before calling this.
    pub(crate) fn kick(&self) {
        let slot = self.slot();
        if let Some(t) = *slot {
            // SAFETY: `t` is a live thread: it is inside `run`, and `leave` (which it calls
            // before returning) takes this same lock, so it cannot exit while we signal it.
            unsafe { libc::pthread_kill(t, kick_signal()) };
        }
    }
}
