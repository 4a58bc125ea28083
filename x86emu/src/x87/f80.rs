//! 80-bit extended-precision soft float: exact IEEE-style arithmetic with the x87 rounding
//! control (RC), precision control (PC), exception flags and masked responses.
//!
//! Internally a finite nonzero value is `(sign, e, m)` with `m` normalized (top bit set) and
//! the value `1.f × 2^e`; wide intermediates are `u128` with the value `m × 2^(e − 127)` and a
//! sticky bit folded into bit 0.

use std::cmp::Ordering;

/// Invalid operation.
pub const IE: u16 = 1;
/// Denormal operand.
pub const DE: u16 = 2;
/// Zero divide.
pub const ZE: u16 = 4;
/// Overflow.
pub const OE: u16 = 8;
/// Underflow.
pub const UE: u16 = 0x10;
/// Precision (inexact).
pub const PE: u16 = 0x20;

/// Exponent bias adjustment applied to results of unmasked overflow/underflow.
const WRAP: i32 = 24576;

/// An 80-bit extended-precision value as stored: sign and exponent, explicit-integer-bit
/// significand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct F80 {
    /// Sign (bit 15) and biased exponent (bits 0..14).
    pub se: u16,
    /// Significand with the explicit integer bit at bit 63.
    pub sig: u64,
}

/// The class of an 80-bit value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// ±0.
    Zero,
    /// Denormal or pseudo-denormal.
    Denormal,
    /// Normal finite.
    Normal,
    /// ±∞.
    Inf,
    /// Quiet NaN.
    QNaN,
    /// Signalling NaN.
    SNaN,
    /// Pseudo-NaN, pseudo-infinity, unnormal: invalid operands on the 387 and later.
    Unsupported,
}

impl F80 {
    /// The x87 "real indefinite" QNaN.
    pub const INDEFINITE: F80 = F80 {
        se: 0xffff,
        sig: 0xc000_0000_0000_0000,
    };
    /// +1.0.
    pub const ONE: F80 = F80 {
        se: 0x3fff,
        sig: 1 << 63,
    };

    /// Builds from sign, biased exponent and significand.
    pub fn new(sign: bool, exp: u16, sig: u64) -> Self {
        F80 {
            se: (u16::from(sign) << 15) | (exp & 0x7fff),
            sig,
        }
    }
    /// Signed zero.
    pub fn zero(sign: bool) -> Self {
        Self::new(sign, 0, 0)
    }
    /// Signed infinity.
    pub fn inf(sign: bool) -> Self {
        Self::new(sign, 0x7fff, 1 << 63)
    }
    /// From the 10 stored bytes (little-endian).
    pub fn from_bytes(b: &[u8]) -> Self {
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[..8]);
        F80 {
            sig: u64::from_le_bytes(s),
            se: u16::from_le_bytes([b[8], b[9]]),
        }
    }
    /// The 10 stored bytes.
    pub fn to_bytes(self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&self.sig.to_le_bytes());
        b[8..].copy_from_slice(&self.se.to_le_bytes());
        b
    }
    /// Sign bit.
    pub fn sign(self) -> bool {
        self.se & 0x8000 != 0
    }
    /// Biased exponent.
    pub fn exp(self) -> u16 {
        self.se & 0x7fff
    }
    /// The same value with the sign replaced.
    pub fn with_sign(self, sign: bool) -> Self {
        F80 {
            se: (self.se & 0x7fff) | (u16::from(sign) << 15),
            sig: self.sig,
        }
    }
    /// Classifies the value.
    pub fn kind(self) -> Kind {
        let e = self.exp();
        let int = self.sig >> 63 != 0;
        match e {
            0 if self.sig == 0 => Kind::Zero,
            0 => Kind::Denormal,
            0x7fff if !int => Kind::Unsupported,
            0x7fff if self.sig << 1 == 0 => Kind::Inf,
            0x7fff if self.sig & (1 << 62) != 0 => Kind::QNaN,
            0x7fff => Kind::SNaN,
            _ if !int => Kind::Unsupported,
            _ => Kind::Normal,
        }
    }
    /// NaN (quiet or signalling).
    pub fn is_nan(self) -> bool {
        matches!(self.kind(), Kind::QNaN | Kind::SNaN)
    }
    /// The quiet version of a NaN.
    pub fn quiet(self) -> Self {
        F80 {
            se: self.se,
            sig: self.sig | (1 << 62),
        }
    }
    /// Unpacks a finite nonzero (normal or denormal) value: (sign, unbiased exponent,
    /// normalized significand).
    pub fn unpack(self) -> (bool, i32, u64) {
        let e = i32::from(self.exp());
        if e == 0 {
            let lz = self.sig.leading_zeros() as i32;
            (self.sign(), -16382 - lz, self.sig << lz)
        } else {
            (self.sign(), e - 16383, self.sig)
        }
    }
}

/// Rounding and exception context (from the control word).
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// Rounding control: 0 nearest, 1 down, 2 up, 3 toward zero.
    pub rc: u8,
    /// Significand precision in bits for the PC-controlled operations (24, 53, 64).
    pub pc: u32,
    /// Exception masks (FCW bits 0..5).
    pub mask: u16,
    /// Exceptions raised.
    pub flags: u16,
    /// Result was rounded up in magnitude (becomes C1).
    pub c1: bool,
}

impl Ctx {
    /// Context from a control word.
    pub fn new(fcw: u16) -> Self {
        Ctx {
            rc: ((fcw >> 10) & 3) as u8,
            pc: match (fcw >> 8) & 3 {
                0 => 24,
                2 => 53,
                _ => 64,
            },
            mask: fcw & 0x3f,
            flags: 0,
            c1: false,
        }
    }
    /// True when exception `e` is unmasked.
    pub fn unmasked(&self, e: u16) -> bool {
        self.mask & e == 0
    }
    fn invalid(&mut self) -> F80 {
        self.flags |= IE;
        F80::INDEFINITE
    }
}

/// A binary interchange format's parameters.
#[derive(Clone, Copy, Debug)]
pub struct Fmt {
    /// Significand bits including the integer bit.
    pub prec: u32,
    /// Exponent bias.
    pub bias: i32,
    /// All-ones exponent field.
    pub maxf: i32,
}

/// Double extended.
pub const EXT: Fmt = Fmt {
    prec: 64,
    bias: 16383,
    maxf: 0x7fff,
};
/// Double.
pub const DBL: Fmt = Fmt {
    prec: 53,
    bias: 1023,
    maxf: 0x7ff,
};
/// Single.
pub const SGL: Fmt = Fmt {
    prec: 24,
    bias: 127,
    maxf: 0xff,
};

/// Shifts `m` right by `sh` bits, rounding per `rc`: (result, inexact, incremented).
fn round_shift(m: u128, sh: u32, rc: u8, sign: bool) -> (u128, bool, bool) {
    if sh == 0 {
        return (m, false, false);
    }
    let (q, round, sticky) = if sh < 128 {
        let rem = m & ((1u128 << sh) - 1);
        let half = 1u128 << (sh - 1);
        (m >> sh, rem & half != 0, rem & (half - 1) != 0)
    } else if sh == 128 {
        (0, m >> 127 != 0, m << 1 != 0)
    } else {
        (0, false, m != 0)
    };
    let inexact = round || sticky;
    let inc = match rc {
        0 => round && (sticky || q & 1 == 1),
        1 => inexact && sign,
        2 => inexact && !sign,
        _ => false,
    };
    (q + u128::from(inc), inexact, inc)
}

/// Rounds `±m × 2^(e − 127)` (`m ≠ 0`) to `prec` significant bits in format `fmt`, with the
/// masked (or, when `wrap`, the unmasked-bias-adjusted) overflow/underflow responses.
/// Returns the biased exponent field and the significand with the integer bit at
/// `fmt.prec − 1` (clear for denormals; set for infinity).
pub fn round_fmt(
    ctx: &mut Ctx,
    sign: bool,
    e: i32,
    m: u128,
    prec: u32,
    fmt: &Fmt,
    wrap: bool,
) -> (i32, u64) {
    debug_assert!(m != 0);
    let lz = m.leading_zeros();
    let m = m << lz;
    let e = e - lz as i32;
    let sh = 128 - prec;
    let (r, inexact, up) = round_shift(m, sh, ctx.rc, sign);
    let (r, e1) = if r >> prec != 0 {
        (r >> 1, e + 1)
    } else {
        (r, e)
    };
    let out = |r: u128| (r as u64) << (fmt.prec - prec);
    let biased = e1 + fmt.bias;
    if biased >= fmt.maxf {
        if wrap && ctx.unmasked(OE) {
            ctx.flags |= OE;
            if inexact {
                ctx.flags |= PE;
                ctx.c1 = up;
            }
            return (biased - WRAP, out(r));
        }
        ctx.flags |= OE | PE;
        let to_inf = match ctx.rc {
            0 => true,
            1 => sign,
            2 => !sign,
            _ => false,
        };
        ctx.c1 = to_inf;
        if to_inf {
            return (fmt.maxf, 1 << (fmt.prec - 1));
        }
        return (fmt.maxf - 1, out((1u128 << prec) - 1));
    }
    if biased < 1 {
        if wrap && ctx.unmasked(UE) {
            ctx.flags |= UE;
            if inexact {
                ctx.flags |= PE;
                ctx.c1 = up;
            }
            return (biased + WRAP, out(r));
        }
        // Denormalize: the significand unit is 2^(emin − (prec − 1)).
        let emin = 1 - fmt.bias;
        let shift_den = (128 - fmt.prec as i64) + i64::from(emin) - i64::from(e);
        // Precision control limits the stored significand field itself: a denormal keeps
        // only its top `prec` significand bits.
        let extra = fmt.prec - prec;
        let s = shift_den.min(200) as u32 + extra;
        let (r2, inexact2, up2) = round_shift(m, s, ctx.rc, sign);
        let sig = (r2 << extra) as u64;
        if inexact2 {
            ctx.flags |= UE | PE;
            ctx.c1 = up2;
        }
        let field = i32::from(sig >> (fmt.prec - 1) != 0);
        return (field, sig);
    }
    if inexact {
        ctx.flags |= PE;
        ctx.c1 = up;
    }
    (biased, out(r))
}

/// Rounds to an 80-bit value at `prec` bits.
pub fn round_pack(ctx: &mut Ctx, sign: bool, e: i32, m: u128, prec: u32) -> F80 {
    let (f, s) = round_fmt(ctx, sign, e, m, prec, &EXT, true);
    F80::new(sign, f as u16, s)
}

/// Picks the NaN result of a two-operand operation (x87 rules) and raises IE for SNaNs.
fn propagate(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    let (ka, kb) = (a.kind(), b.kind());
    let (an, bn) = (a.is_nan(), b.is_nan());
    if ka == Kind::SNaN || kb == Kind::SNaN {
        ctx.flags |= IE;
    }
    let (qa, qb) = (a.quiet(), b.quiet());
    if an && bn {
        if ka != kb {
            // One quiet, one signalling: the quiet one.
            return if ka == Kind::QNaN { qa } else { qb };
        }
        return match qa.sig.cmp(&qb.sig) {
            Ordering::Less => qb,
            Ordering::Greater => qa,
            Ordering::Equal => {
                if qa.se < qb.se {
                    qa
                } else {
                    qb
                }
            }
        };
    }
    if an {
        qa
    } else {
        qb
    }
}

/// Common operand checks for two-operand arithmetic: unsupported formats and NaNs give the
/// result; denormal operands raise DE.
fn check2(ctx: &mut Ctx, a: F80, b: F80) -> Option<F80> {
    let (ka, kb) = (a.kind(), b.kind());
    if ka == Kind::Unsupported || kb == Kind::Unsupported {
        return Some(ctx.invalid());
    }
    if a.is_nan() || b.is_nan() {
        return Some(propagate(ctx, a, b));
    }
    if ka == Kind::Denormal || kb == Kind::Denormal {
        ctx.flags |= DE;
    }
    None
}

/// Checks a single operand: NaN/unsupported give the result; denormals raise DE.
pub fn check1(ctx: &mut Ctx, a: F80) -> Option<F80> {
    match a.kind() {
        Kind::Unsupported => Some(ctx.invalid()),
        Kind::SNaN => {
            ctx.flags |= IE;
            Some(a.quiet())
        }
        Kind::QNaN => Some(a),
        Kind::Denormal => {
            ctx.flags |= DE;
            None
        }
        _ => None,
    }
}

/// Rounds a finite nonzero value to `prec` bits (used for x + 0 and similar).
fn reround(ctx: &mut Ctx, x: F80, sign: bool, prec: u32) -> F80 {
    let (_, e, m) = x.unpack();
    round_pack(ctx, sign, e, u128::from(m) << 64, prec)
}

/// `a + b` (or `a − b` when `sub`), rounded to the context precision.
pub fn add(ctx: &mut Ctx, a: F80, b: F80, sub: bool) -> F80 {
    if let Some(r) = check2(ctx, a, b) {
        return r;
    }
    let sa = a.sign();
    let sb = b.sign() ^ sub;
    let (ka, kb) = (a.kind(), b.kind());
    match (ka, kb) {
        (Kind::Inf, Kind::Inf) => {
            return if sa == sb {
                F80::inf(sa)
            } else {
                ctx.invalid()
            }
        }
        (Kind::Inf, _) => return F80::inf(sa),
        (_, Kind::Inf) => return F80::inf(sb),
        (Kind::Zero, Kind::Zero) => {
            return F80::zero(if sa == sb { sa } else { ctx.rc == 1 });
        }
        (Kind::Zero, _) => return reround(ctx, b, sb, ctx.pc),
        (_, Kind::Zero) => return reround(ctx, a, sa, ctx.pc),
        _ => {}
    }
    let (_, mut ea, mut ma) = a.unpack();
    let (_, mut eb, mut mb) = b.unpack();
    let (mut sa, mut sb) = (sa, sb);
    if (eb, mb) > (ea, ma) {
        std::mem::swap(&mut ea, &mut eb);
        std::mem::swap(&mut ma, &mut mb);
        std::mem::swap(&mut sa, &mut sb);
    }
    let d = (ea - eb) as u32;
    let big = u128::from(ma) << 63;
    let small = u128::from(mb) << 63;
    let small = if d >= 127 {
        1
    } else {
        let lost = small & ((1u128 << d) - 1);
        (small >> d) | u128::from(lost != 0)
    };
    let s = if sa == sb { big + small } else { big - small };
    if s == 0 {
        return F80::zero(ctx.rc == 1);
    }
    round_pack(ctx, sa, ea + 1, s, ctx.pc)
}

/// `a × b`.
pub fn mul(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    if let Some(r) = check2(ctx, a, b) {
        return r;
    }
    let sign = a.sign() ^ b.sign();
    match (a.kind(), b.kind()) {
        (Kind::Inf, Kind::Zero) | (Kind::Zero, Kind::Inf) => return ctx.invalid(),
        (Kind::Inf, _) | (_, Kind::Inf) => return F80::inf(sign),
        (Kind::Zero, _) | (_, Kind::Zero) => return F80::zero(sign),
        _ => {}
    }
    let (_, ea, ma) = a.unpack();
    let (_, eb, mb) = b.unpack();
    round_pack(
        ctx,
        sign,
        ea + eb + 1,
        u128::from(ma) * u128::from(mb),
        ctx.pc,
    )
}

/// `a ÷ b`.
pub fn div(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    if b.kind() == Kind::Zero && matches!(a.kind(), Kind::Normal | Kind::Denormal) {
        ctx.flags |= ZE;
        return F80::inf(a.sign() ^ b.sign());
    }
    if let Some(r) = check2(ctx, a, b) {
        return r;
    }
    let sign = a.sign() ^ b.sign();
    match (a.kind(), b.kind()) {
        (Kind::Inf, Kind::Inf) | (Kind::Zero, Kind::Zero) => return ctx.invalid(),
        (Kind::Inf, _) => return F80::inf(sign),
        (_, Kind::Inf) => return F80::zero(sign),
        (Kind::Zero, _) => return F80::zero(sign),
        (_, Kind::Zero) => {
            ctx.flags |= ZE;
            return F80::inf(sign);
        }
        _ => {}
    }
    let (_, ea, ma) = a.unpack();
    let (_, eb, mb) = b.unpack();
    let mb128 = u128::from(mb);
    let n1 = u128::from(ma) << 63;
    let q1 = n1 / mb128;
    let r1 = n1 % mb128;
    let n2 = r1 << 64;
    let q2 = n2 / mb128;
    let r2 = n2 % mb128;
    let q = (q1 << 64) | q2 | u128::from(r2 != 0);
    round_pack(ctx, sign, ea - eb, q, ctx.pc)
}

/// Integer square root of a u128: (floor(sqrt(n)), n − floor²).
fn isqrt(n: u128) -> (u128, u128) {
    let mut x: u128 = 0;
    let mut rem = n;
    let mut bit: u128 = 1 << 126;
    while bit > n {
        bit >>= 2;
    }
    while bit != 0 {
        if rem >= x + bit {
            rem -= x + bit;
            x = (x >> 1) + bit;
        } else {
            x >>= 1;
        }
        bit >>= 2;
    }
    (x, rem)
}

/// √a.
pub fn sqrt(ctx: &mut Ctx, a: F80) -> F80 {
    if a.sign() && matches!(a.kind(), Kind::Normal | Kind::Denormal) {
        return ctx.invalid();
    }
    if let Some(r) = check1(ctx, a) {
        return r;
    }
    match a.kind() {
        Kind::Zero => return a,
        Kind::Inf if !a.sign() => return a,
        _ if a.sign() => return ctx.invalid(),
        _ => {}
    }
    let (_, e, m) = a.unpack();
    // value = m × 2^(e − 63); make the power of two even.
    let (n, k) = if (e - 127) % 2 == 0 {
        (u128::from(m) << 64, (e - 127) / 2)
    } else {
        (u128::from(m) << 63, (e - 126) / 2)
    };
    let (r, rem) = isqrt(n);
    let mo = (r << 64) | (u128::from(rem > r) << 63) | u128::from(rem != 0);
    round_pack(ctx, false, k + 63, mo, ctx.pc)
}

/// Comparison result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// a < b.
    Less,
    /// a = b.
    Equal,
    /// a > b.
    Greater,
    /// At least one NaN or unsupported operand.
    Unordered,
}

/// Compares; `quiet` (FUCOM) raises IE only for SNaNs, otherwise for any NaN.
pub fn compare(ctx: &mut Ctx, a: F80, b: F80, quiet: bool) -> Cmp {
    let (ka, kb) = (a.kind(), b.kind());
    if ka == Kind::Unsupported || kb == Kind::Unsupported {
        ctx.flags |= IE;
        return Cmp::Unordered;
    }
    if a.is_nan() || b.is_nan() {
        if !quiet || ka == Kind::SNaN || kb == Kind::SNaN {
            ctx.flags |= IE;
        }
        return Cmp::Unordered;
    }
    if ka == Kind::Denormal || kb == Kind::Denormal {
        ctx.flags |= DE;
    }
    let key = |x: F80| -> (i32, i32, u64) {
        match x.kind() {
            Kind::Zero => (0, 0, 0),
            Kind::Inf => (1, i32::MAX, 0),
            _ => {
                let (_, e, m) = x.unpack();
                (1, e, m)
            }
        }
    };
    let (za, zb) = (ka == Kind::Zero, kb == Kind::Zero);
    if za && zb {
        return Cmp::Equal;
    }
    let (sa, sb) = (a.sign() && !za, b.sign() && !zb);
    let ord = match (sa, sb) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => key(a).cmp(&key(b)),
        (true, true) => key(b).cmp(&key(a)),
    };
    match ord {
        Ordering::Less => Cmp::Less,
        Ordering::Equal => Cmp::Equal,
        Ordering::Greater => Cmp::Greater,
    }
}

// ---- conversions ----

/// A value loaded from memory: the 80-bit value and whether the source was a denormal
/// (which the extended format represents as a normal number).
pub fn from_fmt(bits: u64, fmt: &Fmt) -> (F80, bool) {
    let fb = fmt.prec - 1;
    let width = match fmt.prec {
        24 => 32,
        _ => 64,
    };
    let sign = (bits >> (width - 1)) & 1 != 0;
    let field = ((bits >> fb) & fmt.maxf as u64) as i32;
    let frac = bits & ((1u64 << fb) - 1);
    if field == fmt.maxf {
        let sig = (1u64 << 63) | (frac << (64 - fmt.prec));
        return (F80::new(sign, 0x7fff, sig), false);
    }
    if field == 0 {
        if frac == 0 {
            return (F80::zero(sign), false);
        }
        // Denormal: frac × 2^(1 − bias − fb).
        let lz = frac.leading_zeros() as i32;
        let m = frac << lz;
        let e = (1 - fmt.bias - fb as i32) + (63 - lz);
        return (F80::new(sign, (e + 16383) as u16, m), true);
    }
    let sig = (1u64 << 63) | (frac << (64 - fmt.prec));
    (
        F80::new(sign, (field - fmt.bias + 16383) as u16, sig),
        false,
    )
}

/// Converts to a narrower memory format (FST m32/m64), rounding per RC. Returns the raw bits.
pub fn to_fmt(ctx: &mut Ctx, x: F80, fmt: &Fmt) -> u64 {
    let width = if fmt.prec == 24 { 32 } else { 64 };
    let fb = fmt.prec - 1;
    let sign = x.sign();
    let sbit = u64::from(sign) << (width - 1);
    let pack = |field: i32, sig: u64| sbit | ((field as u64) << fb) | (sig & ((1u64 << fb) - 1));
    match x.kind() {
        Kind::Zero => sbit,
        Kind::Inf => pack(fmt.maxf, 0),
        Kind::QNaN | Kind::SNaN => {
            if x.kind() == Kind::SNaN {
                ctx.flags |= IE;
            }
            pack(fmt.maxf, (x.sig >> (64 - fmt.prec)) | (1 << (fb - 1)))
        }
        Kind::Unsupported => {
            ctx.flags |= IE;
            (1u64 << (width - 1)) | ((fmt.maxf as u64) << fb) | (1 << (fb - 1))
        }
        Kind::Denormal | Kind::Normal => {
            let (_, e, m) = x.unpack();
            let (field, sig) = round_fmt(ctx, sign, e, u128::from(m) << 64, fmt.prec, fmt, false);
            pack(field, sig)
        }
    }
}

/// Exact conversion of an integer.
pub fn from_i64(v: i64) -> F80 {
    if v == 0 {
        return F80::zero(false);
    }
    let mag = v.unsigned_abs();
    let lz = mag.leading_zeros();
    F80::new(v < 0, (16383 + 63 - lz) as u16, mag << lz)
}

/// Rounds to an integer magnitude per `rc`: (sign, magnitude) or `None` when ≥ 2^64
/// (or not finite). Raises PE/C1 for inexact results and DE for denormals.
pub fn to_int_mag(ctx: &mut Ctx, x: F80, rc: u8) -> Option<(bool, u128)> {
    match x.kind() {
        Kind::Zero => Some((x.sign(), 0)),
        Kind::Normal | Kind::Denormal => {
            let (s, e, m) = x.unpack();
            if e >= 64 {
                return None;
            }
            let (q, inexact, up) = round_shift(u128::from(m) << 64, (127 - e) as u32, rc, s);
            if inexact {
                ctx.flags |= PE;
                ctx.c1 = up;
            }
            Some((s, q))
        }
        _ => None,
    }
}

/// Converts to a signed integer of `bits` bits; invalid gives IE and the integer indefinite.
pub fn to_int(ctx: &mut Ctx, x: F80, bits: u32, truncate: bool) -> i64 {
    let rc = if truncate { 3 } else { ctx.rc };
    let indefinite = i64::MIN >> (64 - bits);
    let mut c = *ctx;
    match to_int_mag(&mut c, x, rc) {
        Some((s, q)) => {
            let limit = 1u128 << (bits - 1);
            if (!s && q >= limit) || (s && q > limit) {
                ctx.flags |= IE;
                return indefinite;
            }
            *ctx = c;
            if s {
                (q as i128).wrapping_neg() as i64
            } else {
                q as i64
            }
        }
        None => {
            ctx.flags |= IE;
            indefinite
        }
    }
}

/// Rounds to an integral value per RC (FRNDINT).
pub fn round_int(ctx: &mut Ctx, x: F80) -> F80 {
    if let Some(r) = check1(ctx, x) {
        return r;
    }
    match x.kind() {
        Kind::Zero | Kind::Inf => return x,
        _ => {}
    }
    let (s, e, m) = x.unpack();
    if e >= 63 {
        return x;
    }
    let (q, inexact, up) = round_shift(u128::from(m) << 64, (127 - e) as u32, ctx.rc, s);
    if inexact {
        ctx.flags |= PE;
        ctx.c1 = up;
    }
    if q == 0 {
        return F80::zero(s);
    }
    round_pack(ctx, s, 127, q, 64)
}

/// ST0 × 2^trunc(ST1) (FSCALE).
pub fn scale(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    if let Some(r) = check2(ctx, a, b) {
        return r;
    }
    let (ka, kb) = (a.kind(), b.kind());
    if kb == Kind::Inf {
        return match (ka, b.sign()) {
            (Kind::Zero, false) | (Kind::Inf, true) => ctx.invalid(),
            (_, false) => F80::inf(a.sign()),
            (_, true) => F80::zero(a.sign()),
        };
    }
    match ka {
        Kind::Zero | Kind::Inf => return a,
        _ => {}
    }
    // trunc(ST1), clamped well beyond the exponent range.
    let n: i64 = match kb {
        Kind::Zero => 0,
        _ => {
            let (s, e, m) = b.unpack();
            let mag: i64 = if e < 0 {
                0
            } else if e >= 20 {
                1 << 20
            } else {
                (m >> (63 - e)) as i64
            };
            if s {
                -mag
            } else {
                mag
            }
        }
    };
    let (s, e, m) = a.unpack();
    round_pack(ctx, s, e + n as i32, u128::from(m) << 64, 64)
}

/// FXTRACT: (exponent, significand).
pub fn extract(ctx: &mut Ctx, a: F80) -> (F80, F80) {
    if let Some(r) = check1(ctx, a) {
        return (r, r);
    }
    match a.kind() {
        Kind::Zero => {
            ctx.flags |= ZE;
            return (F80::inf(true), a);
        }
        Kind::Inf => return (F80::inf(false), a),
        _ => {}
    }
    let (s, e, m) = a.unpack();
    (from_i64(i64::from(e)), F80::new(s, 0x3fff, m))
}

/// Partial remainder (FPREM when `!ieee`, FPREM1 when `ieee`): (result, C0..C3 bits as a
/// status-word mask: C2 = incomplete, C0/C3/C1 = quotient bits Q2/Q1/Q0).
pub fn prem(ctx: &mut Ctx, a: F80, b: F80, ieee: bool) -> (F80, u16) {
    let (ka, kb) = (a.kind(), b.kind());
    let special = |k: Kind| matches!(k, Kind::QNaN | Kind::SNaN | Kind::Unsupported);
    if !special(ka) && !special(kb) && (ka == Kind::Inf || kb == Kind::Zero) {
        // Invalid takes precedence over a denormal operand.
        return (ctx.invalid(), 0);
    }
    if let Some(r) = check2(ctx, a, b) {
        return (r, 0);
    }
    match (ka, kb) {
        (Kind::Zero, _) => return (a, 0),
        (_, Kind::Inf) => return (reround_exact(ctx, a), 0),
        _ => {}
    }
    let (sa, ea, ma) = a.unpack();
    let (_, eb, mb) = b.unpack();
    let d = ea - eb;
    if d < 0 {
        if ieee && d == -1 && ma > mb {
            // |a| > |b|/2: round quotient to 1.
            // a − sign·b, exactly: b − |a| with the opposite sign.
            let big = u128::from(mb) << 1;
            let r = big - u128::from(ma);
            let res = round_pack(ctx, !sa, eb + 64 - 1, r, 64);
            return (res, 0x200);
        }
        // Quotient 0 (FPREM1 with |a| ≤ |b|/2 or FPREM): the result is a.
        return (reround_exact(ctx, a), 0);
    }
    let (shift, partial) = if d < 64 {
        (d as u32, false)
    } else {
        ((32 + d % 32) as u32, true)
    };
    let num = u128::from(ma) << shift;
    let mb128 = u128::from(mb);
    let mut q = num / mb128;
    let mut r = num % mb128;
    let mut sign = sa;
    if ieee && !partial && (r << 1 > mb128 || (r << 1 == mb128 && q & 1 == 1)) {
        r = mb128 - r;
        q += 1;
        sign = !sign;
    }
    // r × 2^(eb − 63 + d − shift)
    let res = if r == 0 {
        F80::zero(sa)
    } else {
        round_pack(ctx, sign, eb + (d - shift as i32) + 64, r, 64)
    };
    if partial {
        return (res, 0x400);
    }
    let mut cc = 0;
    if q & 4 != 0 {
        cc |= 0x100;
    }
    if q & 2 != 0 {
        cc |= 0x4000;
    }
    if q & 1 != 0 {
        cc |= 0x200;
    }
    (res, cc)
}

/// A finite value unchanged (through the rounding path so that denormal results are flagged
/// consistently; exact).
fn reround_exact(ctx: &mut Ctx, a: F80) -> F80 {
    let (s, e, m) = a.unpack();
    round_pack(ctx, s, e + 64, u128::from(m), 64)
}

// ---- host-double helpers for the transcendental functions ----

/// To a host double (round to nearest).
pub fn to_f64(x: F80) -> f64 {
    let mut c = Ctx::new(0x37f);
    f64::from_bits(to_fmt(&mut c, x, &DBL))
}

/// From a host double (exact).
pub fn from_f64(v: f64) -> F80 {
    from_fmt(v.to_bits(), &DBL).0
}

/// Rounds a host double into the extended format per the context (flags PE).
pub fn from_f64_ctx(ctx: &mut Ctx, v: f64) -> F80 {
    let x = from_f64(v);
    match x.kind() {
        Kind::Normal => {
            let (s, e, m) = x.unpack();
            round_pack(ctx, s, e + 64, u128::from(m), 64)
        }
        _ => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> F80 {
        from_f64(v)
    }
    fn ctx(pc: u16, rc: u16) -> Ctx {
        Ctx::new(0x3f | (pc << 8) | (rc << 10))
    }

    #[test]
    fn basic_arith() {
        let mut c = ctx(3, 0);
        assert_eq!(to_f64(add(&mut c, f(1.5), f(2.25), false)), 3.75);
        assert_eq!(to_f64(add(&mut c, f(1.5), f(2.25), true)), -0.75);
        assert_eq!(to_f64(mul(&mut c, f(1.5), f(-4.0))), -6.0);
        assert_eq!(to_f64(div(&mut c, f(1.0), f(4.0))), 0.25);
        assert_eq!(to_f64(sqrt(&mut c, f(16.0))), 4.0);
        assert_eq!(to_f64(sqrt(&mut c, f(2.0))), 2f64.sqrt());
        assert_eq!(c.flags, PE);
    }

    #[test]
    fn rounding_modes_third() {
        // 1/3 in extended: 0xAAAA...AAAB (nearest, up), ...AAAA (down, zero).
        for (rc, sig) in [
            (0, 0xaaaa_aaaa_aaaa_aaab_u64),
            (1, 0xaaaa_aaaa_aaaa_aaaa),
            (2, 0xaaaa_aaaa_aaaa_aaab),
            (3, 0xaaaa_aaaa_aaaa_aaaa),
        ] {
            let mut c = ctx(3, rc);
            let r = div(&mut c, f(1.0), f(3.0));
            assert_eq!(r.sig, sig, "rc {rc}");
            assert_eq!(r.se, 0x3ffd);
            assert_eq!(c.flags, PE);
            assert_eq!(c.c1, sig & 1 == 1);
        }
        // Negative: down rounds the magnitude up.
        let mut c = ctx(3, 1);
        let r = div(&mut c, f(-1.0), f(3.0));
        assert_eq!(r.sig, 0xaaaa_aaaa_aaaa_aaab);
    }

    #[test]
    fn precision_control() {
        let mut c = ctx(2, 0);
        let r = div(&mut c, f(1.0), f(3.0));
        assert_eq!(to_f64(r), 1.0 / 3.0);
        assert_eq!(r.sig & 0x7ff, 0);
        let mut c = ctx(0, 0);
        let r = div(&mut c, f(1.0), f(3.0));
        assert_eq!(to_f64(r), f64::from(1.0f32 / 3.0));
    }

    #[test]
    fn specials() {
        let mut c = ctx(3, 0);
        assert_eq!(div(&mut c, f(0.0), f(0.0)), F80::INDEFINITE);
        assert_eq!(c.flags, IE);
        let mut c = ctx(3, 0);
        assert_eq!(div(&mut c, f(1.0), f(0.0)), F80::inf(false));
        assert_eq!(c.flags, ZE);
        let mut c = ctx(3, 0);
        assert_eq!(
            add(&mut c, F80::inf(false), F80::inf(true), false),
            F80::INDEFINITE
        );
        let mut c = ctx(3, 1);
        assert_eq!(add(&mut c, f(1.0), f(1.0), true), F80::zero(true));
        let mut c = ctx(3, 0);
        assert_eq!(sqrt(&mut c, f(-1.0)), F80::INDEFINITE);
        let snan = F80::new(false, 0x7fff, 0x8000_0000_0000_0001);
        let mut c = ctx(3, 0);
        let r = add(&mut c, snan, f(1.0), false);
        assert_eq!(r.sig, 0xc000_0000_0000_0001);
        assert_eq!(c.flags, IE);
    }

    #[test]
    fn overflow_underflow() {
        let max = F80::new(false, 0x7ffe, u64::MAX);
        let mut c = ctx(3, 0);
        assert_eq!(add(&mut c, max, max, false), F80::inf(false));
        assert_eq!(c.flags, OE | PE);
        let mut c = ctx(3, 3);
        assert_eq!(add(&mut c, max, max, false), max);
        let tiny = F80::new(false, 1, 1 << 63);
        let mut c = ctx(3, 0);
        let r = div(&mut c, tiny, f(4.0));
        assert_eq!(r, F80::new(false, 0, 1 << 61));
        assert_eq!(c.flags, 0); // exact: no underflow when masked
        let mut c = ctx(3, 0);
        let r = div(&mut c, tiny, f(3.0));
        assert_eq!(r.exp(), 0);
        assert_eq!(c.flags, UE | PE);
    }

    #[test]
    fn conversions() {
        let mut c = ctx(3, 0);
        for v in [1.0f64, -2.5, 1e300, 5e-324, 3.0e-310, f64::MAX] {
            let x = from_f64(v);
            assert_eq!(f64::from_bits(to_fmt(&mut c, x, &DBL)), v);
        }
        let (x, den) = from_fmt(1, &SGL);
        assert!(den);
        assert_eq!(to_f64(x), f64::from(f32::from_bits(1)));
        assert_eq!(to_int(&mut c, f(2.5), 32, false), 2);
        assert_eq!(to_int(&mut c, f(3.5), 32, false), 4);
        assert_eq!(to_int(&mut c, f(-3.7), 16, true), -3);
        assert_eq!(to_int(&mut c, f(40000.0), 16, false), -32768);
        assert!(c.flags & IE != 0);
        let mut c = ctx(3, 0);
        assert_eq!(to_int(&mut c, f(-32768.0), 16, false), -32768);
        assert_eq!(c.flags, 0);
        assert_eq!(from_i64(i64::MIN).sig, 1 << 63);
        assert_eq!(to_f64(from_i64(-12345)), -12345.0);
    }

    #[test]
    fn remainder() {
        let mut c = ctx(3, 0);
        let (r, cc) = prem(&mut c, f(10.0), f(3.0), false);
        assert_eq!(to_f64(r), 1.0);
        assert_eq!(cc, 0x200 | 0x4000); // q = 3
        let (r, _) = prem(&mut c, f(11.0), f(3.0), true);
        assert_eq!(to_f64(r), -1.0);
        let (r, _) = prem(&mut c, f(-7.5), f(2.0), false);
        assert_eq!(to_f64(r), -1.5);
    }

    #[test]
    fn scale_extract_round() {
        let mut c = ctx(3, 0);
        assert_eq!(to_f64(scale(&mut c, f(3.0), f(4.7))), 48.0);
        assert_eq!(to_f64(scale(&mut c, f(3.0), f(-1.2))), 1.5);
        let (e, s) = extract(&mut c, f(48.0));
        assert_eq!((to_f64(e), to_f64(s)), (5.0, 1.5));
        assert_eq!(to_f64(round_int(&mut c, f(2.5))), 2.0);
        let mut c = ctx(3, 2);
        assert_eq!(to_f64(round_int(&mut c, f(2.1))), 3.0);
        assert_eq!(to_f64(round_int(&mut c, f(-0.5))), -0.0);
    }

    #[test]
    fn compares() {
        let mut c = ctx(3, 0);
        assert_eq!(compare(&mut c, f(1.0), f(2.0), false), Cmp::Less);
        assert_eq!(compare(&mut c, f(-0.0), f(0.0), false), Cmp::Equal);
        assert_eq!(compare(&mut c, f(-1.0), f(-2.0), false), Cmp::Greater);
        assert_eq!(compare(&mut c, F80::inf(true), f(-2.0), false), Cmp::Less);
        assert_eq!(c.flags, 0);
        assert_eq!(
            compare(&mut c, F80::INDEFINITE, f(0.0), true),
            Cmp::Unordered
        );
        assert_eq!(c.flags, 0);
        assert_eq!(
            compare(&mut c, F80::INDEFINITE, f(0.0), false),
            Cmp::Unordered
        );
        assert_eq!(c.flags, IE);
    }
}
