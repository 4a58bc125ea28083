//! Answers to the CPUID and MSR exits the partition asks for.

use crate::emulate::next_rip;
use crate::exit::{CpuidAccessContext, MsrAccessContext, VpExitContext};
use crate::regs::{RegisterList, RegisterName, RegisterValue};

/// CPUID leaves that exit to user space (the rest the hypervisor answers).
pub const CPUID_EXIT_LEAVES: [u32; 3] = [1, 0xb, 0x1f];

/// The CPUID result for processor `vp` of `count`: the hypervisor's default with the APIC ID,
/// the logical processor count and the hypervisor-present bit set as the machine expects.
pub fn cpuid_result(leaf: u32, default: [u32; 4], vp: u32, count: u32) -> [u32; 4] {
    let [eax, mut ebx, mut ecx, mut edx] = default;
    match leaf {
        1 => {
            ebx = (ebx & 0x0000_ffff) | (vp << 24) | (count.min(255) << 16);
            ecx |= 1 << 31;
            if count > 1 {
                edx |= 1 << 28;
            }
        }
        0xb | 0x1f => edx = vp,
        _ => {}
    }
    [eax, ebx, ecx, edx]
}

/// Registers that complete a CPUID exit.
pub fn complete_cpuid(
    vp: &VpExitContext,
    c: &CpuidAccessContext,
    index: u32,
    count: u32,
) -> RegisterList {
    let r = cpuid_result(c.rax as u32, c.default_result, index, count);
    let mut l = RegisterList::new();
    for (name, v) in [
        (RegisterName::RAX, r[0]),
        (RegisterName::RBX, r[1]),
        (RegisterName::RCX, r[2]),
        (RegisterName::RDX, r[3]),
    ] {
        l.push(name, RegisterValue::from_u64(u64::from(v)));
    }
    l.push(RegisterName::RIP, RegisterValue::from_u64(next_rip(vp)));
    l
}

/// MSRs a guest may touch that the hypervisor leaves to user space, and what they hold.
/// Reads of any other unhandled MSR return 0 and writes are dropped, as a PC with the
/// feature absent but the MSR decoded would (logged, so odd guests can be found).
fn known_msr_value(msr: u32) -> Option<u64> {
    match msr {
        // IA32_PLATFORM_ID, IA32_BIOS_SIGN_ID (microcode revision), MISC_ENABLE (fast strings).
        0x17 | 0x8b => Some(0),
        0x1a0 => Some(1),
        _ => None,
    }
}

/// Registers that complete an RDMSR/WRMSR exit of an MSR the hypervisor does not handle.
pub fn complete_msr(vp: &VpExitContext, m: &MsrAccessContext) -> RegisterList {
    let mut l = RegisterList::new();
    if m.is_write {
        let value = (m.rdx << 32) | (m.rax & 0xffff_ffff);
        tracing::debug!(
            msr = format_args!("{:#x}", m.msr),
            value = format_args!("{value:#x}"),
            "write to an MSR the hypervisor does not handle; ignored"
        );
    } else {
        let value = known_msr_value(m.msr).unwrap_or_else(|| {
            tracing::debug!(
                msr = format_args!("{:#x}", m.msr),
                "read of an MSR the hypervisor does not handle; 0"
            );
            0
        });
        l.push(
            RegisterName::RAX,
            RegisterValue::from_u64(value & 0xffff_ffff),
        );
        l.push(RegisterName::RDX, RegisterValue::from_u64(value >> 32));
    }
    l.push(RegisterName::RIP, RegisterValue::from_u64(next_rip(vp)));
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExecutionState;
    use hv::Segment;

    fn vp64(rip: u64, len: u8) -> VpExitContext {
        VpExitContext {
            execution_state: ExecutionState {
                cr0_pe: true,
                efer_lma: true,
                ..Default::default()
            },
            instruction_length: len,
            cr8: 0,
            cs: Segment::flat(8, true, true, 0),
            rip,
            rflags: 2,
        }
    }

    #[test]
    fn cpuid_identifies_the_processor() {
        let r = cpuid_result(
            1,
            [0x906ea, 0x0101_0800, 0x7ffa_fbff, 0xbfeb_fbff & !(1 << 28)],
            2,
            4,
        );
        assert_eq!(r[1] >> 24, 2, "APIC ID");
        assert_eq!((r[1] >> 16) & 0xff, 4, "logical count");
        assert_eq!(r[1] & 0xffff, 0x0800, "CLFLUSH size kept");
        assert!(r[2] & (1 << 31) != 0, "hypervisor present");
        assert!(r[3] & (1 << 28) != 0, "HTT with more than one processor");
        assert_eq!(r[0], 0x906ea);
        assert_eq!(cpuid_result(0xb, [1, 2, 3, 4], 5, 8)[3], 5);
        assert_eq!(cpuid_result(7, [1, 2, 3, 4], 5, 8), [1, 2, 3, 4]);
        let c = CpuidAccessContext {
            rax: 1,
            default_result: [1, 0, 0, 0],
            ..Default::default()
        };
        let l = complete_cpuid(&vp64(0x1000, 2), &c, 0, 1);
        assert_eq!(l.u64(RegisterName::RIP), 0x1002);
        assert_eq!(l.u64(RegisterName::RCX), 1 << 31);
        assert_eq!(
            l.u64(RegisterName::RDX) & (1 << 28),
            0,
            "no HTT on one processor"
        );
    }

    #[test]
    fn unhandled_msrs_read_zero_and_ignore_writes() {
        let read = MsrAccessContext {
            is_write: false,
            msr: 0x1a0,
            rax: 0xffff,
            rdx: 0xffff,
        };
        let l = complete_msr(&vp64(0x10, 2), &read);
        assert_eq!(l.u64(RegisterName::RAX), 1);
        assert_eq!(l.u64(RegisterName::RDX), 0);
        assert_eq!(l.u64(RegisterName::RIP), 0x12);
        let other = MsrAccessContext {
            msr: 0x1234,
            ..read
        };
        assert_eq!(
            complete_msr(&vp64(0x10, 2), &other).u64(RegisterName::RAX),
            0
        );
        let write = MsrAccessContext {
            is_write: true,
            ..other
        };
        let l = complete_msr(&vp64(0x10, 2), &write);
        assert_eq!(l.names, vec![RegisterName::RIP]);
    }
}
