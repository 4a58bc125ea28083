//! Unit tests: the soft-float core and the architectural rules around the instructions
//! (faults, alignment, unmasked exceptions, MXCSR, MMX aliasing, FXSAVE layouts). Bit-exact
//! agreement with the host CPU is checked by `tests/sse_host.rs`.

use super::fp::*;
use super::*;
use crate::cpu::Step;
use crate::state::efer;
use iced_x86::{Decoder, DecoderOptions};

struct Ram(Vec<u8>);

impl Bus for Ram {
    fn read(&mut self, a: u64, d: &mut [u8]) {
        for (k, b) in d.iter_mut().enumerate() {
            *b = self.0.get(a as usize + k).copied().unwrap_or(0xff);
        }
    }
    fn write(&mut self, a: u64, d: &[u8]) {
        for (k, b) in d.iter().enumerate() {
            if let Some(x) = self.0.get_mut(a as usize + k) {
                *x = *b;
            }
        }
    }
    fn io_in(&mut self, _: u16, d: &mut [u8]) {
        d.fill(0xff);
    }
    fn io_out(&mut self, _: u16, _: &[u8]) {}
    fn tsc(&mut self) -> u64 {
        0
    }
}

const MEM: u64 = 0x3000;

/// Flat protected mode; 64-bit code when `long`.
fn cpu(long: bool) -> Cpu {
    let mut cpu = Cpu::new(true);
    let s = &mut cpu.state;
    s.cr0 |= cr::PE;
    s.cr4 |= cr::OSFXSR | cr::OSXMMEXCPT;
    if long {
        s.efer |= efer::LME | efer::LMA;
    }
    let data = hv::Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x10,
        type_: 3,
        present: true,
        db: true,
        s: true,
        g: true,
        ..Default::default()
    };
    s.seg = [data; 6];
    s.seg[1] = hv::Segment {
        selector: 8,
        type_: 0xb,
        db: !long,
        l: long,
        ..data
    };
    s.gpr[6] = MEM;
    cpu
}

fn run(cpu: &mut Cpu, ram: &mut Ram, code: &[u8]) -> R<()> {
    let mut d = Decoder::with_ip(cpu.state.bitness(), code, 0, DecoderOptions::NONE);
    let i = d.decode();
    assert!(!i.is_invalid(), "{code:02x?}");
    execute(cpu, &i, ram).expect("an SSE instruction")
}

fn ram() -> Ram {
    Ram(vec![0; 0x4000])
}

fn b32(x: f32) -> u64 {
    u64::from(x.to_bits())
}

const XM: u8 = 19;

// ---- soft-float ----

#[test]
fn directed_rounding() {
    let one = b32(1.0);
    let tiny = b32(2f32.powi(-30));
    let next = b32(1.0 + f32::EPSILON);
    for (rc, want) in [(0, one), (1, one), (2, next), (3, one)] {
        let mut e = Env::new(0x1f80 | rc << 13);
        assert_eq!(e.add(F32, one, tiny, false), want, "rc {rc}");
        assert_eq!(e.flags, PE);
    }
    // −1 − tiny: RD goes away from zero, RU/RZ toward it.
    let m1 = b32(-1.0);
    for (rc, want) in [(0, m1), (1, b32(-1.0 - f32::EPSILON)), (2, m1), (3, m1)] {
        let mut e = Env::new(0x1f80 | rc << 13);
        assert_eq!(e.add(F32, m1, tiny, true), want, "rc {rc}");
    }
    // x − x is −0 only when rounding down.
    let mut e = Env::new(0x1f80 | 1 << 13);
    assert_eq!(
        e.add(F64, 0x4000_0000_0000_0000, 0x4000_0000_0000_0000, true),
        1 << 63
    );
    let mut e = Env::new(0x1f80);
    assert_eq!(
        e.add(F64, 0x4000_0000_0000_0000, 0x4000_0000_0000_0000, true),
        0
    );
}

#[test]
fn overflow_underflow_ftz_daz() {
    let max = b32(f32::MAX);
    let mut e = Env::new(0x1f80);
    assert_eq!(e.mul(F32, max, b32(2.0)), b32(f32::INFINITY));
    assert_eq!(e.flags, OE | PE);
    let mut e = Env::new(0x1f80 | 3 << 13);
    assert_eq!(e.mul(F32, max, b32(2.0)), max);
    // Denormal result, inexact: UE|PE; with FTZ: +0.
    let small = b32(f32::MIN_POSITIVE);
    let third = b32(1.0 / 3.0);
    let mut e = Env::new(0x1f80);
    let r = e.mul(F32, small, third);
    assert!(F32.is_denormal(r));
    assert_eq!(e.flags, UE | PE);
    let mut e = Env::new(0x1f80 | FTZ);
    assert_eq!(e.mul(F32, small, third), 0);
    assert_eq!(e.flags, UE | PE);
    // Exact denormal result: no flags while underflow is masked.
    let mut e = Env::new(0x1f80);
    assert_eq!(e.mul(F32, small, b32(0.5)), 0x0040_0000);
    assert_eq!(e.flags, 0);
    // DAZ: a denormal source is zero and raises nothing.
    let mut e = Env::new(0x1f80 | DAZ);
    assert_eq!(e.add(F32, 1, b32(1.0), false), b32(1.0));
    assert_eq!(e.flags, 0);
    let mut e = Env::new(0x1f80);
    assert_eq!(e.add(F32, 1, b32(1.0), false), b32(1.0));
    assert_eq!(e.flags, DE | PE);
}

#[test]
fn nans_and_invalid() {
    let mut e = Env::new(0x1f80);
    let qnan = 0x7fc0_0001;
    let snan = 0x7f80_0002;
    assert_eq!(e.add(F32, qnan, snan, false), qnan);
    assert_eq!(e.flags, IE);
    let mut e = Env::new(0x1f80);
    assert_eq!(e.add(F32, b32(1.0), snan, false), snan | 0x40_0000);
    let mut e = Env::new(0x1f80);
    assert_eq!(
        e.add(F32, b32(f32::INFINITY), b32(f32::INFINITY), true),
        0xffc0_0000
    );
    assert_eq!(e.flags, IE);
    assert_eq!(e.sqrt(F64, 0xbff0_0000_0000_0000), 0xfff8_0000_0000_0000);
    let mut e = Env::new(0x1f80);
    assert_eq!(
        e.float_to_int(F64, 0x41e0_0000_0000_0000, 32, true),
        0x8000_0000
    );
    assert_eq!(e.flags, IE);
    let mut e = Env::new(0x1f80);
    assert_eq!(
        e.float_to_int(F64, 0xc1e0_0000_0000_0000, 32, true),
        0x8000_0000
    );
    assert_eq!(e.flags, 0);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn round_to_nearest_matches_host_arithmetic() {
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20000 {
        let (a, b) = (next(), next());
        let (fa, fb) = (f64::from_bits(a), f64::from_bits(b));
        if fa.is_nan() || fb.is_nan() {
            continue;
        }
        let mut e = Env::new(0x1f80);
        let check = |got: u64, want: f64| {
            assert!(
                got == want.to_bits() || (want.is_nan() && F64.is_nan(got)),
                "{a:#x} {b:#x}: {got:#x} vs {:#x}",
                want.to_bits()
            )
        };
        check(e.add(F64, a, b, false), fa + fb);
        check(e.add(F64, a, b, true), fa - fb);
        check(e.mul(F64, a, b), fa * fb);
        check(e.div(F64, a, b), fa / fb);
        check(e.sqrt(F64, a), fa.sqrt());
        let (sa, sb) = (a as u32, b as u32);
        let (ga, gb) = (f32::from_bits(sa), f32::from_bits(sb));
        let got = e.mul(F32, u64::from(sa), u64::from(sb));
        let want = ga * gb;
        assert!(got == b32(want) || want.is_nan());
        let got = e.convert(F64, F32, a);
        assert!(got == b32(fa as f32) || fa.is_nan());
    }
}

// ---- faults ----

#[test]
fn control_register_checks() {
    let mut r = ram();
    let addps = [0x0f, 0x58, 0xc1];
    let paddb_mm = [0x0f, 0xfc, 0xc1];
    let mut c = cpu(true);
    assert_eq!(run(&mut c, &mut r, &addps), Ok(()));
    c.state.cr4 &= !cr::OSFXSR;
    assert_eq!(run(&mut c, &mut r, &addps), Err(Fault::ud()));
    // MMX does not need OSFXSR.
    assert_eq!(run(&mut c, &mut r, &paddb_mm), Ok(()));
    c.state.cr4 |= cr::OSFXSR;
    c.state.cr0 |= cr::TS;
    assert_eq!(run(&mut c, &mut r, &addps), Err(Fault::nm()));
    assert_eq!(run(&mut c, &mut r, &paddb_mm), Err(Fault::nm()));
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0xae, 0x06]), Err(Fault::nm()));
    c.state.cr0 = (c.state.cr0 & !cr::TS) | cr::EM;
    assert_eq!(run(&mut c, &mut r, &addps), Err(Fault::ud()));
    assert_eq!(run(&mut c, &mut r, &paddb_mm), Err(Fault::ud()));
    // FXSAVE: EM gives #NM.
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0xae, 0x06]), Err(Fault::nm()));
}

#[test]
fn alignment() {
    let mut r = ram();
    let mut c = cpu(true);
    c.state.gpr[6] = MEM + 8;
    assert_eq!(
        run(&mut c, &mut r, &[0x0f, 0x28, 0x06]), // movaps xmm0, [rsi]
        Err(Fault::gp(0))
    );
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0x58, 0x06]), Err(Fault::gp(0))); // addps
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0x10, 0x06]), Ok(())); // movups
    assert_eq!(run(&mut c, &mut r, &[0xf3, 0x0f, 0x58, 0x06]), Ok(())); // addss m32
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0xae, 0x06]), Err(Fault::gp(0))); // fxsave
    c.state.gpr[6] = MEM;
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0x28, 0x06]), Ok(()));
}

#[test]
fn unmasked_exception() {
    let mut r = ram();
    let mut c = cpu(true);
    c.state.fpu.mxcsr = 0x1f80 & !(ZE << 7);
    c.state.fpu.xmm[0][..4].copy_from_slice(&1f32.to_bits().to_le_bytes());
    let before = c.state.fpu.xmm[0];
    let divss = [0xf3, 0x0f, 0x5e, 0xc1];
    let e = run(&mut c, &mut r, &divss).unwrap_err();
    assert_eq!(e.vector, XM);
    assert_eq!(c.state.fpu.xmm[0], before, "destination untouched");
    assert_eq!(c.state.fpu.mxcsr & 0x3f, ZE);
    c.state.cr4 &= !cr::OSXMMEXCPT;
    assert_eq!(run(&mut c, &mut r, &divss), Err(Fault::ud()));
    // Masked: infinity and the flag.
    c.state.fpu.mxcsr = 0x1f80;
    assert_eq!(run(&mut c, &mut r, &divss), Ok(()));
    assert_eq!(
        &c.state.fpu.xmm[0][..4],
        &f32::INFINITY.to_bits().to_le_bytes()
    );
    assert_eq!(c.state.fpu.mxcsr, 0x1f80 | ZE);
}

#[test]
fn ldmxcsr_stmxcsr() {
    let mut r = ram();
    let mut c = cpu(true);
    r.0[MEM as usize..][..4].copy_from_slice(&0x0001_1f80u32.to_le_bytes());
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0xae, 0x16]), Err(Fault::gp(0)));
    r.0[MEM as usize..][..4].copy_from_slice(&0xffc0u32.to_le_bytes());
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0xae, 0x16]), Ok(()));
    assert_eq!(c.state.fpu.mxcsr, 0xffc0);
    c.state.fpu.mxcsr = 0x1234;
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0xae, 0x1e]), Ok(())); // stmxcsr [rsi]
    assert_eq!(&r.0[MEM as usize..][..4], &0x1234u32.to_le_bytes());
}

#[test]
fn mmx_aliases_x87() {
    let mut r = ram();
    let mut c = cpu(true);
    for k in 0..8 {
        c.state.fpu.st[k] = [k as u8; 16];
        c.state.fpu.st[k][10..].fill(0);
    }
    c.state.fpu.fsw = 3 << 11 | 0x41;
    c.state.fpu.ftw = 0x01;
    // movq mm0, mm1: MM1 is physical R1 = ST(1 − 3 mod 8) = old st[6].
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0x6f, 0xc1]), Ok(()));
    assert_eq!(c.state.fpu.fsw, 0x41, "TOP = 0");
    assert_eq!(c.state.fpu.ftw, 0xff);
    assert_eq!(c.state.fpu.st[1][..10], [6u8; 10]);
    assert_eq!(c.state.fpu.st[0][..8], [6u8; 8]);
    assert_eq!(c.state.fpu.st[0][8..10], [0xff, 0xff]);
    assert_eq!(c.state.fpu.st[3][..10], [0u8; 10], "R3 was ST0");
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0x77]), Ok(())); // emms
    assert_eq!(c.state.fpu.ftw, 0);
}

#[test]
fn fxsave_fxrstor_32bit_layout() {
    let mut r = ram();
    let mut c = cpu(false);
    c.state.fpu.fip = 0x1_2345_6789;
    c.state.fpu.fdp = 0xaabb_ccdd;
    c.state.fpu.fop = 0x7ff;
    c.state.fpu.ftw = 0x81;
    for k in 0..16 {
        c.state.fpu.xmm[k] = [k as u8 + 1; 16];
    }
    r.0[MEM as usize..][..512].fill(0xee);
    assert_eq!(run(&mut c, &mut r, &[0x0f, 0xae, 0x06]), Ok(())); // fxsave [esi]
    let img = r.0[MEM as usize..][..512].to_vec();
    assert_eq!(img[0..2], [0x7f, 0x03]);
    assert_eq!(img[4], 0x81);
    assert_eq!(img[8..12], 0x2345_6789u32.to_le_bytes());
    assert_eq!(img[12..16], [0; 4]);
    assert_eq!(img[16..20], 0xaabb_ccddu32.to_le_bytes());
    assert_eq!(img[24..28], 0x1f80u32.to_le_bytes());
    assert_eq!(img[28..32], 0xffffu32.to_le_bytes());
    assert_eq!(img[160..176], [1; 16]);
    assert_eq!(img[272..288], [8; 16]);
    assert!(img[288..].iter().all(|&b| b == 0xee), "XMM8+ not stored");
    let mut c2 = cpu(false);
    assert_eq!(run(&mut c2, &mut r, &[0x0f, 0xae, 0x0e]), Ok(())); // fxrstor
    assert_eq!(c2.state.fpu.fip, 0x2345_6789);
    assert_eq!(c2.state.fpu.xmm[7], [8; 16]);
    assert_eq!(c2.state.fpu.xmm[8], [0; 16], "XMM8+ not loaded");
    r.0[MEM as usize + 24..][..4].copy_from_slice(&0x1_0000u32.to_le_bytes());
    assert_eq!(run(&mut c2, &mut r, &[0x0f, 0xae, 0x0e]), Err(Fault::gp(0)));
}

#[test]
fn real_mode_through_step() {
    // movaps xmm0, [bx]; addps xmm0, xmm0 at 0000:0100 in real mode.
    let mut r = ram();
    let mut c = Cpu::new(true);
    c.state.cr4 |= cr::OSFXSR;
    c.state.seg[1].base = 0;
    c.state.seg[1].selector = 0;
    c.state.rip = 0x100;
    c.state.gpr[3] = 0x200;
    r.0[0x100..0x106].copy_from_slice(&[0x0f, 0x28, 0x07, 0x0f, 0x58, 0xc0]);
    for k in 0..4 {
        r.0[0x200 + 4 * k..][..4].copy_from_slice(&(k as f32 + 0.5).to_bits().to_le_bytes());
    }
    assert_eq!(c.step(&mut r), Step::Executed);
    assert_eq!(c.step(&mut r), Step::Executed);
    assert_eq!(c.state.rip, 0x106);
    let x = c.state.fpu.xmm[0];
    for k in 0..4 {
        let v = f32::from_le_bytes(x[4 * k..4 * k + 4].try_into().unwrap());
        assert_eq!(v, 2.0 * (k as f32 + 0.5));
    }
}
