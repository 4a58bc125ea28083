//! Software binary32/binary64 arithmetic with the SSE semantics of MXCSR: all four rounding
//! modes (correctly rounded through exact integer arithmetic on `u128`), flush-to-zero,
//! denormals-are-zero, the six exception flags (tininess detected after rounding, as x86
//! does), x86 NaN propagation and the default NaN (negative quiet NaN).

/// Invalid operation.
pub(crate) const IE: u32 = 1;
/// Denormal operand.
pub(crate) const DE: u32 = 2;
/// Divide by zero.
pub(crate) const ZE: u32 = 4;
/// Overflow.
pub(crate) const OE: u32 = 8;
/// Underflow.
pub(crate) const UE: u32 = 16;
/// Precision (inexact).
pub(crate) const PE: u32 = 32;
/// Denormals are zero.
pub(crate) const DAZ: u32 = 1 << 6;
/// Underflow mask bit.
const UM: u32 = UE << 7;
/// Flush to zero.
pub(crate) const FTZ: u32 = 1 << 15;

/// An IEEE binary interchange format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fmt {
    /// Stored fraction bits.
    man: u32,
    /// Exponent bits.
    exp_bits: u32,
}

/// binary32.
pub(crate) const F32: Fmt = Fmt {
    man: 23,
    exp_bits: 8,
};
/// binary64.
pub(crate) const F64: Fmt = Fmt {
    man: 52,
    exp_bits: 11,
};

impl Fmt {
    /// Width in bits.
    pub(crate) fn bits(self) -> u32 {
        1 + self.exp_bits + self.man
    }
    /// Mask of the whole value.
    pub(crate) fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits())
    }
    fn bias(self) -> i32 {
        (1 << (self.exp_bits - 1)) - 1
    }
    fn exp_max(self) -> u64 {
        (1 << self.exp_bits) - 1
    }
    pub(crate) fn sign_bit(self) -> u64 {
        1 << (self.bits() - 1)
    }
    fn man_mask(self) -> u64 {
        (1 << self.man) - 1
    }
    fn qbit(self) -> u64 {
        1 << (self.man - 1)
    }
    fn exp(self, x: u64) -> u64 {
        (x >> self.man) & self.exp_max()
    }
    pub(crate) fn sign(self, x: u64) -> bool {
        x & self.sign_bit() != 0
    }
    pub(crate) fn is_nan(self, x: u64) -> bool {
        self.exp(x) == self.exp_max() && x & self.man_mask() != 0
    }
    pub(crate) fn is_snan(self, x: u64) -> bool {
        self.is_nan(x) && x & self.qbit() == 0
    }
    pub(crate) fn is_inf(self, x: u64) -> bool {
        self.exp(x) == self.exp_max() && x & self.man_mask() == 0
    }
    pub(crate) fn is_zero(self, x: u64) -> bool {
        x & (self.sign_bit() - 1) == 0
    }
    pub(crate) fn is_denormal(self, x: u64) -> bool {
        self.exp(x) == 0 && x & self.man_mask() != 0
    }
    /// The x86 default NaN ("QNaN floating-point indefinite").
    pub(crate) fn default_nan(self) -> u64 {
        self.sign_bit() | (self.exp_max() << self.man) | self.qbit()
    }
    pub(crate) fn quiet(self, x: u64) -> u64 {
        x | self.qbit()
    }
    fn inf(self, sign: bool) -> u64 {
        self.zero(sign) | (self.exp_max() << self.man)
    }
    fn zero(self, sign: bool) -> u64 {
        if sign {
            self.sign_bit()
        } else {
            0
        }
    }
    fn max_finite(self, sign: bool) -> u64 {
        self.zero(sign) | ((self.exp_max() - 1) << self.man) | self.man_mask()
    }
    /// Finite value as (sign, exponent, integer significand): value = m × 2^e.
    fn unpack(self, x: u64) -> (bool, i32, u128) {
        let e = self.exp(x) as i32;
        let f = u128::from(x & self.man_mask());
        let s = self.sign(x);
        if e == 0 {
            (s, 1 - self.bias() - self.man as i32, f)
        } else {
            (s, e - self.bias() - self.man as i32, f | (1 << self.man))
        }
    }
    /// Total-order key for non-NaN values (both zeros equal).
    fn key(self, x: u64) -> i128 {
        let mag = i128::from(x & (self.sign_bit() - 1));
        if self.sign(x) {
            -mag
        } else {
            mag
        }
    }
}

/// Shifts `m` right by `sh` rounding by `rc`; returns the rounded integer and inexactness.
fn round_shift(m: u128, sh: i32, rc: u32, sign: bool) -> (u128, bool) {
    if sh <= 0 {
        return (m << (-sh) as u32, false);
    }
    let (q, half, rest) = if sh > 128 {
        (0, false, m != 0)
    } else if sh == 128 {
        (0, m >> 127 != 0, m << 1 != 0)
    } else {
        let sh = sh as u32;
        (
            m >> sh,
            (m >> (sh - 1)) & 1 != 0,
            m & ((1u128 << (sh - 1)) - 1) != 0,
        )
    };
    let inexact = half || rest;
    let up = match rc {
        0 => half && (rest || q & 1 != 0),
        1 => sign && inexact,
        2 => !sign && inexact,
        _ => false,
    };
    (q + u128::from(up), inexact)
}

fn isqrt(n: u128) -> (u128, bool) {
    let mut x = n;
    let mut r = 0u128;
    let mut bit = 1u128 << 126;
    while bit > n {
        bit >>= 2;
    }
    while bit != 0 {
        if x >= r + bit {
            x -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    (r, x != 0)
}

/// Rounding state: MXCSR (control bits) and the flags raised so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env {
    /// MXCSR at the start of the instruction.
    pub mxcsr: u32,
    /// Exception flags raised by the instruction.
    pub flags: u32,
}

impl Env {
    pub(crate) fn new(mxcsr: u32) -> Self {
        Self { mxcsr, flags: 0 }
    }
    fn rc(&self) -> u32 {
        (self.mxcsr >> 13) & 3
    }
    /// Treats a denormal source as DAZ says (zero) or flags it.
    fn input(&mut self, f: Fmt, x: u64) -> u64 {
        if f.is_denormal(x) {
            if self.mxcsr & DAZ != 0 {
                return x & f.sign_bit();
            }
            self.flags |= DE;
        }
        x
    }
    /// Like [`Env::input`] without raising #D (conversions to integer).
    fn input_quiet(&self, f: Fmt, x: u64) -> u64 {
        if f.is_denormal(x) && self.mxcsr & DAZ != 0 {
            x & f.sign_bit()
        } else {
            x
        }
    }

    /// Rounds m × 2^e (m exact, or with a sticky bit at least two bits below the rounding
    /// position) to `f`.
    fn round_pack(&mut self, f: Fmt, sign: bool, e: i32, m: u128) -> u64 {
        if m == 0 {
            return f.zero(sign);
        }
        let rc = self.rc();
        let p = f.man as i32 + 1;
        let msb = 127 - m.leading_zeros() as i32;
        let emin = 1 - f.bias();
        let (mut q, inexact) = round_shift(m, msb - (p - 1), rc, sign);
        let mut ee = msb + e;
        if q >> p != 0 {
            q >>= 1;
            ee += 1;
        }
        if ee > f.bias() {
            self.flags |= OE | PE;
            let to_inf = match rc {
                0 => true,
                1 => sign,
                2 => !sign,
                _ => false,
            };
            return if to_inf {
                f.inf(sign)
            } else {
                f.max_finite(sign)
            };
        }
        if ee >= emin {
            if inexact {
                self.flags |= PE;
            }
            return f.zero(sign) | (((ee + f.bias()) as u64) << f.man) | (q as u64 & f.man_mask());
        }
        // Tiny after rounding.
        let masked = self.mxcsr & UM != 0;
        if self.mxcsr & FTZ != 0 && masked {
            self.flags |= UE | PE;
            return f.zero(sign);
        }
        let (qd, inexact) = round_shift(m, (emin - (p - 1)) - e, rc, sign);
        if inexact {
            self.flags |= UE | PE;
        } else if !masked {
            self.flags |= UE;
        }
        f.zero(sign) | qd as u64
    }

    fn nan2(&mut self, f: Fmt, a: u64, b: u64) -> Option<u64> {
        let (an, bn) = (f.is_nan(a), f.is_nan(b));
        if !an && !bn {
            return None;
        }
        if f.is_snan(a) || f.is_snan(b) {
            self.flags |= IE;
        }
        Some(if an { f.quiet(a) } else { f.quiet(b) })
    }

    fn invalid(&mut self, f: Fmt) -> u64 {
        self.flags |= IE;
        f.default_nan()
    }

    /// a + b, or a − b with `sub`.
    pub(crate) fn add(&mut self, f: Fmt, a: u64, b: u64, sub: bool) -> u64 {
        if let Some(n) = self.nan2(f, a, b) {
            return n;
        }
        let a = self.input(f, a);
        let b = self.input(f, b) ^ if sub { f.sign_bit() } else { 0 };
        let (sa, sb) = (f.sign(a), f.sign(b));
        if f.is_inf(a) || f.is_inf(b) {
            if f.is_inf(a) && f.is_inf(b) && sa != sb {
                return self.invalid(f);
            }
            return if f.is_inf(a) { a } else { b };
        }
        if f.is_zero(a) && f.is_zero(b) {
            return f.zero(if sa == sb { sa } else { self.rc() == 1 });
        }
        let (_, ea, ma) = f.unpack(a);
        let (_, eb, mb) = f.unpack(b);
        let (ma, mb) = (ma << 64, mb << 64);
        // Align the operand with the smaller exponent, jamming lost bits into bit 0.
        let align = |m: u128, d: i32| -> u128 {
            if d >= 128 {
                u128::from(m != 0)
            } else {
                let d = d as u32;
                (m >> d) | u128::from(m & ((1u128 << d) - 1) != 0)
            }
        };
        let (e, ma, mb) = if ea >= eb {
            (ea, ma, align(mb, ea - eb))
        } else {
            (eb, align(ma, eb - ea), mb)
        };
        let (sign, m) = if sa == sb {
            (sa, ma + mb)
        } else if ma >= mb {
            (sa, ma - mb)
        } else {
            (sb, mb - ma)
        };
        if m == 0 {
            return f.zero(self.rc() == 1);
        }
        self.round_pack(f, sign, e - 64, m)
    }

    /// a × b.
    pub(crate) fn mul(&mut self, f: Fmt, a: u64, b: u64) -> u64 {
        if let Some(n) = self.nan2(f, a, b) {
            return n;
        }
        let a = self.input(f, a);
        let b = self.input(f, b);
        let sign = f.sign(a) != f.sign(b);
        if f.is_inf(a) || f.is_inf(b) {
            if f.is_zero(a) || f.is_zero(b) {
                return self.invalid(f);
            }
            return f.inf(sign);
        }
        let (_, ea, ma) = f.unpack(a);
        let (_, eb, mb) = f.unpack(b);
        self.round_pack(f, sign, ea + eb, ma * mb)
    }

    /// a ÷ b.
    pub(crate) fn div(&mut self, f: Fmt, a: u64, b: u64) -> u64 {
        if let Some(n) = self.nan2(f, a, b) {
            return n;
        }
        // Division by zero takes precedence over the denormal-operand exception.
        let a = self.input_quiet(f, a);
        let b = self.input_quiet(f, b);
        if !(f.is_zero(b) && !f.is_zero(a) && !f.is_inf(a)) {
            self.input(f, a);
            self.input(f, b);
        }
        let sign = f.sign(a) != f.sign(b);
        if f.is_inf(a) {
            if f.is_inf(b) {
                return self.invalid(f);
            }
            return f.inf(sign);
        }
        if f.is_inf(b) {
            return f.zero(sign);
        }
        if f.is_zero(b) {
            if f.is_zero(a) {
                return self.invalid(f);
            }
            self.flags |= ZE;
            return f.inf(sign);
        }
        if f.is_zero(a) {
            return f.zero(sign);
        }
        let (_, ea, ma) = f.unpack(a);
        let (_, eb, mb) = f.unpack(b);
        let la = ma.leading_zeros() - 64;
        let lb = mb.leading_zeros() - 64;
        let (ma, mb) = (ma << la, mb << lb);
        let num = ma << 64;
        let q = num / mb;
        let sticky = u128::from(num % mb != 0);
        // q has at least 64 bits, so the sticky bit stays below the rounding position.
        self.round_pack(f, sign, ea - la as i32 - (eb - lb as i32) - 64, q | sticky)
    }

    /// √a.
    pub(crate) fn sqrt(&mut self, f: Fmt, a: u64) -> u64 {
        if f.is_nan(a) {
            if f.is_snan(a) {
                self.flags |= IE;
            }
            return f.quiet(a);
        }
        // A negative operand is invalid before it is a denormal.
        let a = self.input_quiet(f, a);
        if f.is_zero(a) {
            return a;
        }
        if f.sign(a) {
            return self.invalid(f);
        }
        let a = self.input(f, a);
        if f.is_inf(a) {
            return a;
        }
        let (_, e, m) = f.unpack(a);
        let mut sh = m.leading_zeros() as i32 - 2;
        if (e - sh) % 2 != 0 {
            sh -= 1;
        }
        let (r, inexact) = isqrt(m << sh as u32);
        self.round_pack(f, false, (e - sh) / 2 - 1, (r << 1) | u128::from(inexact))
    }

    /// MINPS/MAXPS semantics: the second operand unless the first is strictly smaller
    /// (larger); any NaN is invalid and returns the second operand.
    pub(crate) fn minmax(&mut self, f: Fmt, a: u64, b: u64, max: bool) -> u64 {
        if f.is_nan(a) || f.is_nan(b) {
            self.flags |= IE;
            return self.input_quiet(f, b);
        }
        let a2 = self.input(f, a);
        let b2 = self.input(f, b);
        let pick_a = if max {
            f.key(a2) > f.key(b2)
        } else {
            f.key(a2) < f.key(b2)
        };
        if pick_a {
            a2
        } else {
            b2
        }
    }

    /// Ordered comparison: `None` when unordered. `signal_qnan`: QNaN operands are invalid.
    pub(crate) fn compare(
        &mut self,
        f: Fmt,
        a: u64,
        b: u64,
        signal_qnan: bool,
    ) -> Option<std::cmp::Ordering> {
        if f.is_nan(a) || f.is_nan(b) {
            if signal_qnan || f.is_snan(a) || f.is_snan(b) {
                self.flags |= IE;
            }
            return None;
        }
        let a = self.input(f, a);
        let b = self.input(f, b);
        Some(f.key(a).cmp(&f.key(b)))
    }

    /// CMPPS predicate 0..7.
    pub(crate) fn cmp_pred(&mut self, f: Fmt, a: u64, b: u64, pred: u8) -> bool {
        use std::cmp::Ordering::*;
        let o = self.compare(f, a, b, matches!(pred & 7, 1 | 2 | 5 | 6));
        match pred & 7 {
            0 => o == Some(Equal),
            1 => o == Some(Less),
            2 => matches!(o, Some(Less | Equal)),
            3 => o.is_none(),
            4 => o != Some(Equal),
            5 => o != Some(Less),
            6 => !matches!(o, Some(Less | Equal)),
            _ => o.is_some(),
        }
    }

    /// Float → signed integer of `bits` (32/64), rounding by MXCSR or truncating.
    pub(crate) fn float_to_int(&mut self, f: Fmt, x: u64, bits: u32, truncate: bool) -> u64 {
        let indefinite = 1u64 << (bits - 1);
        if f.is_nan(x) || f.is_inf(x) {
            self.flags |= IE;
            return indefinite;
        }
        let x = self.input_quiet(f, x);
        let (s, e, m) = f.unpack(x);
        if m == 0 {
            return 0;
        }
        let rc = if truncate { 3 } else { self.rc() };
        let (q, inexact) = if e >= 0 {
            if e > 64 {
                self.flags |= IE;
                return indefinite;
            }
            (m << e as u32, false)
        } else {
            round_shift(m, -e, rc, s)
        };
        let limit = u128::from(indefinite) - u128::from(!s);
        if q > limit {
            self.flags |= IE;
            return indefinite;
        }
        if inexact {
            self.flags |= PE;
        }
        let v = if s {
            (q as u64).wrapping_neg()
        } else {
            q as u64
        };
        v & (u64::MAX >> (64 - bits))
    }

    /// Signed integer → float.
    pub(crate) fn int_to_float(&mut self, f: Fmt, v: i64) -> u64 {
        self.round_pack(f, v < 0, 0, u128::from(v.unsigned_abs()))
    }

    /// Float format conversion.
    pub(crate) fn convert(&mut self, from: Fmt, to: Fmt, x: u64) -> u64 {
        let sign = from.sign(x);
        if from.is_nan(x) {
            if from.is_snan(x) {
                self.flags |= IE;
            }
            let frac = x & from.man_mask();
            let frac = if to.man > from.man {
                frac << (to.man - from.man)
            } else {
                frac >> (from.man - to.man)
            };
            return to.inf(sign) | frac | to.qbit();
        }
        if from.is_inf(x) {
            return to.inf(sign);
        }
        let x = self.input(from, x);
        if from.is_zero(x) {
            return to.zero(sign);
        }
        let (s, e, m) = from.unpack(x);
        self.round_pack(to, s, e, m)
    }

    /// RCPSS approximation: the exact reciprocal rounded to nearest (within the SDM's
    /// |relative error| ≤ 1.5 × 2^−12); denormal sources count as zero, tiny results flush.
    pub(crate) fn rcp(x: u32) -> u32 {
        let f = F32;
        let xv = u64::from(x);
        if f.is_nan(xv) {
            return f.quiet(xv) as u32;
        }
        if f.is_zero(xv) || f.is_denormal(xv) {
            return f.inf(f.sign(xv)) as u32;
        }
        if f.is_inf(xv) {
            return f.zero(f.sign(xv)) as u32;
        }
        let r = (1.0 / f64::from(f32::from_bits(x))) as f32;
        if r.abs() < f32::MIN_POSITIVE {
            return r.to_bits() & 0x8000_0000;
        }
        r.to_bits()
    }

    /// RSQRTSS approximation (exact 1/√x rounded to nearest).
    pub(crate) fn rsqrt(x: u32) -> u32 {
        let f = F32;
        let xv = u64::from(x);
        if f.is_nan(xv) {
            return f.quiet(xv) as u32;
        }
        if f.is_zero(xv) || f.is_denormal(xv) {
            return f.inf(f.sign(xv)) as u32;
        }
        if f.sign(xv) {
            return f.default_nan() as u32;
        }
        if f.is_inf(xv) {
            return 0;
        }
        ((1.0 / f64::from(f32::from_bits(x)).sqrt()) as f32).to_bits()
    }
}
