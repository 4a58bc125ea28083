//! Writes guest RAM to a file from a copy-on-write snapshot, so the VM runs on while the file
//! is written.
//!
//! On Linux, [`start`] forks the process. The child sees guest memory exactly as it was at the
//! fork (the kernel shares every page copy-on-write), writes the regions back to back into the
//! file, syncs it and exits; the parent returns at once, its vCPUs resume, and only the pages
//! they write from then on are copied. The pause a caller needs around [`start`] is therefore
//! the fork (page tables only, about 15 ms for 512 MiB here), not the write.
//!
//! The child of a multithreaded process may only call async-signal-safe functions. It calls
//! `prctl`, `write`, `fsync` and `_exit` on memory prepared before the fork: no allocator, no
//! locks, no Rust runtime. Its exit status carries the `errno` of a failed write or sync.
//!
//! Guest RAM must be mapped privately (anonymous or `MAP_PRIVATE` file mappings, as
//! `vm-memory` and the machine map it): a shared mapping would not be copied on write, and the
//! child would see the guest's later writes.
//!
//! Elsewhere (no `fork`), [`start`] writes the regions before it returns.
#![deny(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use vm_memory::{GuestMemoryRegion, GuestRegionMmap};

/// A write of guest RAM into a file that may still be going on.
#[derive(Debug)]
pub struct Writer {
    file: File,
    total: u64,
    state: State,
}

#[derive(Debug)]
enum State {
    /// A child process is writing.
    #[cfg(target_os = "linux")]
    Child(libc::pid_t),
    /// The write is over with this result.
    Done(Option<io::Error>),
}

/// Starts writing `regions` back to back into `file` (from its current position, normally an
/// empty file) and returns once their contents are fixed: later changes to guest memory do not
/// reach the file. The caller keeps the guest from changing RAM until this returns (a paused
/// VM) and then lets it run; [`Writer::wait`] says when the file is complete and synced.
pub fn start(regions: &[Arc<GuestRegionMmap>], file: File) -> io::Result<Writer> {
    let total = regions.iter().map(|r| r.len()).sum();
    imp::start(regions, file, total)
}

impl Writer {
    /// Bytes the file will hold when complete.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes written so far (the file's current length).
    pub fn written(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    /// True when the write is over (successfully or not); [`Writer::wait`] then returns at once.
    pub fn is_finished(&mut self) -> bool {
        imp::poll(self, false);
        matches!(self.state, State::Done(_))
    }

    /// Waits until every byte is written and synced to the disk, or for the error that stopped
    /// the write (e.g. the disk is full).
    pub fn wait(mut self) -> io::Result<()> {
        imp::poll(&mut self, true);
        match std::mem::replace(&mut self.state, State::Done(None)) {
            State::Done(None) => Ok(()),
            State::Done(Some(e)) => Err(e),
            #[cfg(target_os = "linux")]
            State::Child(_) => Err(io::Error::other("the RAM writer did not finish")),
        }
    }
}

impl Drop for Writer {
    /// A writer dropped before it finished is stopped: the file stays incomplete.
    fn drop(&mut self) {
        imp::abandon(self);
    }
}

/// Writes the regions back to back into `out` from this process, through a bounce buffer
/// (portable: no file-descriptor I/O on guest memory).
pub fn write_regions(regions: &[Arc<GuestRegionMmap>], out: &mut impl Write) -> io::Result<()> {
    use vm_memory::{Bytes, GuestMemoryRegion, MemoryRegionAddress};
    let mut buf = vec![0u8; BOUNCE];
    for r in regions {
        let len = r.len();
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(BOUNCE as u64) as usize;
            r.read_slice(&mut buf[..n], MemoryRegionAddress(done))
                .map_err(|e| io::Error::other(e.to_string()))?;
            out.write_all(&buf[..n])?;
            done += n as u64;
        }
    }
    Ok(())
}

/// Writes the regions from this process and syncs the file (the fallback without `fork`).
pub fn write_now(regions: &[Arc<GuestRegionMmap>], file: &mut File) -> io::Result<()> {
    write_regions(regions, file)?;
    file.sync_all()
}

/// Bounce-buffer size of [`write_regions`].
const BOUNCE: usize = 4 << 20;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod imp {
    use super::{State, Writer};
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use vm_memory::{GuestMemoryRegion, GuestRegionMmap};

    /// Largest single write(2) the child issues.
    const CHUNK: usize = 8 << 20;

    pub(super) fn start(
        regions: &[Arc<GuestRegionMmap>],
        file: File,
        total: u64,
    ) -> io::Result<Writer> {
        // Everything the child reads is prepared here, before the fork.
        let spans: Vec<(usize, usize)> = regions
            .iter()
            .map(|r| (r.as_ptr() as usize, r.len() as usize))
            .collect();
        let fd = file.as_raw_fd();
        // SAFETY: fork has no memory-safety preconditions of its own; what makes the child
        // sound is what it runs: only `child_write`, which calls async-signal-safe functions
        // and never returns.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => child_write(fd, &spans),
            pid => Ok(Writer {
                file,
                total,
                state: State::Child(pid),
            }),
        }
    }

    /// The child: writes the spans, syncs, exits with 0 or the failing call's errno.
    fn child_write(fd: i32, spans: &[(usize, usize)]) -> ! {
        // SAFETY: prctl, write, fsync and _exit are async-signal-safe system calls. The spans
        // are the parent's guest RAM mappings, inherited copy-on-write and frozen in this
        // process (nothing else runs in it), so reading them races with nobody; each write
        // stays inside its span.
        unsafe {
            // A writer whose VMM has gone has nobody to report to.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            for &(start, len) in spans {
                let mut done = 0usize;
                while done < len {
                    let n = (len - done).min(CHUNK);
                    let w = libc::write(fd, (start + done) as *const libc::c_void, n);
                    if w < 0 {
                        let e = *libc::__errno_location();
                        if e == libc::EINTR {
                            continue;
                        }
                        libc::_exit(exit_code(e));
                    }
                    if w == 0 {
                        libc::_exit(libc::ENOSPC);
                    }
                    done += w as usize;
                }
            }
            if libc::fsync(fd) != 0 {
                libc::_exit(exit_code(*libc::__errno_location()));
            }
            libc::_exit(0)
        }
    }

    fn exit_code(errno: i32) -> i32 {
        if (1..=255).contains(&errno) {
            errno
        } else {
            libc::EIO
        }
    }

    /// Collects the child's result (blocking when `block`).
    pub(super) fn poll(w: &mut Writer, block: bool) {
        let State::Child(pid) = w.state else {
            return;
        };
        let mut status = 0;
        let flags = if block { 0 } else { libc::WNOHANG };
        let r = loop {
            // SAFETY: waitpid writes only `status`, a valid i32 on this stack.
            let r = unsafe { libc::waitpid(pid, &mut status, flags) };
            if r == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break r;
        };
        if r == 0 {
            return;
        }
        w.state = State::Done(if r == -1 {
            Some(io::Error::last_os_error())
        } else if libc::WIFEXITED(status) {
            match libc::WEXITSTATUS(status) {
                0 => None,
                code => Some(io::Error::from_raw_os_error(code)),
            }
        } else {
            Some(io::Error::other(format!(
                "the RAM writer process was stopped by signal {}",
                libc::WTERMSIG(status)
            )))
        });
    }

    pub(super) fn abandon(w: &mut Writer) {
        if let State::Child(pid) = w.state {
            // SAFETY: signals our own child, which has not been reaped (its pid is still ours).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            poll(w, true);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::{State, Writer};
    use std::fs::File;
    use std::io;
    use std::sync::Arc;
    use vm_memory::GuestRegionMmap;

    pub(super) fn start(
        regions: &[Arc<GuestRegionMmap>],
        mut file: File,
        total: u64,
    ) -> io::Result<Writer> {
        let result = super::write_now(regions, &mut file);
        Ok(Writer {
            file,
            total,
            state: State::Done(result.err()),
        })
    }

    pub(super) fn poll(_: &mut Writer, _: bool) {}

    pub(super) fn abandon(_: &mut Writer) {}
}
