//! Flag-exact integer arithmetic and logic, as pure functions.
//!
//! Sizes are operand widths in bits (8, 16, 32, 64); any other size is treated as 64. Inputs
//! are zero-extended to 64 bits and only their low `size` bits are used; results are truncated
//! to the width. Flags are returned in their RFLAGS bit positions; every function documents
//! which flags it defines. Flags the SDM calls undefined are set as an Intel processor sets
//! them (measured on the development host, a Xeon; `tests/alu_host.rs` compares every flag
//! with `ALU_HOST_STRICT=1`); AMD differs in some of them, which software must not rely on.
//! No function panics for any input.

/// Carry flag.
pub const CF: u64 = 1 << 0;
/// Parity flag (even parity of the low byte).
pub const PF: u64 = 1 << 2;
/// Auxiliary carry (carry out of bit 3).
pub const AF: u64 = 1 << 4;
/// Zero flag.
pub const ZF: u64 = 1 << 6;
/// Sign flag.
pub const SF: u64 = 1 << 7;
/// Overflow flag.
pub const OF: u64 = 1 << 11;
/// All six status flags.
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

/// Normalises a size to one of 8, 16, 32, 64 (anything else is 64).
#[inline]
fn width(size: u32) -> u32 {
    match size {
        8 => 8,
        16 => 16,
        32 => 32,
        _ => 64,
    }
}

/// `f` if `cond`, else 0.
#[inline]
fn flag(cond: bool, f: u64) -> u64 {
    if cond {
        f
    } else {
        0
    }
}

/// Most significant bit of `v` at the given size.
#[inline]
fn msb(size: u32, v: u64) -> bool {
    v & sign_bit(size) != 0
}

/// Replaces the flags in `which` of `old` with those in `new`.
#[inline]
fn merge(old: u64, which: u64, new: u64) -> u64 {
    (old & !which) | (new & which)
}

/// Width mask for a size in bits (sizes other than 8/16/32 give the 64-bit mask).
#[inline]
pub fn mask(size: u32) -> u64 {
    match width(size) {
        8 => 0xff,
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Sign bit for a size (the top bit of the width).
#[inline]
pub fn sign_bit(size: u32) -> u64 {
    1u64 << (width(size) - 1)
}

/// Sign-extends the low `size` bits of v to 64 bits.
pub fn sign_extend(v: u64, size: u32) -> u64 {
    let s = 64 - width(size);
    (((v << s) as i64) >> s) as u64
}

/// Even parity of the low byte (true when the number of set bits is even: PF=1).
#[inline]
pub fn parity(v: u64) -> bool {
    // Fold the byte to a nibble; 0x6996 holds the odd parity of each nibble value.
    let x = (v as u8) ^ ((v as u8) >> 4);
    (0x6996u16 >> (x & 0xf)) & 1 == 0
}

/// PF, ZF, SF for a result (truncated to size); all other bits of the return value are 0.
#[inline]
pub fn szp(size: u32, result: u64) -> u64 {
    let r = result & mask(size);
    flag(parity(r), PF) | flag(r == 0, ZF) | flag(msb(size, r), SF)
}

/// ADD/ADC: returns (result, flags) with all six status flags defined.
#[inline]
pub fn add(size: u32, a: u64, b: u64, carry_in: bool) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let wide = a as u128 + b as u128 + carry_in as u128;
    let r = wide as u64 & m;
    let cf = wide > m as u128;
    let af = (a ^ b ^ r) & 0x10 != 0;
    let of = msb(size, (a ^ r) & (b ^ r));
    (r, szp(size, r) | flag(cf, CF) | flag(af, AF) | flag(of, OF))
}

/// SUB/SBB/CMP/NEG(as 0 - b): returns (a - b - borrow_in, flags) with all six flags defined.
#[inline]
pub fn sub(size: u32, a: u64, b: u64, borrow_in: bool) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let r = a.wrapping_sub(b).wrapping_sub(borrow_in as u64) & m;
    let cf = (a as u128) < b as u128 + borrow_in as u128;
    let af = (a ^ b ^ r) & 0x10 != 0;
    let of = msb(size, (a ^ b) & (a ^ r));
    (r, szp(size, r) | flag(cf, CF) | flag(af, AF) | flag(of, OF))
}

/// AND/OR/XOR/TEST flags for a result: CF=OF=0, AF=0 (undefined in the SDM; Intel clears
/// it), PF/ZF/SF from the result. Returns all six status flags.
#[inline]
pub fn logic(size: u32, result: u64) -> u64 {
    szp(size, result)
}

/// INC: (a + 1, flags). CF is taken from `old_flags` (unchanged); OF, SF, ZF, AF, PF defined.
#[inline]
pub fn inc(size: u32, a: u64, old_flags: u64) -> (u64, u64) {
    let (r, f) = add(size, a, 1, false);
    (r, merge(f, CF, old_flags))
}

/// DEC: (a - 1, flags). CF is taken from `old_flags` (unchanged); OF, SF, ZF, AF, PF defined.
#[inline]
pub fn dec(size: u32, a: u64, old_flags: u64) -> (u64, u64) {
    let (r, f) = sub(size, a, 1, false);
    (r, merge(f, CF, old_flags))
}

/// NEG: (0 - a, flags): CF = (a != 0), the other five flags as for `0 - a`.
pub fn neg(size: u32, a: u64) -> (u64, u64) {
    sub(size, 0, a, false)
}

/// Shift and rotate operations (the x86 group-2 instructions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shift {
    /// Rotate left.
    Rol,
    /// Rotate right.
    Ror,
    /// Rotate left through carry.
    Rcl,
    /// Rotate right through carry.
    Rcr,
    /// Shift left (logical).
    Shl,
    /// Shift right (logical).
    Shr,
    /// Shift left (arithmetic; the same operation as SHL).
    Sal,
    /// Shift right (arithmetic, sign-filling).
    Sar,
}

/// Shift/rotate `value` by `count`.
///
/// `count` is the raw count from CL or imm8; it is masked as x86 does (0x3f for 64-bit, else
/// 0x1f); RCL/RCR on 8/16-bit also take the masked count modulo 9/17. If the masked count is
/// 0, returns `(value truncated to size, old_flags)` unchanged. Otherwise returns (result,
/// flags) where flags is the full new status-flag set (bits not affected come from
/// `old_flags`):
///
/// - SHL/SAL/SHR/SAR: CF = last bit shifted out; SF/ZF/PF from the result. For SHL/SHR with
///   counts ≥ the width (8/16-bit operands take counts up to 31) the SDM leaves CF undefined;
///   Intel shifts a wide value, so CF is the bit shifted out of position 0 when count = width
///   and 0 beyond, and so does this function. AF (undefined) is 0, as on Intel. OF is defined
///   for count 1 (SHL: MSB(result) ^ CF, SHR: MSB(value), SAR: 0); for larger counts it is
///   undefined and Intel computes it as for a 1-bit shift of the original value (SHL: bit w-1
///   ^ bit w-2 of the value, SHR: MSB of the value, SAR: 0); this function does the same.
/// - ROL/ROR/RCL/RCR: only CF and OF change. CF is the bit last rotated into (or, for
///   RCL/RCR, through) the carry. OF is defined for count 1 (ROL/RCL: MSB(result) ^ CF,
///   ROR/RCR: MSB(result) ^ second MSB(result)); for larger counts it is undefined and, as on
///   Intel, computed as for a 1-bit rotate of the original value. ROL/ROR by a non-zero
///   multiple of the width leave the value but still set CF and OF. RCL/RCR whose masked count
///   is a non-zero multiple of 9 (8-bit) or 17 (16-bit) change nothing, flags included (as
///   the SDM pseudo-code for CF, and as Intel for OF).
pub fn shift(op: Shift, size: u32, value: u64, count: u8, old_flags: u64) -> (u64, u64) {
    let w = width(size);
    let m = mask(w);
    let v = value & m;
    let c = u32::from(count & if w == 64 { 0x3f } else { 0x1f });
    if c == 0 {
        return (v, old_flags);
    }
    let old_cf = old_flags & CF != 0;
    match op {
        Shift::Shl | Shift::Sal => {
            // Wide shift: counts up to 31 on 8/16-bit values behave like a 64-bit shifter.
            let wide = (v as u128) << c;
            let r = wide as u64 & m;
            let cf = (wide >> w) & 1 != 0;
            // OF as for a 1-bit shift of the original value (Intel, for every count).
            let of = msb(w, v) ^ msb(w, v << 1);
            let f = szp(w, r) | flag(cf, CF) | flag(of, OF);
            (r, merge(old_flags, STATUS, f))
        }
        Shift::Shr => {
            let r = if c >= w { 0 } else { v >> c };
            let cf = c <= w && (v >> (c - 1)) & 1 != 0;
            let of = msb(w, v);
            let f = szp(w, r) | flag(cf, CF) | flag(of, OF);
            (r, merge(old_flags, STATUS, f))
        }
        Shift::Sar => {
            let sv = sign_extend(v, w) as i64;
            // c <= 63 always (c <= 31 for sizes below 64).
            let r = (sv >> c) as u64 & m;
            let cf = (sv >> (c - 1)) & 1 != 0;
            let f = szp(w, r) | flag(cf, CF);
            (r, merge(old_flags, STATUS, f))
        }
        Shift::Rol | Shift::Ror => {
            let n = c % w;
            let r = if n == 0 {
                v
            } else if op == Shift::Rol {
                ((v << n) | (v >> (w - n))) & m
            } else {
                ((v >> n) | (v << (w - n))) & m
            };
            // OF as for a 1-bit rotate of the original value (Intel, for every count).
            let (cf, of) = if op == Shift::Rol {
                (r & 1 != 0, msb(w, v) ^ msb(w, v << 1))
            } else {
                (msb(w, r), msb(w, v) ^ (v & 1 != 0))
            };
            (r, merge(old_flags, CF | OF, flag(cf, CF) | flag(of, OF)))
        }
        Shift::Rcl | Shift::Rcr => {
            let n = match w {
                8 => c % 9,
                16 => c % 17,
                _ => c,
            };
            if n == 0 {
                // Count a multiple of 9/17: nothing changes, not even OF (as Intel).
                return (v, old_flags);
            }
            // The (w+1)-bit value CF:v, rotated within w+1 bits.
            let x = ((old_cf as u128) << w) | v as u128;
            let xm = (1u128 << (w + 1)) - 1;
            let y = if op == Shift::Rcl {
                ((x << n) | (x >> (w + 1 - n))) & xm
            } else {
                ((x >> n) | (x << (w + 1 - n))) & xm
            };
            let r = y as u64 & m;
            let cf = (y >> w) & 1 != 0;
            // OF as for a 1-bit rotate of the original value (Intel, for every count).
            let of = if op == Shift::Rcl {
                msb(w, v) ^ msb(w, v << 1)
            } else {
                msb(w, v) ^ old_cf
            };
            (r, merge(old_flags, CF | OF, flag(cf, CF) | flag(of, OF)))
        }
    }
}

/// SHLD dst, src, count: shifts `dst` left, filling from the top of `src`.
///
/// Count is masked to 0x1f (0x3f for 64-bit); a masked count of 0 returns `(dst, old_flags)`
/// unchanged. CF = last bit shifted out of `dst`; SF/ZF/PF from the result; OF = sign change
/// for count 1 (bit w-1 ^ bit w-2 of `dst`), and for larger counts (undefined in the SDM) the
/// same value, as Intel computes it; AF = 0 (undefined; as Intel). For 16-bit operands with
/// counts 17..=31 (result and flags undefined in the SDM) this follows Intel hardware: the
/// shift acts on the 48-bit value dst:src:dst, CF included.
pub fn shld(size: u32, dst: u64, src: u64, count: u8, old_flags: u64) -> (u64, u64) {
    let w = width(size);
    let m = mask(w);
    let (d, s) = (dst & m, src & m);
    let c = u32::from(count & if w == 64 { 0x3f } else { 0x1f });
    if c == 0 {
        return (d, old_flags);
    }
    let (r, cf) = if w == 64 {
        // 1 <= c <= 63.
        ((d << c) | (s >> (64 - c)), (d >> (64 - c)) & 1 != 0)
    } else {
        // Concatenation d:s:d (the second d matters only for 16-bit counts > 16); at most
        // 96 + 31 bits.
        let x: u128 = ((d as u128) << (2 * w)) | ((s as u128) << w) | d as u128;
        let shifted = x << c;
        (
            (shifted >> (2 * w)) as u64 & m,
            (shifted >> (3 * w)) & 1 != 0,
        )
    };
    // OF as for a 1-bit shift (Intel, for every count).
    let of = msb(w, d) ^ msb(w, d << 1);
    let f = szp(w, r) | flag(cf, CF) | flag(of, OF);
    (r, merge(old_flags, STATUS, f))
}

/// SHRD dst, src, count: shifts `dst` right, filling from the bottom of `src`.
///
/// Count is masked to 0x1f (0x3f for 64-bit); a masked count of 0 returns `(dst, old_flags)`
/// unchanged. CF = last bit shifted out of `dst`; SF/ZF/PF from the result; OF = sign change
/// for count 1 (MSB of `dst` ^ bit 0 of `src`), and for larger counts (undefined in the SDM)
/// the same value, as Intel computes it; AF = 0 (undefined; as Intel). For 16-bit operands
/// with counts 17..=31 (result and flags undefined in the SDM) this follows Intel hardware:
/// the shift acts on the 48-bit value dst:src:dst (dst in the low 16 bits), CF included.
pub fn shrd(size: u32, dst: u64, src: u64, count: u8, old_flags: u64) -> (u64, u64) {
    let w = width(size);
    let m = mask(w);
    let (d, s) = (dst & m, src & m);
    let c = u32::from(count & if w == 64 { 0x3f } else { 0x1f });
    if c == 0 {
        return (d, old_flags);
    }
    let (r, cf) = if w == 64 {
        // 1 <= c <= 63.
        ((d >> c) | (s << (64 - c)), (d >> (c - 1)) & 1 != 0)
    } else {
        // Concatenation d:s:d read from the bottom: d, then s, then d again.
        let x: u128 = ((d as u128) << (2 * w)) | ((s as u128) << w) | d as u128;
        ((x >> c) as u64 & m, (x >> (c - 1)) & 1 != 0)
    };
    // OF as for a 1-bit shift (Intel, for every count).
    let of = msb(w, d) ^ (s & 1 != 0);
    let f = szp(w, r) | flag(cf, CF) | flag(of, OF);
    (r, merge(old_flags, STATUS, f))
}

/// MUL: unsigned a*b → (low, high, flags), each half truncated to size.
///
/// CF = OF = (high != 0). SF, ZF, AF, PF are undefined in the SDM; this returns them as Intel
/// hardware does: SF and PF from the low half, ZF = 0, AF = 0. All six status flags are
/// therefore defined in the return value (`old_flags` is accepted for symmetry).
pub fn mul(size: u32, a: u64, b: u64, old_flags: u64) -> (u64, u64, u64) {
    let _ = old_flags;
    let w = width(size);
    let m = mask(w);
    let p = (a & m) as u128 * (b & m) as u128;
    let low = p as u64 & m;
    let high = (p >> w) as u64 & m;
    let f = mul_flags(w, low, high != 0);
    (low, high, f)
}

/// IMUL: signed a*b → (low, high, flags), each half truncated to size. The one-operand form
/// uses both halves; the 2/3-operand forms use `low`.
///
/// CF = OF = (high:low is not the sign-extension of low). SF, ZF, AF, PF as for [`mul`].
pub fn imul(size: u32, a: u64, b: u64, old_flags: u64) -> (u64, u64, u64) {
    let _ = old_flags;
    let w = width(size);
    let m = mask(w);
    let sa = sign_extend(a & m, w) as i64 as i128;
    let sb = sign_extend(b & m, w) as i64 as i128;
    let p = sa * sb; // |p| <= 2^126: no overflow.
    let low = p as u64 & m;
    let high = (p >> w) as u64 & m;
    let overflow = p != sign_extend(low, w) as i64 as i128;
    (low, high, mul_flags(w, low, overflow))
}

/// Flags after MUL/IMUL (Intel behaviour for the undefined ones).
fn mul_flags(w: u32, low: u64, overflow: bool) -> u64 {
    flag(overflow, CF | OF) | (szp(w, low) & (SF | PF))
}

/// DIV: dividend = high:low (size*2 bits) / divisor → Some((quotient, remainder)) or None for
/// #DE (divide by zero or quotient overflow). All flags are undefined after DIV.
pub fn div(size: u32, high: u64, low: u64, divisor: u64) -> Option<(u64, u64)> {
    let w = width(size);
    let m = mask(w);
    let d = (divisor & m) as u128;
    if d == 0 {
        return None;
    }
    let n = ((high & m) as u128) << w | (low & m) as u128;
    let q = n / d;
    if q > m as u128 {
        return None;
    }
    Some((q as u64, (n % d) as u64))
}

/// IDIV: signed division of high:low (size*2 bits) by divisor → Some((quotient, remainder))
/// (quotient truncated toward zero, remainder with the dividend's sign, both truncated to
/// size) or None for #DE (divide by zero or quotient out of the signed range of size).
pub fn idiv(size: u32, high: u64, low: u64, divisor: u64) -> Option<(u64, u64)> {
    let w = width(size);
    let m = mask(w);
    let raw = ((high & m) as u128) << w | (low & m) as u128;
    let s = 128 - 2 * w;
    let n = ((raw << s) as i128) >> s;
    let d = sign_extend(divisor & m, w) as i64 as i128;
    let q = n.checked_div(d)?;
    let r = n.checked_rem(d)?;
    let lim = 1i128 << (w - 1);
    if q < -lim || q >= lim {
        return None;
    }
    Some((q as u64 & m, r as u64 & m))
}

/// DAA (decimal adjust AL after addition) per the SDM pseudo-code: (new AL, flags). CF and AF
/// as the SDM says, SF/ZF/PF from the result. OF is undefined; Intel clears it and so does
/// this function.
pub fn daa(al: u8, old_flags: u64) -> (u8, u64) {
    let old_cf = old_flags & CF != 0;
    let mut r = al;
    let af = al & 0x0f > 9 || old_flags & AF != 0;
    if af {
        // The SDM's CF from this step is always overwritten below: a carry out of AL + 6
        // needs AL > 0xf9, which also takes the second branch.
        r = r.wrapping_add(6);
    }
    let cf = al > 0x99 || old_cf;
    if cf {
        r = r.wrapping_add(0x60);
    }
    // OF (undefined) = 0.
    let f = szp(8, r as u64) | flag(cf, CF) | flag(af, AF);
    (r, merge(old_flags, STATUS, f))
}

/// DAS (decimal adjust AL after subtraction) per the SDM pseudo-code: (new AL, flags). CF and
/// AF as the SDM says, SF/ZF/PF from the result. OF is undefined; Intel clears it and so does
/// this function.
pub fn das(al: u8, old_flags: u64) -> (u8, u64) {
    let old_cf = old_flags & CF != 0;
    let mut r = al;
    let mut cf = false;
    let af;
    if al & 0x0f > 9 || old_flags & AF != 0 {
        let (v, b) = r.overflowing_sub(6);
        r = v;
        cf = old_cf || b;
        af = true;
    } else {
        af = false;
    }
    if al > 0x99 || old_cf {
        r = r.wrapping_sub(0x60);
        cf = true;
    }
    // OF (undefined) = 0.
    let f = szp(8, r as u64) | flag(cf, CF) | flag(af, AF);
    (r, merge(old_flags, STATUS, f))
}

/// AAA (ASCII adjust after addition) on AX per the SDM pseudo-code (AX ← AX + 106H when
/// adjusting; AL ← AL AND 0FH): (new AX, flags). CF = AF = adjusted. OF, SF, ZF, PF are
/// undefined; as on Intel, OF = SF = 0 and ZF/PF come from the new AL.
pub fn aaa(ax: u16, old_flags: u64) -> (u16, u64) {
    let al = ax as u8;
    let adjust = al & 0x0f > 9 || old_flags & AF != 0;
    let t = if adjust { ax.wrapping_add(0x106) } else { ax };
    let r = t & 0xff0f;
    let f = bcd_ascii_flags(al, adjust, true);
    (r, merge(old_flags, STATUS, f))
}

/// AAS (ASCII adjust after subtraction) on AX per the SDM pseudo-code (AX ← AX − 6, AH ← AH −
/// 1 when adjusting; AL ← AL AND 0FH): (new AX, flags). CF = AF = adjusted. OF, SF, ZF, PF
/// are undefined; as on Intel, OF = SF = 0 and ZF/PF come from the new AL.
pub fn aas(ax: u16, old_flags: u64) -> (u16, u64) {
    let al = ax as u8;
    let adjust = al & 0x0f > 9 || old_flags & AF != 0;
    let t = if adjust {
        ax.wrapping_sub(6).wrapping_sub(0x100)
    } else {
        ax
    };
    let r = t & 0xff0f;
    let f = bcd_ascii_flags(al, adjust, false);
    (r, merge(old_flags, STATUS, f))
}

/// Flags after AAA/AAS: CF = AF = adjust; ZF/PF from the new AL (its low nibble), SF = OF = 0.
fn bcd_ascii_flags(al: u8, adjust: bool, add_op: bool) -> u64 {
    let new_al = match (adjust, add_op) {
        (false, _) => al,
        (true, true) => al.wrapping_add(6),
        (true, false) => al.wrapping_sub(6),
    } & 0x0f;
    logic(8, new_al as u64) | flag(adjust, CF | AF)
}

/// AAM imm8: AH ← AL / base, AL ← AL mod base → Some((new AX, flags)), None for #DE when
/// base is 0. SF/ZF/PF from the new AL; OF, AF, CF are undefined and returned as 0 (as
/// Intel).
pub fn aam(al: u8, base: u8, old_flags: u64) -> Option<(u16, u64)> {
    if base == 0 {
        return None;
    }
    let q = al / base;
    let r = al % base;
    let f = logic(8, r as u64);
    Some((
        u16::from(q) << 8 | u16::from(r),
        merge(old_flags, STATUS, f),
    ))
}

/// AAD imm8: AL ← (AL + AH * base) AND FFH, AH ← 0; returns (new AX, flags). SF/ZF/PF from the
/// new AL; OF, AF, CF are undefined and returned as the 8-bit ADD of AL and (AH * base) would
/// set them (as Intel).
pub fn aad(ax: u16, base: u8, old_flags: u64) -> (u16, u64) {
    let al = ax as u8;
    let ah = (ax >> 8) as u8;
    let prod = ah.wrapping_mul(base);
    let (r, f) = add(8, al as u64, prod as u64, false);
    (r as u16, merge(old_flags, STATUS, f))
}

/// BSF: index of the lowest set bit of the low `size` bits of `v`. Returns (None, flags with
/// ZF=1) when that is 0 (the destination stays unchanged) else (Some(index), flags with ZF=0).
/// CF, OF, SF, AF, PF are undefined; as on Intel, CF = OF = SF = AF = 0 and PF is the parity
/// of the index (PF = 1 for a zero source).
pub fn bsf(size: u32, v: u64, old_flags: u64) -> (Option<u64>, u64) {
    let v = v & mask(size);
    if v == 0 {
        (None, merge(old_flags, STATUS, PF | ZF))
    } else {
        let i = u64::from(v.trailing_zeros());
        (Some(i), merge(old_flags, STATUS, logic(8, i) & PF))
    }
}

/// BSR: index of the highest set bit of the low `size` bits of `v`; same contract and flags as
/// [`bsf`].
pub fn bsr(size: u32, v: u64, old_flags: u64) -> (Option<u64>, u64) {
    let v = v & mask(size);
    if v == 0 {
        (None, merge(old_flags, STATUS, PF | ZF))
    } else {
        let i = u64::from(63 - v.leading_zeros());
        (Some(i), merge(old_flags, STATUS, logic(8, i) & PF))
    }
}

/// POPCNT: (number of set bits in the low `size` bits, flags). ZF = (source == 0); CF, OF,
/// SF, AF, PF are cleared.
pub fn popcnt(size: u32, v: u64) -> (u64, u64) {
    let v = v & mask(size);
    (u64::from(v.count_ones()), flag(v == 0, ZF))
}

/// LZCNT: (number of leading zero bits of the low `size` bits, flags). CF = (source == 0),
/// ZF = (result == 0). OF, SF, AF, PF are undefined; Intel clears them and so does this.
/// (Without the LZCNT feature the encoding executes as BSR; that is the decoder's business.)
pub fn lzcnt(size: u32, v: u64) -> (u64, u64) {
    let w = width(size);
    let v = v & mask(w);
    let n = u64::from(v.leading_zeros() - (64 - w));
    (n, flag(v == 0, CF) | flag(n == 0, ZF))
}

/// TZCNT: (number of trailing zero bits of the low `size` bits, `size` if 0, flags). CF =
/// (source == 0), ZF = (result == 0). OF, SF, AF, PF are undefined; Intel clears them and so
/// does this. (Without BMI1 the encoding executes as BSF; that is the decoder's business.)
pub fn tzcnt(size: u32, v: u64) -> (u64, u64) {
    let w = width(size);
    let v = v & mask(w);
    let n = if v == 0 {
        u64::from(w)
    } else {
        u64::from(v.trailing_zeros())
    };
    (n, flag(v == 0, CF) | flag(n == 0, ZF))
}

/// Bit-test operations (BT, BTS, BTR, BTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitOp {
    /// BT: only test.
    Test,
    /// BTS: test and set.
    Set,
    /// BTR: test and reset.
    Reset,
    /// BTC: test and complement.
    Complement,
}

/// BT/BTS/BTR/BTC on a register-sized value with the bit offset already reduced modulo the
/// operand size (it is taken modulo 64 here): (new value, flags with CF = old bit; the other
/// flags unchanged from `old_flags` — OF/SF/AF/PF are undefined, Intel leaves them unchanged).
pub fn bit(op: BitOp, value: u64, bit: u32, old_flags: u64) -> (u64, u64) {
    let b = 1u64 << (bit & 63);
    let old = value & b != 0;
    let r = match op {
        BitOp::Test => value,
        BitOp::Set => value | b,
        BitOp::Reset => value & !b,
        BitOp::Complement => value ^ b,
    };
    (r, merge(old_flags, CF, flag(old, CF)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [u32; 4] = [8, 16, 32, 64];

    #[test]
    fn helpers() {
        assert_eq!(mask(8), 0xff);
        assert_eq!(mask(16), 0xffff);
        assert_eq!(mask(32), 0xffff_ffff);
        assert_eq!(mask(64), u64::MAX);
        assert_eq!(mask(7), u64::MAX); // other sizes are 64-bit
        assert_eq!(sign_bit(8), 0x80);
        assert_eq!(sign_bit(0), 1 << 63);
        assert_eq!(sign_extend(0x80, 8), 0xffff_ffff_ffff_ff80);
        assert_eq!(sign_extend(0x7fff, 16), 0x7fff);
        assert_eq!(sign_extend(0x1_8000_0000, 32), 0xffff_ffff_8000_0000);
        assert_eq!(
            sign_extend(0x8000_0000_0000_0000, 64),
            0x8000_0000_0000_0000
        );
        assert!(parity(0));
        assert!(parity(0x03));
        assert!(!parity(0x01));
        assert!(parity(0x100)); // only the low byte counts
        assert_eq!(szp(8, 0x100), ZF | PF);
        assert_eq!(szp(16, 0x8001), SF);
        assert_eq!(szp(32, 0x8001), 0);
        assert_eq!(szp(64, 0x8000_0000_0000_0003), SF | PF);
    }

    #[test]
    fn add_flags() {
        assert_eq!(add(8, 0x7f, 1, false), (0x80, SF | AF | OF));
        assert_eq!(add(8, 0xff, 1, false), (0, CF | PF | AF | ZF));
        assert_eq!(add(8, 0xff, 0xff, true), (0xff, CF | PF | AF | SF));
        assert_eq!(add(8, 0x80, 0x80, false), (0, CF | PF | ZF | OF));
        assert_eq!(add(16, 0x7fff, 0, true), (0x8000, PF | AF | SF | OF));
        assert_eq!(add(32, 1, 2, false), (3, PF));
        assert_eq!(
            add(64, u64::MAX, u64::MAX, true),
            (u64::MAX, CF | PF | AF | SF)
        );
        // Inputs wider than the size are truncated first.
        assert_eq!(add(8, 0x1ff, 0x100, false), (0xff, PF | SF));
    }

    #[test]
    fn sub_flags() {
        assert_eq!(sub(8, 0, 1, false), (0xff, CF | PF | AF | SF));
        assert_eq!(sub(8, 0x80, 1, false), (0x7f, AF | OF));
        assert_eq!(sub(8, 0x7f, 0xff, false), (0x80, CF | SF | OF));
        assert_eq!(sub(8, 0, 0xff, true), (0, CF | PF | AF | ZF));
        assert_eq!(sub(8, 5, 5, false), (0, PF | ZF));
        assert_eq!(sub(16, 0x10, 0, true), (0xf, PF | AF));
        assert_eq!(sub(64, 0, 0, true), (u64::MAX, CF | PF | AF | SF));
        assert_eq!(sub(64, 1 << 63, 1, false), ((1 << 63) - 1, PF | AF | OF));
    }

    #[test]
    fn logic_inc_dec_neg() {
        assert_eq!(logic(8, 0), PF | ZF);
        assert_eq!(logic(32, 0x8000_0001), SF);
        for cf in [0, CF] {
            assert_eq!(inc(8, 0x7f, cf | ZF), (0x80, cf | SF | AF | OF));
            assert_eq!(inc(8, 0xff, cf), (0, cf | PF | AF | ZF));
            assert_eq!(dec(8, 0x80, cf), (0x7f, cf | AF | OF));
            assert_eq!(dec(16, 0, cf), (0xffff, cf | PF | AF | SF));
            assert_eq!(dec(64, 1, cf | OF), (0, cf | PF | ZF));
        }
        assert_eq!(neg(8, 0), (0, PF | ZF));
        assert_eq!(neg(8, 1), (0xff, CF | PF | AF | SF));
        assert_eq!(neg(8, 0x80), (0x80, CF | SF | OF));
        assert_eq!(neg(64, 1 << 63), (1 << 63, CF | PF | SF | OF));
        assert_eq!(neg(32, 0x10), (0xffff_fff0, CF | PF | SF));
    }

    const OPS: [Shift; 8] = [
        Shift::Rol,
        Shift::Ror,
        Shift::Rcl,
        Shift::Rcr,
        Shift::Shl,
        Shift::Shr,
        Shift::Sal,
        Shift::Sar,
    ];

    #[test]
    fn shift_count_zero_after_masking() {
        for op in OPS {
            for size in SIZES {
                let counts: &[u8] = if size == 64 {
                    &[0, 64, 128, 192]
                } else {
                    &[0, 32, 64, 96, 224]
                };
                for &c in counts {
                    for f in [0, STATUS, CF | OF, 0x202 | AF] {
                        assert_eq!(
                            shift(op, size, 0x1234_5678_9abc_def1, c, f),
                            (0x1234_5678_9abc_def1 & mask(size), f),
                            "{op:?} {size} {c}"
                        );
                    }
                }
            }
        }
        // 64-bit counts 32..63 are not masked away.
        assert_eq!(shift(Shift::Shl, 64, 1, 32, 0).0, 1 << 32);
        assert_eq!(shift(Shift::Shl, 32, 1, 32, 0).0, 1);
    }

    #[test]
    fn shl_shr_sar() {
        // Count 1.
        assert_eq!(shift(Shift::Shl, 8, 0x81, 1, 0), (0x02, CF | OF));
        assert_eq!(shift(Shift::Shl, 8, 0x40, 1, CF), (0x80, SF | OF));
        assert_eq!(shift(Shift::Sal, 8, 0xc0, 1, 0), (0x80, CF | SF));
        assert_eq!(shift(Shift::Shr, 8, 0x81, 1, 0), (0x40, CF | OF));
        assert_eq!(shift(Shift::Shr, 16, 0x0003, 1, OF), (1, CF));
        assert_eq!(shift(Shift::Sar, 8, 0x81, 1, OF), (0xc0, CF | SF | PF));
        // Width - 1.
        assert_eq!(shift(Shift::Shl, 32, 3, 31, 0), (0x8000_0000, CF | SF | PF));
        assert_eq!(shift(Shift::Shr, 64, 1 << 63, 63, 0).0, 1);
        assert_eq!(shift(Shift::Sar, 16, 0x8000, 15, 0), (0xffff, SF | PF));
        // Width (8/16-bit: not masked away).
        assert_eq!(shift(Shift::Shl, 8, 0x01, 8, 0), (0, CF | PF | ZF));
        assert_eq!(shift(Shift::Shr, 8, 0x80, 8, 0), (0, CF | PF | ZF | OF));
        assert_eq!(shift(Shift::Shl, 16, 0xfffe, 16, 0), (0, PF | ZF));
        assert_eq!(shift(Shift::Sar, 8, 0x80, 8, 0), (0xff, CF | PF | SF));
        // Beyond the width.
        assert_eq!(shift(Shift::Shl, 8, 0xff, 9, 0), (0, PF | ZF));
        assert_eq!(shift(Shift::Shr, 16, 0xffff, 31, 0), (0, PF | ZF | OF));
        assert_eq!(shift(Shift::Sar, 8, 0x7f, 31, STATUS), (0, PF | ZF));
        assert_eq!(shift(Shift::Sar, 16, 0x8000, 20, 0), (0xffff, CF | PF | SF));
        // Multi-bit SHL: OF from the first step (bits 7 and 6 of the value).
        assert_eq!(shift(Shift::Shl, 8, 0x3f, 2, 0), (0xfc, PF | SF));
        // Only the status flags are replaced.
        assert_eq!(shift(Shift::Shl, 8, 1, 1, 0x202).1, 0x202);
    }

    #[test]
    fn rotates() {
        assert_eq!(shift(Shift::Rol, 8, 0x81, 1, 0), (0x03, CF | OF));
        assert_eq!(shift(Shift::Rol, 8, 0x40, 1, STATUS), (0x80, STATUS & !CF));
        assert_eq!(shift(Shift::Ror, 8, 0x01, 1, 0), (0x80, CF | OF));
        assert_eq!(shift(Shift::Ror, 8, 0x02, 1, CF), (0x01, 0));
        // Rotates leave SF/ZF/AF/PF alone.
        assert_eq!(
            shift(Shift::Rol, 16, 0, 3, SF | ZF | AF | PF | CF),
            (0, SF | ZF | AF | PF)
        );
        // Count = width: value unchanged, CF still set.
        assert_eq!(shift(Shift::Rol, 8, 0x01, 8, 0), (0x01, CF));
        assert_eq!(shift(Shift::Ror, 8, 0x01, 8, 0), (0x01, OF));
        assert_eq!(shift(Shift::Ror, 16, 0x8000, 16, 0), (0x8000, CF | OF));
        assert_eq!(
            shift(Shift::Rol, 64, 0x8000_0000_0000_0001, 63, 0),
            (0xc000_0000_0000_0000, OF)
        );
        assert_eq!(shift(Shift::Ror, 16, 0x1234, 20, 0), (0x4123, 0));
    }

    #[test]
    fn rotates_through_carry() {
        assert_eq!(shift(Shift::Rcl, 8, 0x80, 1, 0), (0x00, CF | OF));
        assert_eq!(shift(Shift::Rcl, 8, 0x00, 1, CF), (0x01, 0));
        assert_eq!(shift(Shift::Rcr, 8, 0x01, 1, 0), (0x00, CF));
        assert_eq!(shift(Shift::Rcr, 8, 0x00, 1, CF), (0x80, OF));
        // 9-bit rotation (CF:value): count 8 is a right rotation by 1.
        assert_eq!(shift(Shift::Rcl, 8, 0x01, 8, CF), (0x80, CF));
        assert_eq!(shift(Shift::Rcr, 8, 0x80, 8, CF), (0x01, CF));
        // Count 9 (8-bit) and 17 (16-bit): full circle, nothing changes.
        assert_eq!(shift(Shift::Rcl, 8, 0x5a, 9, CF | OF), (0x5a, CF | OF));
        assert_eq!(shift(Shift::Rcr, 16, 0x5a5a, 17, 0), (0x5a5a, 0));
        assert_eq!(shift(Shift::Rcl, 8, 0x5a, 27, CF), (0x5a, CF));
        // Count 18 on 16-bit is 1.
        assert_eq!(shift(Shift::Rcl, 16, 0x8000, 18, 0), (0, CF | OF));
        // 32/64-bit: no modulo; count 31 / 63 within the 33/65-bit ring.
        assert_eq!(
            shift(Shift::Rcl, 32, 1, 31, CF),
            (0x8000_0000 | 0x4000_0000, 0)
        );
        assert_eq!(shift(Shift::Rcr, 64, 0, 63, CF), (2, OF));
        assert_eq!(shift(Shift::Rcr, 32, 1, 1, CF), (0x8000_0000, CF | OF));
        // Against a bit-by-bit model of the SDM loop.
        for size in SIZES {
            for v in [0u64, 1, 0x80, 0x8001, 0xdead_beef, 0x8000_0000_0000_0001] {
                for cf in [false, true] {
                    for count in 0..=70u8 {
                        let c = u32::from(count & if size == 64 { 0x3f } else { 0x1f });
                        let t = match size {
                            8 => c % 9,
                            16 => c % 17,
                            _ => c,
                        };
                        let (mut l, mut lc) = (v & mask(size), cf);
                        let (mut r, mut rc) = (v & mask(size), cf);
                        for _ in 0..t {
                            let out = msb(size, l);
                            l = ((l << 1) | lc as u64) & mask(size);
                            lc = out;
                            let out = r & 1 != 0;
                            r = (r >> 1) | flag(rc, sign_bit(size));
                            rc = out;
                        }
                        let f = flag(cf, CF);
                        let (gl, fl) = shift(Shift::Rcl, size, v, count, f);
                        let (gr, fr) = shift(Shift::Rcr, size, v, count, f);
                        assert_eq!((gl, fl & CF != 0), (l, lc), "rcl{size} {v:#x} {count} {cf}");
                        assert_eq!((gr, fr & CF != 0), (r, rc), "rcr{size} {v:#x} {count} {cf}");
                    }
                }
            }
        }
    }

    #[test]
    fn double_shifts() {
        assert_eq!(shld(16, 0x8001, 0xc000, 1, 0), (0x0003, CF | PF | OF));
        assert_eq!(shld(32, 0x1234_5678, 0x9abc_def0, 8, 0).0, 0x3456_789a);
        assert_eq!(
            shld(64, 1, 0x8000_0000_0000_0000, 63, 0).0,
            0xc000_0000_0000_0000
        );
        assert_eq!(shld(16, 0x1234, 0xabcd, 16, 0), (0xabcd, SF));
        assert_eq!(shrd(16, 0x8001, 0x0001, 1, 0), (0xc000, CF | PF | SF));
        assert_eq!(shrd(32, 0x1234_5678, 0x9abc_def0, 8, 0).0, 0xf012_3456);
        assert_eq!(shrd(64, 0x8000_0000_0000_0000, 1, 63, 0).0, 3);
        assert_eq!(shrd(16, 0x1234, 0xabcd, 16, 0), (0xabcd, SF | OF));
        // Count 0 after masking.
        assert_eq!(shld(32, 5, 6, 32, STATUS), (5, STATUS));
        assert_eq!(shrd(64, 5, 6, 64, 0), (5, 0));
        // 16-bit counts > 16 (Intel: dst:src:dst).
        assert_eq!(shld(16, 0x1234, 0xabcd, 20, 0).0, 0xbcd1);
        assert_eq!(shrd(16, 0x1234, 0xabcd, 20, 0).0, 0x4abc);
    }

    #[test]
    fn multiply() {
        assert_eq!(mul(8, 0xff, 0xff, 0), (0x01, 0xfe, CF | OF));
        assert_eq!(mul(8, 0x10, 0x0f, STATUS), (0xf0, 0, SF | PF));
        assert_eq!(mul(16, 0, 0x1234, 0), (0, 0, PF));
        assert_eq!(mul(64, u64::MAX, u64::MAX, 0), (1, u64::MAX - 1, CF | OF));
        assert_eq!(imul(8, 0xff, 0xff, 0), (1, 0, 0));
        assert_eq!(imul(8, 0x80, 0xff, 0), (0x80, 0, CF | OF | SF));
        assert_eq!(imul(8, 0x80, 0x01, 0), (0x80, 0xff, SF));
        assert_eq!(imul(16, 0x100, 0x80, 0), (0x8000, 0, CF | OF | SF | PF));
        assert_eq!(imul(32, 0xffff_ffff, 5, 0), (0xffff_fffb, 0xffff_ffff, SF));
        assert_eq!(
            imul(64, 1 << 63, u64::MAX, 0),
            (1 << 63, 0, CF | OF | SF | PF)
        );
    }

    #[test]
    fn divide() {
        for size in SIZES {
            let m = mask(size);
            let s = sign_bit(size);
            assert_eq!(div(size, 0, 7, 0), None);
            assert_eq!(idiv(size, 0, 7, 0), None);
            assert_eq!(div(size, 0, 7, 2), Some((3, 1)));
            // Quotient overflow.
            assert_eq!(div(size, 1, 0, 1), None);
            assert_eq!(div(size, 0, m, 1), Some((m, 0)));
            assert_eq!(div(size, 1, 0, 2), Some((s, 0)));
            assert_eq!(div(size, m - 1, m, m), Some((m, m - 1)));
            assert_eq!(div(size, m, 0, m), None);
            // MIN / -1.
            assert_eq!(idiv(size, m, s, m), None, "idiv{size} MIN/-1");
            // Signed: truncation toward zero, remainder has the dividend's sign.
            assert_eq!(idiv(size, m, m - 6, 2), Some((m - 2, m)));
            assert_eq!(idiv(size, 0, 7, m - 1), Some((m - 2, 1)));
            // Quotient exactly MIN is fine; MAX + 1 is not.
            assert_eq!(idiv(size, m, s, 1), Some((s, 0)));
            assert_eq!(idiv(size, 0, s, 1), None);
            assert_eq!(idiv(size, m, 0, 2), Some((s, 0)));
        }
        assert_eq!(idiv(8, 0xff, 0x00, 0x02), Some((0x80, 0))); // -256 / 2 = -128
        assert_eq!(idiv(64, 1 << 63, 0, u64::MAX), None); // i128::MIN / -1
        assert_eq!(idiv(64, 1 << 63, 0, 1), None);
        assert_eq!(idiv(16, 0, 0x1234, 0x10), Some((0x123, 4)));
        // Extra high bits of the inputs are ignored.
        assert_eq!(div(8, 0xff00, 0xff07, 0x102), Some((3, 1)));
    }

    /// DAA exactly as the SDM pseudo-code (returns AL, CF, AF).
    #[allow(unused_assignments)]
    fn sdm_daa(al: u8, cf: bool, af: bool) -> (u8, bool, bool) {
        let old_al = al;
        let old_cf = cf;
        let mut al = al;
        let mut cf;
        let af = if (al & 0x0f) > 9 || af {
            let (v, c) = al.overflowing_add(6);
            al = v;
            cf = old_cf || c;
            true
        } else {
            false
        };
        if old_al > 0x99 || old_cf {
            al = al.wrapping_add(0x60);
            cf = true;
        } else {
            cf = false;
        }
        (al, cf, af)
    }

    /// DAS exactly as the SDM pseudo-code.
    fn sdm_das(al: u8, cf: bool, af: bool) -> (u8, bool, bool) {
        let old_al = al;
        let old_cf = cf;
        let mut al = al;
        let mut cf = false;
        let af = if (al & 0x0f) > 9 || af {
            let (v, b) = al.overflowing_sub(6);
            al = v;
            cf = old_cf || b;
            true
        } else {
            false
        };
        if old_al > 0x99 || old_cf {
            al = al.wrapping_sub(0x60);
            cf = true;
        }
        (al, cf, af)
    }

    #[test]
    fn daa_das_vs_sdm() {
        for al in 0..=255u8 {
            for f in [0, CF, AF, CF | AF, STATUS, STATUS & !CF, ZF | OF] {
                let (cf, af) = (f & CF != 0, f & AF != 0);
                for (name, got, want) in [
                    ("daa", daa(al, f), sdm_daa(al, cf, af)),
                    ("das", das(al, f), sdm_das(al, cf, af)),
                ] {
                    let (r, fl) = got;
                    let (wr, wcf, waf) = want;
                    let want_flags = szp(8, wr as u64) | flag(wcf, CF) | flag(waf, AF);
                    assert_eq!((r, fl), (wr, want_flags), "{name} al={al:#x} f={f:#x}");
                }
            }
        }
        // SDM examples: 79H + 35H = AEH, DAA → 14H, CF=1, AF=1.
        assert_eq!(daa(0xae, 0), (0x14, CF | AF | PF));
        // 35H − 47H = EEH (CF=1, AF=1), DAS → 88H, CF=1, AF=1.
        assert_eq!(das(0xee, CF | AF), (0x88, CF | AF | SF | PF));
        // 99 + 1 = 9AH → 00, CF.
        assert_eq!(daa(0x9a, 0), (0x00, CF | AF | ZF | PF));
        // Non-status bits of old_flags survive.
        assert_eq!(daa(0x12, 0x202).1 & !STATUS, 0x202);
    }

    #[test]
    fn aaa_aas_vs_sdm() {
        for ax in (0..=0xffffu16)
            .step_by(7)
            .chain([0x00ff, 0xff0a, 0xfffa, 0x0109, 0xff00])
        {
            for f in [0, AF, CF, STATUS] {
                let al = ax as u8;
                let adjust = al & 0x0f > 9 || f & AF != 0;
                // AAA: AX ← AX + 106H; AL ← AL AND 0FH.
                let want = if adjust { ax.wrapping_add(0x106) } else { ax } & 0xff0f;
                let (r, fl) = aaa(ax, f);
                assert_eq!(r, want, "aaa {ax:#x} {f:#x}");
                assert_eq!(fl & (CF | AF), flag(adjust, CF | AF));
                assert_eq!(
                    fl & (ZF | PF | SF | OF),
                    szp(8, want as u64 & 0xff) & (ZF | PF)
                );
                // AAS: AX ← AX − 6; AH ← AH − 1; AL ← AL AND 0FH.
                let want = if adjust {
                    let t = ax.wrapping_sub(6);
                    (t & 0xff) | (((t >> 8) as u8).wrapping_sub(1) as u16) << 8
                } else {
                    ax
                } & 0xff0f;
                let (r, fl) = aas(ax, f);
                assert_eq!(r, want, "aas {ax:#x} {f:#x}");
                assert_eq!(fl & (CF | AF), flag(adjust, CF | AF));
                assert_eq!(
                    fl & (ZF | PF | SF | OF),
                    szp(8, want as u64 & 0xff) & (ZF | PF)
                );
            }
        }
        // AL + 6 carrying into AH: AX+106H gives AH + 2 (not AH + 1).
        assert_eq!(aaa(0x00fa, 0).0, 0x0200);
        // '8' + '9' = 71H; with AF set from the ADD, AAA → 0107H.
        assert_eq!(aaa(0x0071, AF).0, 0x0107);
        // AAS borrow: AL = 0 with AF → AH − 1 and a borrow from AL − 6: FEH : 0AH.
        assert_eq!(aas(0x0000, AF).0, 0xfe0a);
        assert_eq!(aas(0x0205, 0), (0x0205, PF));
    }

    #[test]
    fn aam_aad() {
        assert_eq!(aam(0x4f, 0, STATUS), None);
        assert_eq!(aam(79, 10, STATUS), Some((0x0709, PF)));
        assert_eq!(aam(0, 10, 0), Some((0, ZF | PF)));
        assert_eq!(aam(0xff, 16, 0), Some((0x0f0f, PF)));
        assert_eq!(aam(200, 1, 0), Some((200 << 8, ZF | PF)));
        assert_eq!(aad(0x0709, 10, STATUS), (79, 0));
        assert_eq!(aad(0x0000, 10, 0), (0, ZF | PF));
        // AL + AH*base overflowing 8 bits: the carry/overflow flags of that byte add.
        assert_eq!(aad(0x19f0, 10, 0), (0xea, CF | SF)); // 0xf0 + 0xfa (250)
        assert_eq!(aad(0x0780, 0x10, 0), (0xf0, SF | PF));
        assert_eq!(aad(0xff7f, 0, 0), (0x7f, 0));
        for al in 0..=255u8 {
            for base in 1..=255u8 {
                let (ax, _) = aam(al, base, 0).unwrap();
                assert_eq!(ax, u16::from(al / base) << 8 | u16::from(al % base));
            }
        }
    }

    #[test]
    fn bit_scans_and_counts() {
        assert_eq!(bsf(32, 0, STATUS & !ZF), (None, ZF | PF));
        assert_eq!(bsr(16, 0x1_0000, 0), (None, ZF | PF)); // only the low 16 bits count
        assert_eq!(bsf(16, 0x8000, ZF), (Some(15), PF));
        assert_eq!(bsf(64, 0x10, STATUS), (Some(4), 0));
        assert_eq!(bsr(64, u64::MAX, 0), (Some(63), PF));
        assert_eq!(bsr(32, 1, 0), (Some(0), PF));
        assert_eq!(bsr(8, 0x40, 0).0, Some(6));
        assert_eq!(popcnt(16, 0), (0, ZF));
        assert_eq!(popcnt(32, 0x1_ffff_ffff), (32, 0));
        assert_eq!(popcnt(64, u64::MAX), (64, 0));
        assert_eq!(lzcnt(16, 0), (16, CF));
        assert_eq!(lzcnt(32, 0x8000_0000), (0, ZF));
        assert_eq!(lzcnt(64, 1), (63, 0));
        assert_eq!(tzcnt(64, 0), (64, CF));
        assert_eq!(tzcnt(16, 1), (0, ZF));
        assert_eq!(tzcnt(32, 0x8000_0000), (31, 0));
    }

    #[test]
    fn bit_ops() {
        assert_eq!(bit(BitOp::Test, 0b100, 2, 0), (0b100, CF));
        assert_eq!(bit(BitOp::Test, 0b100, 1, CF | ZF), (0b100, ZF));
        assert_eq!(
            bit(BitOp::Set, 0, 63, STATUS & !CF),
            (1 << 63, STATUS & !CF)
        );
        assert_eq!(bit(BitOp::Reset, u64::MAX, 0, 0), (u64::MAX - 1, CF));
        assert_eq!(bit(BitOp::Complement, 0b10, 1, 0), (0, CF));
        assert_eq!(bit(BitOp::Complement, 0, 1, CF), (0b10, 0));
        // Offsets are taken modulo 64 (no panic).
        assert_eq!(bit(BitOp::Set, 0, 64 + 3, 0), (8, 0));
    }

    #[test]
    fn no_panic_on_any_size_or_count() {
        let vals = [0u64, 1, 0x7f, 0x80, 0xffff, 1 << 31, 1 << 63, u64::MAX];
        for size in [0u32, 1, 7, 8, 9, 16, 31, 32, 33, 63, 64, 65, 128, u32::MAX] {
            let _ = (mask(size), sign_bit(size), szp(size, u64::MAX));
            for &a in &vals {
                let _ = (sign_extend(a, size), logic(size, a), neg(size, a));
                let _ = (inc(size, a, STATUS), dec(size, a, 0), popcnt(size, a));
                let _ = (
                    lzcnt(size, a),
                    tzcnt(size, a),
                    bsf(size, a, 0),
                    bsr(size, a, 0),
                );
                for &b in &vals {
                    let _ = (add(size, a, b, true), sub(size, a, b, true));
                    let _ = (mul(size, a, b, 0), imul(size, a, b, 0));
                    for &c in &vals {
                        let _ = (div(size, a, b, c), idiv(size, a, b, c));
                    }
                    for count in 0..=255u8 {
                        let _ = (shld(size, a, b, count, CF), shrd(size, a, b, count, 0));
                        for op in OPS {
                            let _ = shift(op, size, a, count, CF);
                        }
                    }
                }
                let _ = bit(BitOp::Complement, a, size, 0);
            }
        }
        for x in 0..=0xffffu16 {
            for f in [0, STATUS] {
                let _ = (daa(x as u8, f), das(x as u8, f), aaa(x, f), aas(x, f));
                let _ = (aam(x as u8, (x >> 8) as u8, f), aad(x, x as u8, f));
            }
        }
    }
}
