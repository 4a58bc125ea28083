//! CPUID: describes exactly what the software CPU implements.

use crate::cpu::Cpu;

/// Vendor string (EBX, EDX, ECX order as returned by leaf 0).
const VENDOR: &[u8; 12] = b"TerrariumEmu";
/// Brand string for leaves 0x8000_0002..4.
const BRAND: &[u8; 48] =
    b"Terrarium software CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// Leaf 1 EDX: FPU, PSE, TSC, MSR, PAE, CX8, APIC, SEP, MTRR, PGE, CMOV, PAT, CLFSH, MMX, FXSR,
/// SSE, SSE2.
const LEAF1_EDX: u32 = (1 << 0)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 9)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 15)
    | (1 << 16)
    | (1 << 19)
    | (1 << 23)
    | (1 << 24)
    | (1 << 25)
    | (1 << 26);
/// Leaf 1 ECX: CMPXCHG16B, TSC-deadline APIC timer, hypervisor present.
const LEAF1_ECX: u32 = (1 << 13) | (1 << 24) | (1 << 31);
/// Extended leaf 1 EDX: SYSCALL, NX, long mode. ECX: LAHF/SAHF in 64-bit mode.
const EXT1_EDX: u32 = (1 << 11) | (1 << 20) | (1 << 29);
const EXT1_ECX: u32 = 1;

/// Leaf 7 EDX: IBRS and IBPB (the SPEC_CTRL and PRED_CMD MSRs), the ARCH_CAPABILITIES MSR.
const LEAF7_EDX: u32 = (1 << 26) | (1 << 29);

/// IA32_ARCH_CAPABILITIES: an instruction-at-a-time CPU without speculative execution has
/// none of the weaknesses these bits deny: RDCL_NO (Meltdown), IBRS_ALL (branch prediction
/// needs no per-entry control), SSB_NO, MDS_NO, PSCHANGE_MC_NO, TAA_NO, SBDR_SSDP_NO,
/// FBSDP_NO, PSDP_NO, BHI_NO, PBRSB_NO, GDS_NO, RFDS_NO. Guests then skip the mitigations
/// (page table isolation, retpolines, buffer clearing) that cost time and protect nothing here.
pub(crate) const ARCH_CAPABILITIES: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 20)
    | (1 << 24)
    | (1 << 26)
    | (1 << 27);

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Returns (EAX, EBX, ECX, EDX) for `leaf`/`sub`.
pub fn cpuid(cpu: &Cpu, leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    match leaf {
        0 => (7, word(VENDOR, 0), word(VENDOR, 8), word(VENDOR, 4)),
        1 => {
            let ebx = (cpu.apic_id << 24) | (cpu.cpu_count.min(255) << 16) | (8 << 8);
            let edx = LEAF1_EDX | if cpu.cpu_count > 1 { 1 << 28 } else { 0 };
            (0x0000_06f1, ebx, LEAF1_ECX, edx)
        }
        7 if sub == 0 => (0, 0, 0, LEAF7_EDX),
        0x8000_0000 => (0x8000_0008, 0, 0, 0),
        0x8000_0001 => (0, 0, EXT1_ECX, EXT1_EDX),
        0x8000_0002..=0x8000_0004 => {
            let o = ((leaf - 0x8000_0002) * 16) as usize;
            (
                word(BRAND, o),
                word(BRAND, o + 4),
                word(BRAND, o + 8),
                word(BRAND, o + 12),
            )
        }
        0x8000_0008 => (0x0000_3028, 0, 0, 0),
        _ => (0, 0, 0, 0),
    }
}
