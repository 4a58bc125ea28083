//! Direct Linux boot: a bzImage, initrd and command line loaded the way a boot loader would
//! (32-bit boot protocol, Documentation/arch/x86/boot.rst), without firmware running first.

use crate::memory::MemoryMap;
use hv::{Segment, TableRegister, VpState};
use std::path::PathBuf;

/// Where the boot GDT goes.
const GDT_ADDRESS: u64 = 0x500;
/// Where the zero page (`boot_params`) goes.
pub const ZERO_PAGE: u64 = 0x7000;
/// Where the command line goes.
pub const CMDLINE_ADDRESS: u64 = 0x2_0000;
/// Longest command line accepted.
pub const CMDLINE_MAX: usize = 0x1_0000 - 1;
/// Protected-mode kernel load address.
pub const KERNEL_ADDRESS: u64 = 0x10_0000;

const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;

/// What to boot.
#[derive(Debug, Clone)]
pub struct LinuxBoot {
    /// bzImage file.
    pub kernel: PathBuf,
    /// Initial RAM disk, if any.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
}

/// Direct-boot problems, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LinuxBootError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a bzImage the loader accepts.
    #[error("{path} is not a Linux bzImage kernel ({reason})")]
    NotBzImage {
        /// The file.
        path: PathBuf,
        /// Loader's reason.
        reason: String,
    },
    /// The initrd does not fit below the kernel's limit.
    #[error(
        "initrd {path} ({size} bytes) does not fit in guest memory; give the VM more --memory"
    )]
    InitrdTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Command line too long.
    #[error("kernel command line is longer than {CMDLINE_MAX} bytes")]
    CommandLine,
    /// Writing into guest memory failed.
    #[error("cannot place the kernel in guest memory: {0}")]
    Memory(String),
    /// This build cannot boot a kernel directly.
    #[error(
        "direct kernel boot is not available in this build ({0}); boot the VM from a CD or \
         disk image instead"
    )]
    Unsupported(&'static str),
}

/// Where the loaded kernel starts.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// 32-bit entry point.
    pub entry: u64,
}

#[cfg(unix)]
mod bzimage {
    use super::*;
    use crate::memory::FOUR_GIB;
    use linux_loader::configurator::linux::LinuxBootConfigurator;
    use linux_loader::configurator::{BootConfigurator, BootParams};
    use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
    use linux_loader::loader::{bzimage::BzImage, KernelLoader};
    use std::path::Path;
    use vm_memory::{Address, Bytes, GuestAddress};

    const E820_RAM: u32 = 1;
    const E820_RESERVED: u32 = 2;

    fn read(what: &'static str, path: &Path) -> Result<std::fs::File, LinuxBootError> {
        std::fs::File::open(path).map_err(|source| LinuxBootError::Read {
            what,
            path: path.into(),
            source,
        })
    }

    /// Loads kernel, initrd and command line and writes the zero page with an e820 map.
    /// Also writes the ACPI tables describing `cpus` processors.
    pub fn load(
        memory: &MemoryMap,
        boot: &LinuxBoot,
        cpus: u32,
    ) -> Result<LoadedKernel, LinuxBootError> {
        if boot.cmdline.len() > CMDLINE_MAX {
            return Err(LinuxBootError::CommandLine);
        }
        let mut kernel = read("kernel", &boot.kernel)?;
        let loaded = BzImage::load(
            &memory.guest,
            None,
            &mut kernel,
            Some(GuestAddress(KERNEL_ADDRESS)),
        )
        .map_err(|e| LinuxBootError::NotBzImage {
            path: boot.kernel.clone(),
            reason: e.to_string(),
        })?;
        let mut hdr = loaded
            .setup_header
            .ok_or_else(|| LinuxBootError::NotBzImage {
                path: boot.kernel.clone(),
                reason: "no setup header".into(),
            })?;
        hdr.type_of_loader = 0xff;
        hdr.loadflags |= 0x80; // CAN_USE_HEAP
        hdr.heap_end_ptr = 0xfe00;
        hdr.cmd_line_ptr = CMDLINE_ADDRESS as u32;
        hdr.vid_mode = 0xffff;

        let mut cmdline = boot.cmdline.clone().into_bytes();
        cmdline.push(0);
        memory
            .guest
            .write_slice(&cmdline, GuestAddress(CMDLINE_ADDRESS))
            .map_err(|e| LinuxBootError::Memory(e.to_string()))?;

        if let Some(path) = &boot.initrd {
            let data = std::fs::read(path).map_err(|source| LinuxBootError::Read {
                what: "initrd",
                path: path.clone(),
                source,
            })?;
            let size = data.len() as u64;
            let limit = u64::from(hdr.initrd_addr_max).min(memory.below_4g - 1);
            let kernel_end = loaded.kernel_load.raw_value() + loaded.kernel_end;
            let start = limit
                .checked_sub(size)
                .map(|a| a & !0xfff)
                .filter(|&a| a >= kernel_end)
                .ok_or_else(|| LinuxBootError::InitrdTooLarge {
                    path: path.clone(),
                    size,
                })?;
            memory
                .guest
                .write_slice(&data, GuestAddress(start))
                .map_err(|e| LinuxBootError::Memory(e.to_string()))?;
            hdr.ramdisk_image = start as u32;
            hdr.ramdisk_size = size as u32;
        }

        for (addr, bytes) in crate::acpi::tables(cpus) {
            memory
                .guest
                .write_slice(&bytes, GuestAddress(addr))
                .map_err(|e| LinuxBootError::Memory(e.to_string()))?;
        }
        let mut params = boot_params {
            hdr,
            acpi_rsdp_addr: crate::acpi::TABLES_BASE,
            ..Default::default()
        };
        let mut e820 = vec![
            (0, 0x9_fc00, E820_RAM),
            (0x9_fc00, 0x400, E820_RESERVED),
            (
                crate::acpi::TABLES_BASE,
                0x10_0000 - crate::acpi::TABLES_BASE,
                E820_RESERVED,
            ),
            (0x10_0000, memory.below_4g - 0x10_0000, E820_RAM),
        ];
        if memory.above_4g > 0 {
            e820.push((FOUR_GIB, memory.above_4g, E820_RAM));
        }
        for (i, (addr, size, kind)) in e820.into_iter().enumerate() {
            params.e820_table[i] = boot_e820_entry {
                addr,
                size,
                r#type: kind,
            };
            params.e820_entries = (i + 1) as u8;
        }
        LinuxBootConfigurator::write_bootparams::<vm_memory::GuestMemoryMmap>(
            &BootParams::new(&params, GuestAddress(ZERO_PAGE)),
            &memory.guest,
        )
        .map_err(|e| LinuxBootError::Memory(e.to_string()))?;

        // Boot GDT: null, null, __BOOT_CS, __BOOT_DS.
        let gdt: [u64; 4] = [0, 0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
        let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
        memory
            .guest
            .write_slice(&bytes, GuestAddress(GDT_ADDRESS))
            .map_err(|e| LinuxBootError::Memory(e.to_string()))?;
        Ok(LoadedKernel {
            entry: u64::from(hdr.code32_start),
        })
    }
}

#[cfg(unix)]
pub use bzimage::load;

/// Loads kernel, initrd and command line: not in this build. linux-loader, which parses the
/// bzImage and writes the zero page, builds only for Unix hosts.
#[cfg(not(unix))]
pub fn load(
    _memory: &MemoryMap,
    _boot: &LinuxBoot,
    _cpus: u32,
) -> Result<LoadedKernel, LinuxBootError> {
    Err(LinuxBootError::Unsupported(
        "the bzImage loader builds only for Unix hosts",
    ))
}

/// The processor state the 32-bit boot protocol requires: flat protected mode, paging off,
/// interrupts disabled, ESI pointing at the zero page.
pub fn entry_state(mut s: VpState, kernel: &LoadedKernel) -> VpState {
    let flat = |selector: u16, code: bool| Segment::flat(selector, code, false, 0);
    s.regs = hv::Registers {
        rip: kernel.entry,
        rsi: ZERO_PAGE,
        rflags: 2,
        ..Default::default()
    };
    s.sregs.cs = flat(BOOT_CS, true);
    for seg in [
        &mut s.sregs.ds,
        &mut s.sregs.es,
        &mut s.sregs.fs,
        &mut s.sregs.gs,
        &mut s.sregs.ss,
    ] {
        *seg = flat(BOOT_DS, false);
    }
    s.sregs.gdt = TableRegister {
        base: GDT_ADDRESS,
        limit: 31,
    };
    s.sregs.idt = TableRegister { base: 0, limit: 0 };
    s.sregs.cr0 = (s.sregs.cr0 | 1) & !(1 << 31);
    s.activity = hv::ActivityState::Running;
    s
}
