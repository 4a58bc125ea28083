//! Cross-checks the software x87 against the host FPU, bit for bit.
//!
//! Each case runs the same instruction bytes on the host (64-bit mode, memory operand at
//! `[rax]`) and on the emulator (16-bit real mode, memory operand at `[bx+si]`: the same
//! ModRM encoding). The host state is captured with FNSAVE; results, FSW, tags, memory and
//! (for FCOMI) RFLAGS are compared over edge-case and pseudo-random operands in all rounding
//! modes and precision controls.
#![cfg(target_arch = "x86_64")]

use std::arch::asm;
use x86emu::{Bus, Cpu, Step};

struct Ram(Vec<u8>);

impl Bus for Ram {
    fn read(&mut self, address: u64, data: &mut [u8]) {
        let a = address as usize;
        data.copy_from_slice(&self.0[a..a + data.len()]);
    }
    fn write(&mut self, address: u64, data: &[u8]) {
        let a = address as usize;
        self.0[a..a + data.len()].copy_from_slice(data);
    }
    fn io_in(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn io_out(&mut self, _port: u16, _data: &[u8]) {}
    fn tsc(&mut self) -> u64 {
        0
    }
}

/// Outcome of one run: FSW, abridged tags, ST(0..8) in stack order, memory, flags.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Out {
    fsw: u16,
    tags: u8,
    st: Vec<[u8; 10]>,
    mem: [u8; 16],
    flags: u64,
}

/// Host abridged tags are per physical register; convert to stack-relative order for the
/// comparison, and only keep valid registers.
fn host_out(save: &[u8; 108], mem: [u8; 16], flags: u64) -> Out {
    let fsw = u16::from_le_bytes([save[4], save[5]]);
    let tw = u16::from_le_bytes([save[8], save[9]]);
    let top = usize::from((fsw >> 11) & 7);
    let mut tags = 0u8;
    let mut st = Vec::new();
    for k in 0..8 {
        let p = (top + k) & 7;
        if (tw >> (2 * p)) & 3 != 3 {
            tags |= 1 << k;
            let mut r = [0u8; 10];
            r.copy_from_slice(&save[28 + 10 * k..38 + 10 * k]);
            st.push(r);
        }
    }
    Out {
        fsw,
        tags,
        st,
        mem,
        flags: flags & 0x8d5,
    }
}

macro_rules! host_fn {
    ($name:ident, $($b:literal),+) => {
        fn $name(fcw: u16, st0: [u8; 10], st1: [u8; 10], mem: [u8; 16]) -> Out {
            let mut save = [0u8; 108];
            let ops = [st1, st0];
            let mut mem = mem;
            let flags: u64;
            // SAFETY: the block only touches the x87 state (left initialized by FNSAVE, as the
            // ABI expects), the local buffers passed in registers, and RFLAGS; the pushf/pop
            // pair is balanced.
            unsafe {
                asm!(
                    "fninit",
                    "fldcw word ptr [{fcw}]",
                    "fld tbyte ptr [{ops}]",
                    "fld tbyte ptr [{ops} + 10]",
                    "push 0x2",
                    "popfq",
                    $(concat!(".byte ", stringify!($b)),)+
                    "pushfq",
                    "pop {fl}",
                    "fnsave [{save}]",
                    "fninit",
                    fcw = in(reg) &fcw,
                    ops = in(reg) ops.as_ptr(),
                    save = in(reg) save.as_mut_ptr(),
                    fl = out(reg) flags,
                    in("rax") mem.as_mut_ptr(),
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                );
            }
            host_out(&save, mem, flags)
        }
    };
}

fn emu(code: &[u8], fcw: u16, st0: [u8; 10], st1: [u8; 10], mem: [u8; 16]) -> Out {
    let mut ram = Ram(vec![0u8; 0x10000]);
    ram.0[0x1000..0x1000 + code.len()].copy_from_slice(code);
    ram.0[0x2000..0x2010].copy_from_slice(&mem);
    let mut cpu = Cpu::new(true);
    cpu.state.seg[1].base = 0;
    cpu.state.seg[1].selector = 0;
    cpu.state.rip = 0x1000;
    cpu.state.gpr[3] = 0x2000; // BX
    cpu.state.gpr[6] = 0; // SI
    let f = &mut cpu.state.fpu;
    f.fcw = fcw;
    f.fsw = 6 << 11;
    f.ftw = 0xc0;
    f.st[0][..10].copy_from_slice(&st0);
    f.st[1][..10].copy_from_slice(&st1);
    assert_eq!(cpu.step(&mut ram), Step::Executed);
    assert_eq!(
        cpu.state.rip,
        0x1000 + code.len() as u64,
        "instruction faulted"
    );
    let f = &cpu.state.fpu;
    let top = usize::from((f.fsw >> 11) & 7);
    let mut tags = 0u8;
    let mut st = Vec::new();
    for k in 0..8 {
        if f.ftw & (1 << ((top + k) & 7)) != 0 {
            tags |= 1 << k;
            let mut r = [0u8; 10];
            r.copy_from_slice(&f.st[k][..10]);
            st.push(r);
        }
    }
    let mut m = [0u8; 16];
    m.copy_from_slice(&ram.0[0x2000..0x2010]);
    Out {
        fsw: f.fsw,
        tags,
        st,
        mem: m,
        flags: cpu.state.rflags & 0x8d5,
    }
}

// ---- operands ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn f80(se: u16, sig: u64) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[..8].copy_from_slice(&sig.to_le_bytes());
    b[8..].copy_from_slice(&se.to_le_bytes());
    b
}

fn edge_values() -> Vec<[u8; 10]> {
    let one = 1u64 << 63;
    let mut v = vec![
        f80(0, 0),
        f80(0x8000, 0),
        f80(0x3fff, one),
        f80(0xbfff, one),
        f80(0x4000, 0xc000_0000_0000_0000), // 3
        f80(0x3fff, u64::MAX),              // just below 2
        f80(0x3ffe, 0xaaaa_aaaa_aaaa_aaab), // 1/3
        f80(0x4000, 0xc90f_daa2_2168_c235), // pi
        f80(0x7ffe, u64::MAX),              // max
        f80(0xfffe, u64::MAX),              // -max
        f80(0x0001, one),                   // min normal
        f80(0x0000, 1),                     // min denormal
        f80(0x8000, 0x4000_0000_0000_0001), // -denormal
        f80(0x0000, 0x8000_0000_0000_0000), // pseudo-denormal
        f80(0x7fff, one),                   // +inf
        f80(0xffff, one),                   // -inf
        f80(0x7fff, 0xc000_0000_0000_0000), // QNaN
        f80(0xffff, 0xc000_0000_0000_0000), // indefinite
        f80(0x7fff, 0x8000_0000_0000_0001), // SNaN
        f80(0x7fff, 0xc000_0000_1234_0000), // QNaN payload
        f80(0xffff, 0x8123_0000_0000_0000), // -SNaN payload
        f80(0x3fff, 0x4000_0000_0000_0000), // unnormal
        f80(0x403e, u64::MAX),              // 2^64 - 1
        f80(0x401d, 0xffff_ffff_0000_0000), // 2^31 - 2^-0 region
        f80(0x400d, 0x8000_8000_0000_0000), // 32768.5
        f80(0xc00d, 0x8000_0000_0000_0000), // -32768
        f80(0x3ffe, one),                   // 0.5
        f80(0x3ffd, 0xc000_0000_0000_0000), // 0.375
        f80(0x4001, 0xa000_0000_0000_0000), // 5
        f80(0x3fbf, 0x8000_0000_0000_0401), // tiny relative to 1
        f80(0x4030, 0xde0b_6b3a_7640_0000), // 1e18
    ];
    v.push(f80(0x0000, u64::MAX >> 1));
    v
}

fn random_value(r: &mut Rng) -> [u8; 10] {
    let s = if r.next() & 1 == 1 { 0x8000 } else { 0 };
    let k = r.next() % 16;
    let e: u16 = match k {
        0 => (r.next() % 70) as u16,               // denormal / tiny
        1 => 0x7ffe - (r.next() % 70) as u16,      // huge
        2 => (r.next() & 0x7fff) as u16,           // anything
        _ => 0x3fff - 40 + (r.next() % 80) as u16, // moderate
    };
    let mut sig = r.next();
    match r.next() % 8 {
        0 => sig &= 0xffff_ff00_0000_0000,
        1 => sig |= 0x0000_0000_00ff_ffff,
        _ => {}
    }
    if e != 0 && e != 0x7fff {
        sig |= 1 << 63;
    } else if e == 0 {
        sig &= !(1 << 63);
    }
    f80(s | e, sig)
}

fn pairs() -> Vec<([u8; 10], [u8; 10])> {
    let edges = edge_values();
    let mut out = Vec::new();
    for a in &edges {
        for b in &edges {
            out.push((*a, *b));
        }
    }
    let mut r = Rng(0x1234_5678_9abc_def1);
    for _ in 0..3000 {
        let a = random_value(&mut r);
        let b = if r.next().is_multiple_of(4) {
            // Close to a: cancellation in subtraction, quotients near 1.
            let mut b = a;
            b[0] ^= (r.next() & 0xff) as u8;
            if r.next() & 1 == 1 {
                b[9] ^= 0x80;
            }
            b
        } else {
            random_value(&mut r)
        };
        out.push((a, b));
    }
    out
}

const FCWS: [u16; 12] = [
    0x037f, 0x077f, 0x0b7f, 0x0f7f, // PC=64, RC 0..3
    0x027f, 0x067f, 0x0a7f, 0x0e7f, // PC=53
    0x007f, 0x047f, 0x087f, 0x0c7f, // PC=24
];

fn check(
    name: &str,
    code: &[u8],
    host: fn(u16, [u8; 10], [u8; 10], [u8; 16]) -> Out,
    fcws: &[u16],
    cases: &[([u8; 10], [u8; 10], [u8; 16])],
) {
    let mut failures = 0;
    let mut total = 0;
    for &fcw in fcws {
        for &(a, b, m) in cases {
            total += 1;
            let h = host(fcw, a, b, m);
            let e = emu(code, fcw, a, b, m);
            if h != e {
                failures += 1;
                if failures <= 8 {
                    eprintln!(
                        "{name} fcw={fcw:#06x} a={} b={} mem={:02x?}\n  host {}\n  emu  {}",
                        show(&a),
                        show(&b),
                        &m[..10],
                        show_out(&h),
                        show_out(&e)
                    );
                }
            }
        }
    }
    assert_eq!(failures, 0, "{name}: {failures} of {total} cases differ");
}

fn show(v: &[u8; 10]) -> String {
    format!(
        "{:04x}:{:016x}",
        u16::from_le_bytes([v[8], v[9]]),
        u64::from_le_bytes(v[..8].try_into().unwrap())
    )
}

fn show_out(o: &Out) -> String {
    let st: Vec<String> = o.st.iter().map(show).collect();
    format!(
        "fsw={:04x} tags={:02x} st={:?} mem={:02x?} fl={:03x}",
        o.fsw,
        o.tags,
        st,
        &o.mem[..10],
        o.flags
    )
}

fn reg_cases() -> Vec<([u8; 10], [u8; 10], [u8; 16])> {
    pairs()
        .into_iter()
        .map(|(a, b)| (a, b, [0u8; 16]))
        .collect()
}

macro_rules! reg_test {
    ($test:ident, $host:ident, $fcws:expr, $($b:literal),+) => {
        host_fn!($host, $($b),+);
        #[test]
        fn $test() {
            check(stringify!($test), &[$($b),+], $host, $fcws, &reg_cases());
        }
    };
}

reg_test!(fadd, h_fadd, &FCWS, 0xd8, 0xc1);
reg_test!(fsub, h_fsub, &FCWS, 0xd8, 0xe1);
reg_test!(fsubr, h_fsubr, &FCWS, 0xd8, 0xe9);
reg_test!(fmul, h_fmul, &FCWS, 0xd8, 0xc9);
reg_test!(fdiv, h_fdiv, &FCWS, 0xd8, 0xf1);
reg_test!(fdivr, h_fdivr, &FCWS, 0xd8, 0xf9);
reg_test!(fadd_sti, h_fadd_sti, &FCWS[..4], 0xdc, 0xc1);
reg_test!(faddp, h_faddp, &FCWS[..4], 0xde, 0xc1);
reg_test!(fsubp, h_fsubp, &FCWS[..4], 0xde, 0xe9);
reg_test!(fsubrp, h_fsubrp, &FCWS[..4], 0xde, 0xe1);
reg_test!(fdivp, h_fdivp, &FCWS[..4], 0xde, 0xf9);
reg_test!(fsqrt, h_fsqrt, &FCWS, 0xd9, 0xfa);
reg_test!(fprem, h_fprem, &FCWS[..1], 0xd9, 0xf8);
reg_test!(fprem1, h_fprem1, &FCWS[..1], 0xd9, 0xf5);
reg_test!(frndint, h_frndint, &FCWS, 0xd9, 0xfc);
reg_test!(fscale, h_fscale, &FCWS, 0xd9, 0xfd);
reg_test!(fxtract, h_fxtract, &FCWS[..1], 0xd9, 0xf4);
reg_test!(fchs, h_fchs, &FCWS[..1], 0xd9, 0xe0);
reg_test!(fabs, h_fabs, &FCWS[..1], 0xd9, 0xe1);
reg_test!(fcom, h_fcom, &FCWS[..1], 0xd8, 0xd1);
reg_test!(fcompp, h_fcompp, &FCWS[..1], 0xde, 0xd9);
reg_test!(fucom, h_fucom, &FCWS[..1], 0xdd, 0xe1);
reg_test!(fucompp, h_fucompp, &FCWS[..1], 0xda, 0xe9);
reg_test!(fcomi, h_fcomi, &FCWS[..1], 0xdb, 0xf1);
reg_test!(fucomip, h_fucomip, &FCWS[..1], 0xdf, 0xe9);
reg_test!(ftst, h_ftst, &FCWS[..1], 0xd9, 0xe4);
reg_test!(fxam, h_fxam, &FCWS[..1], 0xd9, 0xe5);
reg_test!(fxch, h_fxch, &FCWS[..1], 0xd9, 0xc9);
reg_test!(fst_st2, h_fst_st2, &FCWS[..1], 0xdd, 0xd2);
reg_test!(fstp_st1, h_fstp_st1, &FCWS[..1], 0xdd, 0xd9);
reg_test!(fld_st1, h_fld_st1, &FCWS[..1], 0xd9, 0xc1);
reg_test!(fcmovb, h_fcmovb, &FCWS[..1], 0xda, 0xc1);
reg_test!(fcmovnb, h_fcmovnb, &FCWS[..1], 0xdb, 0xc1);
reg_test!(fincstp, h_fincstp, &FCWS[..1], 0xd9, 0xf7);
reg_test!(fdecstp, h_fdecstp, &FCWS[..1], 0xd9, 0xf6);
reg_test!(ffree, h_ffree, &FCWS[..1], 0xdd, 0xc1);

// Unmasked overflow/underflow/precision: results with the wrapped exponent, ES and B.
reg_test!(
    fmul_unmasked,
    h_fmul_unmasked,
    &[0x0360, 0x0f60, 0x0240],
    0xd8,
    0xc9
);
reg_test!(
    fdiv_unmasked,
    h_fdiv_unmasked,
    &[0x0360, 0x0b60, 0x0040],
    0xd8,
    0xf1
);
reg_test!(
    fadd_unmasked,
    h_fadd_unmasked,
    &[0x0360, 0x0340],
    0xd8,
    0xc1
);

host_fn!(h_consts, 0xd9, 0xe8, 0xd9, 0xe9, 0xd9, 0xea, 0xd9, 0xeb, 0xd9, 0xec, 0xd9, 0xed);
#[test]
fn constants() {
    // Six pushes onto two: all registers but two become valid; the seventh would overflow.
    let code = [
        0xd9, 0xe8, 0xd9, 0xe9, 0xd9, 0xea, 0xd9, 0xeb, 0xd9, 0xec, 0xd9, 0xed,
    ];
    let z = f80(0, 0);
    for fcw in FCWS {
        let h = h_consts(fcw, z, z, [0; 16]);
        let mut ram = Ram(vec![0u8; 0x10000]);
        ram.0[0x1000..0x1000 + code.len()].copy_from_slice(&code);
        let mut cpu = Cpu::new(true);
        cpu.state.seg[1].base = 0;
        cpu.state.rip = 0x1000;
        cpu.state.fpu.fcw = fcw;
        cpu.state.fpu.fsw = 6 << 11;
        cpu.state.fpu.ftw = 0xc0;
        for _ in 0..6 {
            cpu.step(&mut ram);
        }
        let f = &cpu.state.fpu;
        assert_eq!(f.fsw, h.fsw);
        for k in 0..6 {
            assert_eq!(&f.st[k][..10], &h.st[k], "constant {k} fcw {fcw:#x}");
        }
    }
}

// ---- memory operands ----

fn mem_cases(kind: &str) -> Vec<([u8; 10], [u8; 10], [u8; 16])> {
    let mut r = Rng(0xfeed_beef_1234_5678);
    let pairs = pairs();
    let mut out = Vec::new();
    let edge32: [u32; 12] = [
        0,
        0x8000_0000,
        0x3f80_0000,
        1,
        0x807f_ffff,
        0x7f7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7f80_0001,
        0xffa0_0000,
        0x0080_0000,
    ];
    let edge64: [u64; 12] = [
        0,
        0x8000_0000_0000_0000,
        0x3ff0_0000_0000_0000,
        1,
        0x800f_ffff_ffff_ffff,
        0x7fef_ffff_ffff_ffff,
        0x7ff0_0000_0000_0000,
        0xfff0_0000_0000_0000,
        0x7ff8_0000_0000_0000,
        0x7ff0_0000_0000_0001,
        0xfff4_0000_0000_0000,
        0x0010_0000_0000_0000,
    ];
    for (n, (a, b)) in pairs.into_iter().enumerate() {
        let mut m = [0u8; 16];
        let x = r.next();
        match kind {
            "f32" => {
                let v = if n < 200 { edge32[n % 12] } else { x as u32 };
                m[..4].copy_from_slice(&v.to_le_bytes());
            }
            "f64" => {
                let v = if n < 200 { edge64[n % 12] } else { x };
                m[..8].copy_from_slice(&v.to_le_bytes());
            }
            "int" => {
                let v: u64 = match n % 6 {
                    0 => x,
                    1 => x >> (x % 64),
                    2 => (x as i64 >> (x % 64)) as u64,
                    3 => [0, 1, u64::MAX, 0x8000, 0x8000_0000, 1 << 63][n % 6],
                    4 => x & 0xffff,
                    _ => x & 0xffff_ffff,
                };
                m[..8].copy_from_slice(&v.to_le_bytes());
            }
            "bcd" => {
                for byte in m.iter_mut().take(9) {
                    let v = r.next() % 100;
                    *byte = ((v / 10) << 4) as u8 | (v % 10) as u8;
                }
                m[9] = if x & 1 == 1 { 0x80 } else { 0 };
            }
            _ => {}
        }
        out.push((a, b, m));
    }
    out
}

macro_rules! mem_test {
    ($test:ident, $host:ident, $kind:literal, $fcws:expr, $($b:literal),+) => {
        host_fn!($host, $($b),+);
        #[test]
        fn $test() {
            check(stringify!($test), &[$($b),+], $host, $fcws, &mem_cases($kind));
        }
    };
}

mem_test!(fld_m32, h_fld_m32, "f32", &FCWS[..1], 0xd9, 0x00);
mem_test!(fld_m64, h_fld_m64, "f64", &FCWS[..1], 0xdd, 0x00);
mem_test!(fst_m32, h_fst_m32, "none", &FCWS, 0xd9, 0x10);
mem_test!(fstp_m64, h_fstp_m64, "none", &FCWS, 0xdd, 0x18);
mem_test!(fstp_m80, h_fstp_m80, "none", &FCWS[..1], 0xdb, 0x38);
mem_test!(fadd_m32, h_fadd_m32, "f32", &FCWS, 0xd8, 0x00);
mem_test!(fdivr_m64, h_fdivr_m64, "f64", &FCWS, 0xdc, 0x38);
mem_test!(fcom_m64, h_fcom_m64, "f64", &FCWS[..1], 0xdc, 0x10);
mem_test!(fild_m16, h_fild_m16, "int", &FCWS[..1], 0xdf, 0x00);
mem_test!(fild_m32, h_fild_m32, "int", &FCWS[..1], 0xdb, 0x00);
mem_test!(fild_m64, h_fild_m64, "int", &FCWS[..1], 0xdf, 0x28);
mem_test!(fiadd_m32, h_fiadd_m32, "int", &FCWS, 0xda, 0x00);
mem_test!(fisubr_m16, h_fisubr_m16, "int", &FCWS[..4], 0xde, 0x28);
mem_test!(ficom_m32, h_ficom_m32, "int", &FCWS[..1], 0xda, 0x10);
mem_test!(fist_m16, h_fist_m16, "none", &FCWS[..4], 0xdf, 0x10);
mem_test!(fist_m32, h_fist_m32, "none", &FCWS[..4], 0xdb, 0x10);
mem_test!(fistp_m64, h_fistp_m64, "none", &FCWS[..4], 0xdf, 0x38);
mem_test!(fisttp_m16, h_fisttp_m16, "none", &FCWS[..1], 0xdf, 0x08);
mem_test!(fisttp_m32, h_fisttp_m32, "none", &FCWS[..1], 0xdb, 0x08);
mem_test!(fisttp_m64, h_fisttp_m64, "none", &FCWS[..1], 0xdd, 0x08);
mem_test!(fbld, h_fbld, "bcd", &FCWS[..1], 0xdf, 0x20);
mem_test!(fbstp, h_fbstp, "none", &FCWS[..4], 0xdf, 0x30);

// ---- transcendental functions: double-precision accuracy ----

fn to_f64(v: &[u8; 10]) -> f64 {
    let se = u16::from_le_bytes([v[8], v[9]]);
    let sig = u64::from_le_bytes(v[..8].try_into().unwrap());
    let e = i32::from(se & 0x7fff);
    let s = if se & 0x8000 != 0 { -1.0 } else { 1.0 };
    if e == 0x7fff {
        return if sig << 1 == 0 {
            s * f64::INFINITY
        } else {
            f64::NAN
        };
    }
    s * (sig as f64) * 2f64.powi(e - 16383 - 63)
}

fn close(a: &[u8; 10], b: &[u8; 10]) -> bool {
    let (x, y) = (to_f64(a), to_f64(b));
    if x.is_nan() || y.is_nan() {
        return x.is_nan() && y.is_nan();
    }
    x == y || (x - y).abs() <= 1e-14 * x.abs().max(y.abs()) || (x - y).abs() < 1e-300
}

macro_rules! approx_test {
    ($test:ident, $host:ident, $($b:literal),+) => {
        host_fn!($host, $($b),+);
        #[test]
        fn $test() {
            let code = [$($b),+];
            let mut r = Rng(0x5555_1234_8765_4321);
            let mut bad = 0;
            for n in 0..4000 {
                let a = if n < 100 {
                    edge_values()[n % 31]
                } else {
                    let e = 0x3fff - 30 + (r.next() % 34) as u16;
                    let s = if r.next() & 1 == 1 { 0x8000 } else { 0 };
                    f80(s | e, r.next() | 1 << 63)
                };
                let b = f80(0x3fff - 3 + (r.next() % 8) as u16, r.next() | 1 << 63);
                // F2XM1 and FYL2XP1 are undefined for |x| ≥ 1.
                let big = u16::from_le_bytes([a[8], a[9]]) & 0x7fff >= 0x3fff;
                if big && matches!(stringify!($test), "f2xm1" | "fyl2xp1") {
                    continue;
                }
                let h = $host(0x37f, a, b, [0; 16]);
                let e = emu(&code, 0x37f, a, b, [0; 16]);
                // PE and C1 (rounding direction) may differ at double precision.
                let ok = (h.fsw & !0x220) == (e.fsw & !0x220)
                    && h.tags == e.tags
                    && h.st.iter().zip(&e.st).all(|(x, y)| close(x, y));
                if !ok {
                    bad += 1;
                    if bad < 8 {
                        eprintln!("{} a={} b={}\n  host {}\n  emu  {}", stringify!($test),
                            show(&a), show(&b), show_out(&h), show_out(&e));
                    }
                }
            }
            assert_eq!(bad, 0);
        }
    };
}

approx_test!(fsin, h_fsin, 0xd9, 0xfe);
approx_test!(fcos, h_fcos, 0xd9, 0xff);
approx_test!(fsincos, h_fsincos, 0xd9, 0xfb);
approx_test!(fptan, h_fptan, 0xd9, 0xf2);
approx_test!(fpatan, h_fpatan, 0xd9, 0xf3);
approx_test!(fyl2x, h_fyl2x, 0xd9, 0xf1);
approx_test!(fyl2xp1, h_fyl2xp1, 0xd9, 0xf9);
approx_test!(f2xm1, h_f2xm1, 0xd9, 0xf0);
