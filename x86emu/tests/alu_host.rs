//! Cross-checks `x86emu::alu` against the host CPU.
//!
//! Every instruction is executed on the host with `asm!` (flags set with POPFQ and read with
//! PUSHFQ) and compared with the software result: the value and the flags the SDM defines for
//! that instruction. Flags the SDM calls undefined differ between vendors and are masked out;
//! set `ALU_HOST_STRICT=1` to compare them too (this reports how the host, Intel or AMD,
//! differs from the Intel behaviour `alu` implements).
//!
//! DAA/DAS/AAA/AAS/AAM/AAD are invalid in 64-bit mode; they are run in a 32-bit compatibility
//! mode code segment (far return to the Linux `__USER32_CS` selector) when that segment exists.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]
#![allow(clippy::too_many_arguments)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use core::arch::asm;
use x86emu::alu::{self, BitOp, Shift, AF, CF, OF, PF, SF, STATUS, ZF};

const SIZES: [u32; 4] = [8, 16, 32, 64];

// ---------------------------------------------------------------------------------------------
// Input generation
// ---------------------------------------------------------------------------------------------

/// xorshift64* PRNG.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Random value with a random bit density, sometimes near a boundary.
    fn value(&mut self, size: u32) -> u64 {
        let m = alu::mask(size);
        let v = match self.next() % 6 {
            0 => self.next() & self.next(),
            1 => self.next() | self.next(),
            2 => alu::sign_bit(size)
                .wrapping_add(self.next() % 5)
                .wrapping_sub(2),
            3 => (self.next() % 9).wrapping_sub(4),
            _ => self.next(),
        };
        v & m
    }
}

/// Edge values for a size: 0, 1, -1, sign boundaries, nibble/byte boundaries.
fn edges(size: u32) -> Vec<u64> {
    let m = alu::mask(size);
    let s = alu::sign_bit(size);
    let mut v = vec![
        0,
        1,
        2,
        3,
        5,
        6,
        9,
        0x0f,
        0x10,
        0x55,
        0x7f,
        0x80,
        0x99,
        0xff,
        0x100,
        s - 1,
        s,
        s + 1,
        m - 1,
        m,
        m / 3,
        m / 3 * 2,
        s >> 1,
        (s >> 1) - 1,
    ];
    for x in &mut v {
        *x &= m;
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Initial flag states: both CF values, all/none, assorted mixes.
fn flag_states(rng: &mut Rng) -> Vec<u64> {
    let mut f = vec![0, STATUS, CF, AF | PF, ZF | SF | OF | CF, AF | CF];
    for _ in 0..2 {
        f.push(rng.next() & STATUS);
    }
    f
}

/// Edge pairs plus random pairs.
fn pairs(size: u32, rng: &mut Rng, random: usize) -> Vec<(u64, u64)> {
    let e = edges(size);
    let mut p = Vec::new();
    for &a in &e {
        for &b in &e {
            p.push((a, b));
        }
    }
    for _ in 0..random {
        p.push((rng.value(size), rng.value(size)));
    }
    p
}

/// Edge values plus random values.
fn values(size: u32, rng: &mut Rng, random: usize) -> Vec<u64> {
    let mut v = edges(size);
    for _ in 0..random {
        v.push(rng.value(size));
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

fn strict() -> bool {
    std::env::var_os("ALU_HOST_STRICT").is_some_and(|v| v != "0")
}

fn flag_names(f: u64) -> String {
    let mut s = String::new();
    for (bit, name) in [
        (CF, "CF"),
        (PF, "PF"),
        (AF, "AF"),
        (ZF, "ZF"),
        (SF, "SF"),
        (OF, "OF"),
    ] {
        if f & bit != 0 {
            s.push_str(name);
            s.push(' ');
        }
    }
    s.trim_end().to_string()
}

#[derive(Default)]
struct Report {
    checked: u64,
    /// key → (count, differing undefined flags, first sample).
    undefined: BTreeMap<String, (u64, u64, String)>,
}

impl Report {
    /// Compares one host execution with the emulation. `defined` is the set of status flags
    /// the SDM defines for this instruction and input.
    fn check(
        &mut self,
        key: &str,
        input: impl Fn() -> String,
        host_val: u64,
        emu_val: u64,
        host_flags: u64,
        emu_flags: u64,
        defined: u64,
    ) {
        self.checked += 1;
        let diff = (host_flags ^ emu_flags) & STATUS;
        if host_val != emu_val || diff & defined != 0 {
            panic!(
                "{key} {}: host value {host_val:#x} flags {:#x} [{}], emu value {emu_val:#x} \
                 flags {:#x} [{}], differing defined flags [{}]",
                input(),
                host_flags & STATUS,
                flag_names(host_flags),
                emu_flags & STATUS,
                flag_names(emu_flags),
                flag_names(diff & defined)
            );
        }
        if diff != 0 {
            let e = self
                .undefined
                .entry(key.to_string())
                .or_insert_with(|| (0, 0, String::new()));
            e.0 += 1;
            e.1 |= diff;
            if e.2.is_empty() {
                e.2 = format!(
                    "{} host [{}] emu [{}]",
                    input(),
                    flag_names(host_flags),
                    flag_names(emu_flags)
                );
            }
        }
    }

    fn finish(self, name: &str) {
        println!("{name}: {} cases compared with the host", self.checked);
        if self.undefined.is_empty() {
            return;
        }
        let mut s = String::new();
        for (k, (n, f, sample)) in &self.undefined {
            let _ = writeln!(
                s,
                "  {k}: {n} cases differ in undefined [{}], e.g. {sample}",
                flag_names(*f)
            );
        }
        if strict() {
            panic!("{name}: undefined flags differ from the host:\n{s}");
        } else {
            println!("{name}: (info) undefined flags that differ from the host:\n{s}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host execution
// ---------------------------------------------------------------------------------------------

/// RFLAGS to use as the base of every host execution: the current value without the status
/// flags, TF, DF and AC.
fn base_rflags() -> u64 {
    let f: u64;
    // SAFETY: PUSHFQ/POP only read RFLAGS through the stack, which asm! allows (no `nostack`).
    unsafe { asm!("pushfq", "pop {f}", f = out(reg) f) };
    f & !(STATUS | (1 << 8) | (1 << 10) | (1 << 18))
}

fn host_flags_in(flags: u64) -> u64 {
    base_rflags() | (flags & STATUS)
}

/// Two-operand ALU instruction `insn dst, src` on the host: (dst after, flags after).
macro_rules! host_binop {
    ($insn:literal) => {
        |size: u32, a: u64, b: u64, flags: u64| -> (u64, u64) {
            let mut a = a;
            let mut f = host_flags_in(flags);
            // SAFETY: register-only ALU instruction bracketed by POPFQ/PUSHFQ, which use the
            // stack as asm! permits; no memory is accessed and only status flags are set.
            unsafe {
                match size {
                    8 => asm!("push {f}", "popfq", concat!($insn, " {a:l}, {b:l}"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, b = in(reg) b),
                    16 => asm!("push {f}", "popfq", concat!($insn, " {a:x}, {b:x}"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, b = in(reg) b),
                    32 => asm!("push {f}", "popfq", concat!($insn, " {a:e}, {b:e}"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, b = in(reg) b),
                    _ => asm!("push {f}", "popfq", concat!($insn, " {a:r}, {b:r}"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, b = in(reg) b),
                }
            }
            (a & alu::mask(size), f & STATUS)
        }
    };
}

/// One-operand instruction `insn dst` on the host.
macro_rules! host_unop {
    ($insn:literal) => {
        |size: u32, a: u64, flags: u64| -> (u64, u64) {
            let mut a = a;
            let mut f = host_flags_in(flags);
            // SAFETY: register-only instruction bracketed by POPFQ/PUSHFQ (stack use allowed).
            unsafe {
                match size {
                    8 => asm!("push {f}", "popfq", concat!($insn, " {a:l}"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a),
                    16 => asm!("push {f}", "popfq", concat!($insn, " {a:x}"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a),
                    32 => asm!("push {f}", "popfq", concat!($insn, " {a:e}"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a),
                    _ => asm!("push {f}", "popfq", concat!($insn, " {a:r}"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a),
                }
            }
            (a & alu::mask(size), f & STATUS)
        }
    };
}

/// Shift/rotate `insn dst, cl` on the host.
macro_rules! host_shift {
    ($insn:literal) => {
        |size: u32, a: u64, count: u8, flags: u64| -> (u64, u64) {
            let mut a = a;
            let mut f = host_flags_in(flags);
            // SAFETY: register-only shift bracketed by POPFQ/PUSHFQ (stack use allowed).
            unsafe {
                match size {
                    8 => asm!("push {f}", "popfq", concat!($insn, " {a:l}, cl"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, in("cl") count),
                    16 => asm!("push {f}", "popfq", concat!($insn, " {a:x}, cl"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, in("cl") count),
                    32 => asm!("push {f}", "popfq", concat!($insn, " {a:e}, cl"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, in("cl") count),
                    _ => asm!("push {f}", "popfq", concat!($insn, " {a:r}, cl"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, in("cl") count),
                }
            }
            (a & alu::mask(size), f & STATUS)
        }
    };
}

/// Double shift `insn dst, src, cl` on the host (16/32/64).
macro_rules! host_dshift {
    ($insn:literal) => {
        |size: u32, a: u64, b: u64, count: u8, flags: u64| -> (u64, u64) {
            let mut a = a;
            let mut f = host_flags_in(flags);
            // SAFETY: register-only double shift bracketed by POPFQ/PUSHFQ (stack use allowed).
            unsafe {
                match size {
                    16 => asm!("push {f}", "popfq", concat!($insn, " {a:x}, {b:x}, cl"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, b = in(reg) b, in("cl") count),
                    32 => asm!("push {f}", "popfq", concat!($insn, " {a:e}, {b:e}, cl"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, b = in(reg) b, in("cl") count),
                    _ => asm!("push {f}", "popfq", concat!($insn, " {a:r}, {b:r}, cl"), "pushfq", "pop {f}",
                        f = inout(reg) f, a = inout(reg) a, b = in(reg) b, in("cl") count),
                }
            }
            (a & alu::mask(size), f & STATUS)
        }
    };
}

/// One-operand multiply `insn src` on the host: (low, high, flags).
macro_rules! host_mul {
    ($insn:literal) => {
        |size: u32, a: u64, b: u64, flags: u64| -> (u64, u64, u64) {
            let mut lo = a;
            let mut hi: u64 = 0;
            let mut f = host_flags_in(flags);
            // SAFETY: register-only multiply (RAX/RDX and one source register) bracketed by
            // POPFQ/PUSHFQ (stack use allowed).
            unsafe {
                match size {
                    8 => asm!("push {f}", "popfq", concat!($insn, " {b:l}"), "pushfq", "pop {f}",
                        f = inout(reg) f, b = in(reg) b, inout("rax") lo, inout("rdx") hi),
                    16 => asm!("push {f}", "popfq", concat!($insn, " {b:x}"), "pushfq", "pop {f}",
                        f = inout(reg) f, b = in(reg) b, inout("rax") lo, inout("rdx") hi),
                    32 => asm!("push {f}", "popfq", concat!($insn, " {b:e}"), "pushfq", "pop {f}",
                        f = inout(reg) f, b = in(reg) b, inout("rax") lo, inout("rdx") hi),
                    _ => asm!("push {f}", "popfq", concat!($insn, " {b:r}"), "pushfq", "pop {f}",
                        f = inout(reg) f, b = in(reg) b, inout("rax") lo, inout("rdx") hi),
                }
            }
            if size == 8 {
                (lo & 0xff, (lo >> 8) & 0xff, f & STATUS)
            } else {
                (lo & alu::mask(size), hi & alu::mask(size), f & STATUS)
            }
        }
    };
}

/// One-operand divide `insn src` on the host: (quotient, remainder). The caller makes sure
/// the division does not fault.
macro_rules! host_div {
    ($insn:literal) => {
        |size: u32, high: u64, low: u64, d: u64| -> (u64, u64) {
            let m = alu::mask(size);
            let mut lo = if size == 8 { (high & 0xff) << 8 | (low & 0xff) } else { low };
            let mut hi = high;
            // SAFETY: the caller checked (independently of `alu`) that the divisor is non-zero
            // and the quotient fits, so no #DE; register-only instruction.
            unsafe {
                match size {
                    8 => asm!(concat!($insn, " {d:l}"), d = in(reg) d, inout("rax") lo, inout("rdx") hi),
                    16 => asm!(concat!($insn, " {d:x}"), d = in(reg) d, inout("rax") lo, inout("rdx") hi),
                    32 => asm!(concat!($insn, " {d:e}"), d = in(reg) d, inout("rax") lo, inout("rdx") hi),
                    _ => asm!(concat!($insn, " {d:r}"), d = in(reg) d, inout("rax") lo, inout("rdx") hi),
                }
            }
            if size == 8 {
                (lo & 0xff, (lo >> 8) & 0xff)
            } else {
                (lo & m, hi & m)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Arithmetic and logic
// ---------------------------------------------------------------------------------------------

fn run_binop(
    name: &str,
    host: impl Fn(u32, u64, u64, u64) -> (u64, u64),
    emu: impl Fn(u32, u64, u64, u64) -> (u64, u64),
    defined: u64,
) {
    let mut rng = Rng::new(0x1234_5678 ^ name.len() as u64);
    let mut rep = Report::default();
    for size in SIZES {
        let key = format!("{name}{size}");
        let flags = flag_states(&mut rng);
        for (a, b) in pairs(size, &mut rng, 3000) {
            for &f in &flags {
                let (hv, hf) = host(size, a, b, f);
                let (ev, ef) = emu(size, a, b, f);
                rep.check(
                    &key,
                    || format!("a={a:#x} b={b:#x} flags_in=[{}]", flag_names(f)),
                    hv,
                    ev,
                    hf,
                    ef,
                    defined,
                );
            }
        }
    }
    rep.finish(name);
}

#[test]
fn add_adc() {
    run_binop(
        "add",
        host_binop!("add"),
        |s, a, b, _| alu::add(s, a, b, false),
        STATUS,
    );
    run_binop(
        "adc",
        host_binop!("adc"),
        |s, a, b, f| alu::add(s, a, b, f & CF != 0),
        STATUS,
    );
}

#[test]
fn sub_sbb_cmp() {
    run_binop(
        "sub",
        host_binop!("sub"),
        |s, a, b, _| alu::sub(s, a, b, false),
        STATUS,
    );
    run_binop(
        "sbb",
        host_binop!("sbb"),
        |s, a, b, f| alu::sub(s, a, b, f & CF != 0),
        STATUS,
    );
    // CMP leaves the destination alone.
    run_binop(
        "cmp",
        host_binop!("cmp"),
        |s, a, b, _| (a, alu::sub(s, a, b, false).1),
        STATUS,
    );
}

#[test]
fn and_or_xor_test() {
    // AF is undefined after logic instructions.
    let d = STATUS & !AF;
    run_binop(
        "and",
        host_binop!("and"),
        |s, a, b, _| (a & b, alu::logic(s, a & b)),
        d,
    );
    run_binop(
        "or",
        host_binop!("or"),
        |s, a, b, _| (a | b, alu::logic(s, a | b)),
        d,
    );
    run_binop(
        "xor",
        host_binop!("xor"),
        |s, a, b, _| (a ^ b, alu::logic(s, a ^ b)),
        d,
    );
    run_binop(
        "test",
        host_binop!("test"),
        |s, a, b, _| (a, alu::logic(s, a & b)),
        d,
    );
}

fn run_unop(
    name: &str,
    host: impl Fn(u32, u64, u64) -> (u64, u64),
    emu: impl Fn(u32, u64, u64) -> (u64, u64),
    defined: u64,
) {
    let mut rng = Rng::new(0xabcdef ^ name.len() as u64);
    let mut rep = Report::default();
    for size in SIZES {
        let key = format!("{name}{size}");
        let flags = flag_states(&mut rng);
        for a in values(size, &mut rng, 3000) {
            for &f in &flags {
                let (hv, hf) = host(size, a, f);
                let (ev, ef) = emu(size, a, f);
                rep.check(
                    &key,
                    || format!("a={a:#x} flags_in=[{}]", flag_names(f)),
                    hv,
                    ev,
                    hf,
                    ef,
                    defined,
                );
            }
        }
    }
    rep.finish(name);
}

#[test]
fn inc_dec_neg_not() {
    run_unop("inc", host_unop!("inc"), alu::inc, STATUS);
    run_unop("dec", host_unop!("dec"), alu::dec, STATUS);
    run_unop("neg", host_unop!("neg"), |s, a, _| alu::neg(s, a), STATUS);
    // NOT changes no flags.
    run_unop(
        "not",
        host_unop!("not"),
        |s, a, f| (!a & alu::mask(s), f),
        STATUS,
    );
}

// ---------------------------------------------------------------------------------------------
// Shifts and rotates
// ---------------------------------------------------------------------------------------------

/// Flags the SDM defines after a shift/rotate with raw count `count`.
fn shift_defined(op: Shift, size: u32, count: u8) -> u64 {
    let c = u32::from(count & if size == 64 { 0x3f } else { 0x1f });
    if c == 0 {
        return STATUS; // nothing changes
    }
    let of = if c == 1 { OF } else { 0 };
    match op {
        // SF/ZF/PF defined, AF undefined, CF undefined for count >= width on SHL/SHR.
        Shift::Shl | Shift::Sal | Shift::Shr => SF | ZF | PF | of | if c < size { CF } else { 0 },
        Shift::Sar => SF | ZF | PF | CF | of,
        // Rotates change only CF and OF; the rest are "not affected".
        Shift::Rol | Shift::Ror | Shift::Rcl | Shift::Rcr => (STATUS & !OF) | of,
    }
}

fn run_shift(op: Shift, host: impl Fn(u32, u64, u8, u64) -> (u64, u64)) {
    let name = format!("{op:?}").to_lowercase();
    let mut rng = Rng::new(0x5eed ^ op as u64);
    let mut rep = Report::default();
    for size in SIZES {
        let flags = [
            0,
            STATUS,
            CF,
            STATUS & !CF,
            rng.next() & STATUS,
            rng.next() & STATUS,
        ];
        let vals = values(size, &mut rng, 40);
        for count in (0..=70u8).chain([0x80, 0x81, 0xff, 0xc7]) {
            let key = format!(
                "{name}{size}/{}",
                match count & if size == 64 { 0x3f } else { 0x1f } {
                    0 => "0",
                    1 => "1",
                    c if u32::from(c) < size => "<w",
                    c if u32::from(c) == size => "=w",
                    _ => ">w",
                }
            );
            let defined = shift_defined(op, size, count);
            for &v in &vals {
                for &f in &flags {
                    let (hv, hf) = host(size, v, count, f);
                    let (ev, ef) = alu::shift(op, size, v, count, f);
                    rep.check(
                        &key,
                        || format!("v={v:#x} count={count} flags_in=[{}]", flag_names(f)),
                        hv,
                        ev,
                        hf,
                        ef,
                        defined,
                    );
                }
            }
        }
    }
    rep.finish(&name);
}

#[test]
fn shift_rol() {
    run_shift(Shift::Rol, host_shift!("rol"));
}
#[test]
fn shift_ror() {
    run_shift(Shift::Ror, host_shift!("ror"));
}
#[test]
fn shift_rcl() {
    run_shift(Shift::Rcl, host_shift!("rcl"));
}
#[test]
fn shift_rcr() {
    run_shift(Shift::Rcr, host_shift!("rcr"));
}
#[test]
fn shift_shl() {
    run_shift(Shift::Shl, host_shift!("shl"));
}
#[test]
fn shift_shr() {
    run_shift(Shift::Shr, host_shift!("shr"));
}
#[test]
fn shift_sal() {
    run_shift(Shift::Sal, host_shift!("sal"));
}
#[test]
fn shift_sar() {
    run_shift(Shift::Sar, host_shift!("sar"));
}

fn run_dshift(
    name: &str,
    host: impl Fn(u32, u64, u64, u8, u64) -> (u64, u64),
    emu: impl Fn(u32, u64, u64, u8, u64) -> (u64, u64),
) {
    let mut rng = Rng::new(0xd5 ^ name.len() as u64);
    let mut rep = Report::default();
    for size in [16u32, 32, 64] {
        let flags = [0, STATUS, rng.next() & STATUS, rng.next() & STATUS];
        let mut ps = Vec::new();
        let e = edges(size);
        for i in 0..e.len() {
            ps.push((e[i], e[e.len() - 1 - i]));
        }
        for _ in 0..60 {
            ps.push((rng.value(size), rng.value(size)));
        }
        // Counts within the width are defined; 16-bit counts 17..=31 are undefined on
        // hardware (value and flags) and are compared only in strict mode.
        for count in (0..=70u8).chain([0x80, 0xa1, 0xff]) {
            let c = u32::from(count & if size == 64 { 0x3f } else { 0x1f });
            let in_range = c <= size;
            let key = format!(
                "{name}{size}/{}",
                match c {
                    0 => "0",
                    1 => "1",
                    c if c <= size => "<=w",
                    _ => ">w",
                }
            );
            let defined = match c {
                0 => STATUS,
                1 => STATUS & !AF,
                _ => CF | SF | ZF | PF,
            };
            for &(a, b) in &ps {
                for &f in &flags {
                    let (hv, hf) = host(size, a, b, count, f);
                    let (ev, ef) = emu(size, a, b, count, f);
                    if in_range {
                        rep.check(
                            &key,
                            || {
                                format!(
                                    "dst={a:#x} src={b:#x} count={count} flags_in=[{}]",
                                    flag_names(f)
                                )
                            },
                            hv,
                            ev,
                            hf,
                            ef,
                            defined,
                        );
                    } else {
                        // Compare everything as "undefined": value mismatch folded into a flag
                        // key so that strict mode reports it.
                        let k = if hv != ev {
                            format!("{key} VALUE")
                        } else {
                            key.clone()
                        };
                        rep.check(
                            &k,
                            || {
                                format!(
                                    "dst={a:#x} src={b:#x} count={count} host={hv:#x} emu={ev:#x}"
                                )
                            },
                            0,
                            0,
                            hf | u64::from(hv != ev),
                            ef,
                            0,
                        );
                    }
                }
            }
        }
    }
    rep.finish(name);
}

#[test]
fn shld_shrd() {
    run_dshift("shld", host_dshift!("shld"), alu::shld);
    run_dshift("shrd", host_dshift!("shrd"), alu::shrd);
}

// ---------------------------------------------------------------------------------------------
// Multiply and divide
// ---------------------------------------------------------------------------------------------

fn run_mul(
    name: &str,
    host: impl Fn(u32, u64, u64, u64) -> (u64, u64, u64),
    emu: impl Fn(u32, u64, u64, u64) -> (u64, u64, u64),
) {
    let mut rng = Rng::new(0x77 ^ name.len() as u64);
    let mut rep = Report::default();
    for size in SIZES {
        let key = format!("{name}{size}");
        let flags = [0, STATUS, rng.next() & STATUS];
        for (a, b) in pairs(size, &mut rng, 3000) {
            for &f in &flags {
                let (hl, hh, hf) = host(size, a, b, f);
                let (el, eh, ef) = emu(size, a, b, f);
                // Value compared as low and high; SF/ZF/AF/PF are undefined.
                rep.check(
                    &key,
                    || format!("a={a:#x} b={b:#x} (low)"),
                    hl,
                    el,
                    hf,
                    ef,
                    CF | OF,
                );
                rep.check(
                    &key,
                    || format!("a={a:#x} b={b:#x} (high)"),
                    hh,
                    eh,
                    hf,
                    ef,
                    CF | OF,
                );
            }
        }
    }
    rep.finish(name);
}

#[test]
fn mul_imul() {
    run_mul("mul", host_mul!("mul"), alu::mul);
    run_mul("imul", host_mul!("imul"), alu::imul);
}

/// IMUL r, r/m (two-operand form): the low half and CF/OF of the one-operand form.
#[test]
fn imul_two_operand() {
    let host = host_binop!("imul");
    let mut rng = Rng::new(99);
    let mut rep = Report::default();
    for size in [16u32, 32, 64] {
        for (a, b) in pairs(size, &mut rng, 3000) {
            let (hv, hf) = host(size, a, b, 0);
            let (el, _, ef) = alu::imul(size, a, b, 0);
            rep.check(
                &format!("imul2/{size}"),
                || format!("a={a:#x} b={b:#x}"),
                hv,
                el,
                hf,
                ef,
                CF | OF,
            );
        }
    }
    rep.finish("imul2");
}

/// Independent reference for whether a division faults: (faults, signed).
fn div_faults(size: u32, high: u64, low: u64, d: u64, signed: bool) -> bool {
    let m = alu::mask(size);
    let (high, low, d) = (high & m, low & m, d & m);
    if d == 0 {
        return true;
    }
    let n = (high as u128) << size | low as u128;
    if !signed {
        return n / d as u128 > m as u128;
    }
    let sh = 128 - 2 * size;
    let n = ((n << sh) as i128) >> sh;
    let d = alu::sign_extend(d, size) as i64 as i128;
    if n == i128::MIN && d == -1 {
        return true;
    }
    let q = n / d;
    q < -(1i128 << (size - 1)) || q > (1i128 << (size - 1)) - 1
}

fn run_div(name: &str, signed: bool, host: impl Fn(u32, u64, u64, u64) -> (u64, u64)) {
    let emu = if signed { alu::idiv } else { alu::div };
    let mut rng = Rng::new(0xd1 ^ signed as u64);
    let mut rep = Report::default();
    let mut faults = 0u64;
    for size in SIZES {
        let m = alu::mask(size);
        let key = format!("{name}{size}");
        let mut cases = Vec::new();
        for &h in &edges(size) {
            for &l in &edges(size) {
                for &d in &edges(size) {
                    cases.push((h, l, d));
                }
            }
        }
        for _ in 0..20000 {
            let d = rng.value(size);
            // Bias toward non-faulting: a high half that is (sign-extended) small.
            let h = match rng.next() % 3 {
                0 => rng.value(size),
                1 => (rng.next() % d.max(1)) & m,
                _ => {
                    if rng.next() & 1 == 0 {
                        0
                    } else {
                        m
                    }
                }
            };
            cases.push((h, rng.value(size), d));
        }
        for (h, l, d) in cases {
            let fault = div_faults(size, h, l, d, signed);
            let e = emu(size, h, l, d);
            assert_eq!(
                e.is_none(),
                fault,
                "{key} high={h:#x} low={l:#x} d={d:#x}: emu {e:?}, fault expected {fault}"
            );
            if fault {
                faults += 1;
                continue;
            }
            let (q, r) = e.unwrap();
            let (hq, hr) = host(size, h, l, d);
            rep.check(
                &key,
                || format!("high={h:#x} low={l:#x} d={d:#x} (quotient)"),
                hq,
                q,
                0,
                0,
                0,
            );
            rep.check(
                &key,
                || format!("high={h:#x} low={l:#x} d={d:#x} (remainder)"),
                hr,
                r,
                0,
                0,
                0,
            );
        }
    }
    println!("{name}: {faults} faulting inputs checked against the reference only");
    rep.finish(name);
}

#[test]
fn div_idiv() {
    run_div("div", false, host_div!("div"));
    run_div("idiv", true, host_div!("idiv"));
}

// ---------------------------------------------------------------------------------------------
// Bit scans and counts, bit tests
// ---------------------------------------------------------------------------------------------

fn scan_values(size: u32, rng: &mut Rng) -> Vec<u64> {
    let mut v = values(size, rng, 500);
    for i in 0..size {
        v.push(1 << i);
        v.push((1u64 << i) | alu::sign_bit(size));
        v.push(alu::mask(size) << i & alu::mask(size));
    }
    v
}

macro_rules! host_scan {
    ($insn:literal) => {
        |size: u32, v: u64, flags: u64| -> (u64, u64) {
            let mut d: u64 = 0x1234_5678_9abc_def0;
            let mut f = host_flags_in(flags);
            // SAFETY: register-only instruction bracketed by POPFQ/PUSHFQ (stack use allowed).
            unsafe {
                match size {
                    16 => asm!("push {f}", "popfq", concat!($insn, " {d:x}, {v:x}"), "pushfq", "pop {f}",
                        f = inout(reg) f, d = inout(reg) d, v = in(reg) v),
                    32 => asm!("push {f}", "popfq", concat!($insn, " {d:e}, {v:e}"), "pushfq", "pop {f}",
                        f = inout(reg) f, d = inout(reg) d, v = in(reg) v),
                    _ => asm!("push {f}", "popfq", concat!($insn, " {d:r}, {v:r}"), "pushfq", "pop {f}",
                        f = inout(reg) f, d = inout(reg) d, v = in(reg) v),
                }
            }
            (d & alu::mask(size), f & STATUS)
        }
    };
}

fn run_scan(
    name: &str,
    host: impl Fn(u32, u64, u64) -> (u64, u64),
    emu: impl Fn(u32, u64, u64) -> (u64, u64),
    defined: u64,
) {
    let mut rng = Rng::new(0x5ca7 ^ name.len() as u64);
    let mut rep = Report::default();
    for size in [16u32, 32, 64] {
        let key = format!("{name}{size}");
        let flags = flag_states(&mut rng);
        for v in scan_values(size, &mut rng) {
            for &f in &flags {
                let (hv, hf) = host(size, v, f);
                let (ev, ef) = emu(size, v, f);
                rep.check(
                    &key,
                    || format!("v={v:#x} flags_in=[{}]", flag_names(f)),
                    hv,
                    ev,
                    hf,
                    ef,
                    defined,
                );
            }
        }
    }
    rep.finish(name);
}

#[test]
fn bsf_bsr() {
    // On a zero source the destination keeps its value (AMD documents this; Intel does it).
    let unchanged = 0x1234_5678_9abc_def0u64;
    run_scan(
        "bsf",
        host_scan!("bsf"),
        |s, v, f| {
            let (i, fl) = alu::bsf(s, v, f);
            (i.unwrap_or(unchanged) & alu::mask(s), fl)
        },
        ZF,
    );
    run_scan(
        "bsr",
        host_scan!("bsr"),
        |s, v, f| {
            let (i, fl) = alu::bsr(s, v, f);
            (i.unwrap_or(unchanged) & alu::mask(s), fl)
        },
        ZF,
    );
}

fn has_cpuinfo_flag(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("flags") && l.split_whitespace().any(|w| w == flag))
        })
        .unwrap_or(false)
}

#[test]
fn popcnt_lzcnt_tzcnt() {
    if has_cpuinfo_flag("popcnt") {
        run_scan(
            "popcnt",
            host_scan!("popcnt"),
            |s, v, _| alu::popcnt(s, v),
            STATUS,
        );
    } else {
        println!("host has no POPCNT; skipped");
    }
    if has_cpuinfo_flag("abm") {
        run_scan(
            "lzcnt",
            host_scan!("lzcnt"),
            |s, v, _| alu::lzcnt(s, v),
            CF | ZF,
        );
    } else {
        println!("host has no LZCNT; skipped");
    }
    if has_cpuinfo_flag("bmi1") {
        run_scan(
            "tzcnt",
            host_scan!("tzcnt"),
            |s, v, _| alu::tzcnt(s, v),
            CF | ZF,
        );
    } else {
        println!("host has no TZCNT; skipped");
    }
}

macro_rules! host_bt {
    ($insn:literal) => {
        |size: u32, v: u64, b: u64, flags: u64| -> (u64, u64) {
            let mut v = v;
            let mut f = host_flags_in(flags);
            // SAFETY: register-only bit test bracketed by POPFQ/PUSHFQ (stack use allowed).
            unsafe {
                match size {
                    16 => asm!("push {f}", "popfq", concat!($insn, " {v:x}, {b:x}"), "pushfq", "pop {f}",
                        f = inout(reg) f, v = inout(reg) v, b = in(reg) b),
                    32 => asm!("push {f}", "popfq", concat!($insn, " {v:e}, {b:e}"), "pushfq", "pop {f}",
                        f = inout(reg) f, v = inout(reg) v, b = in(reg) b),
                    _ => asm!("push {f}", "popfq", concat!($insn, " {v:r}, {b:r}"), "pushfq", "pop {f}",
                        f = inout(reg) f, v = inout(reg) v, b = in(reg) b),
                }
            }
            (v & alu::mask(size), f & STATUS)
        }
    };
}

fn run_bt(name: &str, op: BitOp, host: impl Fn(u32, u64, u64, u64) -> (u64, u64)) {
    let mut rng = Rng::new(0xb7 ^ op as u64);
    let mut rep = Report::default();
    for size in [16u32, 32, 64] {
        let key = format!("{name}{size}");
        let flags = flag_states(&mut rng);
        for v in values(size, &mut rng, 50) {
            for b in (0..size as u64 + 3).chain([rng.next() & 0xffff, rng.next()]) {
                for &f in &flags {
                    let (hv, hf) = host(size, v, b, f);
                    let (ev, ef) = alu::bit(op, v, (b % u64::from(size)) as u32, f);
                    // ZF is unaffected; OF/SF/AF/PF undefined.
                    rep.check(
                        &key,
                        || format!("v={v:#x} bit={b} flags_in=[{}]", flag_names(f)),
                        hv,
                        ev & alu::mask(size),
                        hf,
                        ef,
                        CF | ZF,
                    );
                }
            }
        }
    }
    rep.finish(name);
}

#[test]
fn bt_bts_btr_btc() {
    run_bt("bt", BitOp::Test, host_bt!("bt"));
    run_bt("bts", BitOp::Set, host_bt!("bts"));
    run_bt("btr", BitOp::Reset, host_bt!("btr"));
    run_bt("btc", BitOp::Complement, host_bt!("btc"));
}

#[test]
fn host_vendor() {
    let vendor = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("vendor_id"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!("host: {vendor}");
}

// ---------------------------------------------------------------------------------------------
// BCD instructions in compatibility mode
// ---------------------------------------------------------------------------------------------

// A small position-independent thunk, copied to memory below 4 GiB at run time. Called (64-bit
// System V) with rdi = address of a parameter block below 4 GiB:
//   [0] u32 EAX in, [4] u32 EFLAGS in, [8] u32 EAX out, [12] u32 EFLAGS out,
//   [16] u64 saved RSP, [24] u32 top of a stack below 4 GiB.
// It far-returns to the 32-bit user code segment 0x23, runs the 2-byte instruction in the
// slot with EAX and EFLAGS from the block, stores them back, and far-returns to 0x33.
core::arch::global_asm!(
    ".pushsection .text.alu_compat, \"ax\", @progbits",
    ".globl alu_compat_start",
    ".globl alu_compat_slot",
    ".globl alu_compat_end",
    ".code64",
    "alu_compat_start:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rdi + 16], rsp",
    "mov esp, dword ptr [rdi + 24]",
    "lea rcx, [rip + alu_compat_back]",
    "lea rax, [rip + alu_compat_32]",
    "push 0x23",
    "push rax",
    ".byte 0x48, 0xcb", // retfq
    ".code32",
    "alu_compat_32:",
    "push dword ptr ss:[edi + 4]",
    "popfd",
    "mov eax, dword ptr ss:[edi]",
    "alu_compat_slot:",
    "nop",
    "nop",
    "pushfd",
    "pop dword ptr ss:[edi + 12]",
    "mov dword ptr ss:[edi + 8], eax",
    "push 0x33",
    "push ecx",
    ".byte 0xcb", // retf (32-bit)
    ".code64",
    "alu_compat_back:",
    "mov edi, edi",
    "mov rsp, [rdi + 16]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    "alu_compat_end:",
    ".popsection",
);

extern "C" {
    static alu_compat_start: u8;
    static alu_compat_slot: u8;
    static alu_compat_end: u8;
}

/// The thunk, copied below 4 GiB, with its parameter block and stack.
struct Compat {
    base: *mut u8,
}

const PARAMS: usize = 0x1000;
const STACK_TOP: usize = 0x3000;

impl Compat {
    /// Sets up the thunk if the kernel has a 32-bit user code segment at 0x23 and gives
    /// memory below 2 GiB; None (test skipped) otherwise.
    fn new() -> Option<Compat> {
        let ok: u8;
        let ar: u32;
        // SAFETY: LAR only reads the descriptor's access rights (ZF=0 if not accessible).
        unsafe {
            asm!("lar {ar:e}, {sel:e}", "setz {ok}", sel = in(reg) 0x23u32, ar = lateout(reg) ar, ok = out(reg_byte) ok)
        };
        // Present, code, D=1 (32-bit), L=0.
        if ok == 0
            || ar & (1 << 15) == 0
            || ar & (1 << 11) == 0
            || ar & (1 << 22) == 0
            || ar & (1 << 21) != 0
        {
            println!("no 32-bit user code segment at 0x23 (lar ok={ok} ar={ar:#x})");
            return None;
        }
        let ret: i64;
        // SAFETY: mmap(NULL, 0x3000, RWX, MAP_PRIVATE|MAP_ANONYMOUS|MAP_32BIT, -1, 0) creates
        // a new private mapping and touches no existing memory.
        unsafe {
            asm!("syscall", inlateout("rax") 9i64 => ret, in("rdi") 0u64, in("rsi") STACK_TOP as u64,
                in("rdx") 7u64, in("r10") 0x62u64, in("r8") -1i64, in("r9") 0u64,
                lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        if !(0..=0x7fff_0000).contains(&ret) {
            println!("mmap below 2 GiB failed: {ret}");
            return None;
        }
        let base = ret as *mut u8;
        // SAFETY: the three symbols delimit the thunk in this binary's text; the copy fits in
        // the first page of the fresh mapping.
        unsafe {
            let start = &raw const alu_compat_start;
            let end = &raw const alu_compat_end;
            let len = end as usize - start as usize;
            assert!(len < PARAMS);
            core::ptr::copy_nonoverlapping(start, base, len);
            (base.add(PARAMS + 24) as *mut u32).write_unaligned(base as u32 + STACK_TOP as u32);
        }
        Some(Compat { base })
    }

    /// Runs the 2-byte instruction `insn` with EAX and the status flags given; returns (EAX,
    /// status flags) after it.
    fn run(&self, insn: [u8; 2], eax: u32, flags: u64) -> (u32, u64) {
        let fl = host_flags_in(flags) as u32;
        // SAFETY: the mapping is ours (RWX, below 2 GiB) and holds the copied thunk; the slot
        // offset is inside it; the thunk preserves callee-saved registers and returns normally
        // (the instructions run are DAA/DAS/AAA/AAS/AAM/AAD with a non-zero AAM base).
        unsafe {
            let slot =
                (&raw const alu_compat_slot) as usize - (&raw const alu_compat_start) as usize;
            self.base
                .add(slot)
                .copy_from_nonoverlapping(insn.as_ptr(), 2);
            let p = self.base.add(PARAMS);
            (p as *mut u32).write_volatile(eax);
            (p.add(4) as *mut u32).write_volatile(fl);
            let f: extern "C" fn(u64) = core::mem::transmute(self.base as *const ());
            f(p as u64);
            let out = (p.add(8) as *const u32).read_volatile();
            let out_fl = (p.add(12) as *const u32).read_volatile();
            (out, u64::from(out_fl) & STATUS)
        }
    }
}

impl Drop for Compat {
    fn drop(&mut self) {
        // SAFETY: munmap of the mapping created in `new`, which nothing references any more.
        unsafe {
            asm!("syscall", inlateout("rax") 11i64 => _, in("rdi") self.base as u64, in("rsi") STACK_TOP as u64,
                lateout("rcx") _, lateout("r11") _, options(nostack));
        }
    }
}

/// All 64 combinations of the six status flags.
fn all_flag_states() -> Vec<u64> {
    let bits = [CF, PF, AF, ZF, SF, OF];
    (0..64u32)
        .map(|n| {
            bits.iter()
                .enumerate()
                .filter(|(i, _)| n & (1 << i) != 0)
                .map(|(_, b)| b)
                .sum()
        })
        .collect()
}

#[test]
fn bcd_compat_mode() {
    let Some(c) = Compat::new() else {
        println!("BCD host comparison skipped (only the unit tests cover DAA/DAS/AAA/AAS/AAM/AAD)");
        return;
    };
    let mut rng = Rng::new(0xbcd);
    let flags = all_flag_states();
    let upper = 0xdead_0000u32; // EAX bits 16..31 must survive
    let mut rep = Report::default();
    for al in 0..=255u8 {
        for &f in &flags {
            let (hv, hf) = c.run([0x27, 0x90], upper | 0x5a00 | u32::from(al), f);
            let (ev, ef) = alu::daa(al, f);
            rep.check(
                "daa",
                || format!("al={al:#x} flags_in=[{}]", flag_names(f)),
                u64::from(hv),
                u64::from(upper | 0x5a00 | u32::from(ev)),
                hf,
                ef,
                STATUS & !OF,
            );
            let (hv, hf) = c.run([0x2f, 0x90], upper | 0x5a00 | u32::from(al), f);
            let (ev, ef) = alu::das(al, f);
            rep.check(
                "das",
                || format!("al={al:#x} flags_in=[{}]", flag_names(f)),
                u64::from(hv),
                u64::from(upper | 0x5a00 | u32::from(ev)),
                hf,
                ef,
                STATUS & !OF,
            );
        }
        for ah in [0u8, 1, 0x09, 0x7f, 0x80, 0xfe, 0xff, rng.next() as u8] {
            let ax = u16::from(ah) << 8 | u16::from(al);
            for &f in &flags {
                let (hv, hf) = c.run([0x37, 0x90], upper | u32::from(ax), f);
                let (ev, ef) = alu::aaa(ax, f);
                rep.check(
                    "aaa",
                    || format!("ax={ax:#x} flags_in=[{}]", flag_names(f)),
                    u64::from(hv),
                    u64::from(upper | u32::from(ev)),
                    hf,
                    ef,
                    CF | AF,
                );
                let (hv, hf) = c.run([0x3f, 0x90], upper | u32::from(ax), f);
                let (ev, ef) = alu::aas(ax, f);
                rep.check(
                    "aas",
                    || format!("ax={ax:#x} flags_in=[{}]", flag_names(f)),
                    u64::from(hv),
                    u64::from(upper | u32::from(ev)),
                    hf,
                    ef,
                    CF | AF,
                );
            }
        }
        for base in 1..=255u8 {
            for f in [0, STATUS, rng.next() & STATUS] {
                let ax = (rng.next() as u16 & 0xff00) | u16::from(al);
                let (hv, hf) = c.run([0xd4, base], upper | u32::from(ax), f);
                let (ev, ef) = alu::aam(al, base, f).expect("non-zero base");
                rep.check(
                    "aam",
                    || format!("ax={ax:#x} base={base} flags_in=[{}]", flag_names(f)),
                    u64::from(hv),
                    u64::from(upper | u32::from(ev)),
                    hf,
                    ef,
                    SF | ZF | PF,
                );
            }
        }
        for ah in 0..=255u8 {
            let ax = u16::from(ah) << 8 | u16::from(al);
            for base in [10u8, 0, 1, 2, 16, 0x7f, 0xff, rng.next() as u8] {
                let f = rng.next() & STATUS;
                let (hv, hf) = c.run([0xd5, base], upper | u32::from(ax), f);
                let (ev, ef) = alu::aad(ax, base, f);
                rep.check(
                    "aad",
                    || format!("ax={ax:#x} base={base} flags_in=[{}]", flag_names(f)),
                    u64::from(hv),
                    u64::from(upper | u32::from(ev)),
                    hf,
                    ef,
                    SF | ZF | PF,
                );
            }
        }
    }
    rep.finish("bcd");
}
