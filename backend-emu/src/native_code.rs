//! Executable memory for the software CPU's native blocks ([`x86emu::NativeCode`]).
//!
//! One anonymous mapping per virtual processor, filled from the start; when it is full the
//! CPU clears it and translates again what runs from then on. Only the processor that owns it
//! writes or runs it.
#![allow(unsafe_code)]

use x86emu::{NativeCode, NativeFrame};

/// Runs of a block before it is translated to host code (code that runs fewer times is
/// interpreted from its decoded form, which costs less than translating it).
pub(crate) const THRESHOLD: u32 = 32;

/// Bytes of code memory per virtual processor.
const SIZE: usize = 32 << 20;

/// A read-write-execute mapping holding native blocks back to back.
pub struct ExecMemory {
    base: *mut u8,
    used: usize,
}

// SAFETY: the mapping is owned by this value alone (nothing else has its address), so moving
// it to another thread moves the only access to it.
unsafe impl Send for ExecMemory {}

impl ExecMemory {
    /// Maps the code memory; `None` when the host refuses executable memory.
    pub fn new() -> Option<Self> {
        // SAFETY: a new private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "no executable memory for native blocks; the software CPU interprets"
            );
            return None;
        }
        Some(Self {
            base: p.cast(),
            used: 0,
        })
    }
}

impl Drop for ExecMemory {
    fn drop(&mut self) {
        // SAFETY: `base` is the start of a `SIZE`-byte mapping made in `new` and unmapped only
        // here; no code in it runs any more (calls return before the owner can drop it).
        unsafe {
            libc::munmap(self.base.cast(), SIZE);
        }
    }
}

impl NativeCode for ExecMemory {
    fn install(&mut self, code: &[u8]) -> Option<usize> {
        let at = self.used.next_multiple_of(16);
        let end = at.checked_add(code.len())?;
        if end > SIZE {
            return None;
        }
        // SAFETY: `at..end` lies inside the mapping (checked above), which is writable and
        // not aliased by any Rust reference; no code in that range is running.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.base.add(at), code.len());
        }
        self.used = end;
        Some(at)
    }

    fn clear(&mut self) {
        self.used = 0;
    }

    fn call(&mut self, handle: usize, offset: usize, frame: &mut NativeFrame) {
        let Some(at) = handle.checked_add(offset).filter(|&at| at < self.used) else {
            return;
        };
        // SAFETY: `handle + offset` is an entry point of code installed since the last `clear`
        // (the CPU keeps handles per generation), made by x86emu's generator for the
        // `extern "sysv64" fn(*mut NativeFrame)` convention. That code uses only
        // caller-saved registers and the stack below its return address, and touches memory
        // only through the frame: the CPU's registers, its RAM entry table (host addresses of
        // the guest RAM the bus currently lends it, whose regions the CPU re-checks before
        // running blocks, and the code tracker's bitmap words they point to), and the CPU's
        // jump cache, whose entries hold `address` values of code of the same generation. Its
        // jumps lead into its own code or, once `patch`ed, to such an address.
        unsafe {
            let f: extern "sysv64" fn(*mut NativeFrame) = std::mem::transmute(self.base.add(at));
            f(frame);
        }
    }

    fn patch(&mut self, site: u64, rel: i32) {
        let Some(at) = site
            .checked_sub(self.base as u64)
            .map(|at| at as usize)
            .filter(|at| at.checked_add(5).is_some_and(|end| end <= self.used))
        else {
            return;
        };
        // SAFETY: `at..at + 5` lies inside the installed part of the mapping (checked above),
        // which is writable and not aliased by any Rust reference; no code runs while the
        // owner patches it (calls return first).
        unsafe {
            let p = self.base.add(at);
            if *p == 0xe9 {
                std::ptr::copy_nonoverlapping(rel.to_le_bytes().as_ptr(), p.add(1), 4);
            }
        }
    }

    fn address(&self, handle: usize) -> u64 {
        self.base as u64 + handle as u64
    }
}
