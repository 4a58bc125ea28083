//! The saved state of a whole machine: every vCPU and device of a paused machine, written as
//! `state.bin`, with guest RAM beside it as `ram.bin`.
//!
//! `state.bin` is a small header (magic, format version, length, CRC-32) and a postcard-encoded
//! [`MachineStateV1`]. The vCPU state has its own saved-state types here, separate from `hv`'s
//! runtime ones; the devices' states are their own versioned [`SavedState`]s. `ram.bin` is the
//! RAM regions back to back; a restore maps it privately, so pages load when the guest touches
//! them and the file itself never changes. Both files are written to temporary names, synced
//! and renamed, so a failed save leaves any earlier state whole.

use devices::saved_state::SavedState;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// File name of the machine state in a saved-state folder.
pub const STATE_FILE: &str = "state.bin";
/// File name of the RAM image in a saved-state folder.
pub const RAM_FILE: &str = "ram.bin";
/// Version of [`MachineStateV1`] this build writes and reads.
pub const MACHINE_STATE_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"TRRMSTAT";
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Largest `state.bin` body read (device states, VGA memory included, are far smaller).
const MAX_STATE_LEN: u64 = 256 << 20;

/// Errors saving or restoring machine state; each names the file and the way out.
#[derive(Debug, thiserror::Error)]
pub enum SavedStateError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a Terrarium machine state, or it is damaged.
    #[error("{path} is damaged ({reason}); this saved state cannot be used")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The state was saved by a Terrarium with another format.
    #[error(
        "{path} has machine-state format {found}, this Terrarium reads format {supported}: \
         use the Terrarium that saved it"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Format in the file.
        found: u32,
        /// Format this build reads.
        supported: u32,
    },
    /// The state does not fit the machine it is restored into.
    #[error("the saved state does not fit this VM: {0}")]
    Mismatch(String),
    /// A device refused its state.
    #[error(transparent)]
    Device(#[from] devices::saved_state::RestoreError),
    /// The vCPUs could not be stopped or read.
    #[error("cannot read the processors' state: {0}")]
    Vcpu(String),
}

/// A segment register.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentV1 {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: bool,
    pub dpl: u8,
    pub db: bool,
    pub s: bool,
    pub l: bool,
    pub g: bool,
    pub avl: bool,
    pub unusable: bool,
}

impl From<hv::Segment> for SegmentV1 {
    fn from(s: hv::Segment) -> Self {
        Self {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
        }
    }
}

impl From<SegmentV1> for hv::Segment {
    fn from(s: SegmentV1) -> Self {
        Self {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
        }
    }
}

/// One processor's saved state.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpStateV1 {
    /// rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8–r15, rip, rflags.
    pub gprs: [u64; 18],
    /// cs, ds, es, fs, gs, ss, tr, ldt.
    pub segments: [SegmentV1; 8],
    pub gdt: (u64, u16),
    pub idt: (u64, u16),
    /// cr0, cr2, cr3, cr4, cr8, efer, apic_base.
    pub control: [u64; 7],
    pub fcw: u16,
    pub fsw: u16,
    pub ftw: u8,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
    pub mxcsr: u32,
    pub st: Vec<[u8; 16]>,
    pub xmm: Vec<[u8; 16]>,
    pub xcr0: u64,
    pub msrs: Vec<(u32, u64)>,
    pub lapic: Vec<u8>,
    /// Pending exception: vector, error code, already injected.
    pub exception: Option<(u8, Option<u32>, bool)>,
    pub interrupt: Option<u8>,
    pub nmi_pending: bool,
    pub nmi_masked: bool,
    pub interrupt_shadow: bool,
    /// 0 running, 1 halted, 2 waiting for SIPI.
    pub activity: u8,
}

impl From<&hv::VpState> for VpStateV1 {
    fn from(v: &hv::VpState) -> Self {
        let r = &v.regs;
        let s = &v.sregs;
        let f = &v.fpu;
        Self {
            gprs: [
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags,
            ],
            segments: [s.cs, s.ds, s.es, s.fs, s.gs, s.ss, s.tr, s.ldt].map(SegmentV1::from),
            gdt: (s.gdt.base, s.gdt.limit),
            idt: (s.idt.base, s.idt.limit),
            control: [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base],
            fcw: f.fcw,
            fsw: f.fsw,
            ftw: f.ftw,
            fop: f.fop,
            fip: f.fip,
            fdp: f.fdp,
            mxcsr: f.mxcsr,
            st: f.st.to_vec(),
            xmm: f.xmm.to_vec(),
            xcr0: v.xcr0,
            msrs: v.msrs.iter().map(|m| (m.index, m.value)).collect(),
            lapic: v.lapic.clone(),
            exception: v
                .events
                .exception
                .map(|e| (e.vector, e.error_code, e.injected)),
            interrupt: v.events.interrupt,
            nmi_pending: v.events.nmi_pending,
            nmi_masked: v.events.nmi_masked,
            interrupt_shadow: v.events.interrupt_shadow,
            activity: match v.activity {
                hv::ActivityState::Running => 0,
                hv::ActivityState::Halted => 1,
                hv::ActivityState::WaitForSipi => 2,
            },
        }
    }
}

impl VpStateV1 {
    /// The runtime state, after checking sizes and enumerations.
    pub fn to_runtime(&self, index: usize) -> Result<hv::VpState, String> {
        let bad = |what: &str| format!("vCPU {index}: {what}");
        let st: [[u8; 16]; 8] = self
            .st
            .as_slice()
            .try_into()
            .map_err(|_| bad("x87 stack is not 8 registers"))?;
        let xmm: [[u8; 16]; 16] = self
            .xmm
            .as_slice()
            .try_into()
            .map_err(|_| bad("not 16 XMM registers"))?;
        if self.lapic.len() != hv::LAPIC_STATE_SIZE && !self.lapic.is_empty() {
            return Err(bad("local APIC page has the wrong size"));
        }
        let activity = match self.activity {
            0 => hv::ActivityState::Running,
            1 => hv::ActivityState::Halted,
            2 => hv::ActivityState::WaitForSipi,
            _ => return Err(bad("unknown activity state")),
        };
        let g = &self.gprs;
        let [cs, ds, es, fs, gs, ss, tr, ldt] = self.segments.map(hv::Segment::from);
        let [cr0, cr2, cr3, cr4, cr8, efer, apic_base] = self.control;
        Ok(hv::VpState {
            regs: hv::Registers {
                rax: g[0],
                rbx: g[1],
                rcx: g[2],
                rdx: g[3],
                rsi: g[4],
                rdi: g[5],
                rsp: g[6],
                rbp: g[7],
                r8: g[8],
                r9: g[9],
                r10: g[10],
                r11: g[11],
                r12: g[12],
                r13: g[13],
                r14: g[14],
                r15: g[15],
                rip: g[16],
                rflags: g[17],
            },
            sregs: hv::SpecialRegisters {
                cs,
                ds,
                es,
                fs,
                gs,
                ss,
                tr,
                ldt,
                gdt: hv::TableRegister {
                    base: self.gdt.0,
                    limit: self.gdt.1,
                },
                idt: hv::TableRegister {
                    base: self.idt.0,
                    limit: self.idt.1,
                },
                cr0,
                cr2,
                cr3,
                cr4,
                cr8,
                efer,
                apic_base,
            },
            fpu: hv::FpuState {
                fcw: self.fcw,
                fsw: self.fsw,
                ftw: self.ftw,
                fop: self.fop,
                fip: self.fip,
                fdp: self.fdp,
                mxcsr: self.mxcsr,
                st,
                xmm,
            },
            xcr0: self.xcr0,
            msrs: self
                .msrs
                .iter()
                .map(|&(index, value)| hv::Msr { index, value })
                .collect(),
            lapic: self.lapic.clone(),
            events: hv::PendingEvents {
                exception: self.exception.map(|(vector, error_code, injected)| {
                    hv::PendingException {
                        vector,
                        error_code,
                        injected,
                    }
                }),
                interrupt: self.interrupt,
                nmi_pending: self.nmi_pending,
                nmi_masked: self.nmi_masked,
                interrupt_shadow: self.interrupt_shadow,
            },
            activity,
        })
    }
}

/// A whole machine's saved state (RAM is in [`RAM_FILE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineStateV1 {
    /// Guest RAM in MiB (the RAM file's size follows from it).
    pub memory_mib: u64,
    /// The processors, in index order.
    pub vcpus: Vec<VpStateV1>,
    /// Every device's state.
    pub devices: Vec<SavedState>,
}

/// Writes `path` through a temporary file in the same folder: `write` fills it, then it is
/// synced and renamed over `path`, and the folder is synced; on failure the temporary file is
/// removed and `path` is untouched.
pub fn write_file_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), SavedStateError> {
    let io = |source| SavedStateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

impl MachineStateV1 {
    /// Writes the state to `path` atomically, with a checksum.
    pub fn write(&self, path: &Path) -> Result<(), SavedStateError> {
        let body = postcard::to_allocvec(self).map_err(|e| SavedStateError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("cannot encode: {e}"),
        })?;
        write_file_atomic(path, |f| {
            let mut header = Vec::with_capacity(HEADER_LEN);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&MACHINE_STATE_VERSION.to_le_bytes());
            header.extend_from_slice(&(body.len() as u64).to_le_bytes());
            header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            f.write_all(&header)?;
            f.write_all(&body)
        })
    }

    /// Reads and checks a state file.
    pub fn read(path: &Path) -> Result<Self, SavedStateError> {
        let corrupt = |reason: &str| SavedStateError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let mut f = std::fs::File::open(path).map_err(|source| SavedStateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut header = [0u8; HEADER_LEN];
        f.read_exact(&mut header)
            .map_err(|_| corrupt("shorter than its header"))?;
        if &header[..8] != MAGIC {
            return Err(corrupt("not a Terrarium machine state"));
        }
        let word = |r: std::ops::Range<usize>| header.get(r).unwrap_or_default().to_vec();
        let version = u32::from_le_bytes(word(8..12).try_into().unwrap_or_default());
        if version != MACHINE_STATE_VERSION {
            return Err(SavedStateError::Version {
                path: path.to_path_buf(),
                found: version,
                supported: MACHINE_STATE_VERSION,
            });
        }
        let len = u64::from_le_bytes(word(12..20).try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(word(20..24).try_into().unwrap_or_default());
        if len > MAX_STATE_LEN {
            return Err(corrupt("its length field is impossible"));
        }
        let mut body = Vec::new();
        f.take(len)
            .read_to_end(&mut body)
            .map_err(|source| SavedStateError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if body.len() as u64 != len {
            return Err(corrupt("truncated"));
        }
        if crc32fast::hash(&body) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        postcard::from_bytes(&body).map_err(|e| corrupt(&format!("undecodable: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("terrarium-saved-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample() -> MachineStateV1 {
        let mut vp = hv::VpState::default();
        vp.regs.rip = 0xfff0;
        vp.sregs.cs = hv::Segment::real_mode(0xf000, true);
        vp.lapic = vec![0; hv::LAPIC_STATE_SIZE];
        vp.msrs.push(hv::Msr {
            index: 0x10,
            value: 1234,
        });
        vp.activity = hv::ActivityState::Halted;
        MachineStateV1 {
            memory_mib: 32,
            vcpus: vec![VpStateV1::from(&vp)],
            devices: vec![devices::saved_state::encode("demo", 1, &7u32)],
        }
    }

    #[test]
    fn vcpu_state_round_trips() {
        let mut vp = hv::VpState::default();
        vp.regs.r15 = 15;
        vp.sregs.tr.selector = 0x28;
        vp.fpu.xmm[15][3] = 9;
        vp.events.exception = Some(hv::PendingException {
            vector: 14,
            error_code: Some(2),
            injected: false,
        });
        let back = VpStateV1::from(&vp).to_runtime(0).unwrap();
        assert_eq!(back, vp);
        let mut bad = VpStateV1::from(&vp);
        bad.activity = 9;
        assert!(bad.to_runtime(0).unwrap_err().contains("activity"));
    }

    #[test]
    fn state_file_round_trips_and_refuses_damage() {
        let d = dir("file");
        let p = d.join(STATE_FILE);
        let s = sample();
        s.write(&p).unwrap();
        assert_eq!(MachineStateV1::read(&p).unwrap(), s);

        let bytes = std::fs::read(&p).unwrap();
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(&p, &flipped).unwrap();
        let e = MachineStateV1::read(&p).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains(STATE_FILE), "{e}");

        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(MachineStateV1::read(&p)
            .unwrap_err()
            .to_string()
            .contains("truncated"));

        let mut newer = bytes.clone();
        newer[8] = 2;
        std::fs::write(&p, &newer).unwrap();
        assert!(matches!(
            MachineStateV1::read(&p),
            Err(SavedStateError::Version { found: 2, .. })
        ));

        std::fs::write(&p, b"hello").unwrap();
        assert!(matches!(
            MachineStateV1::read(&p),
            Err(SavedStateError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(d);
    }
}
