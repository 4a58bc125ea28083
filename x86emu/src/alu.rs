//! Flag-exact integer arithmetic and logic, as pure functions.
//!
//! Sizes are operand widths in bits (8, 16, 32, 64). Inputs are zero-extended to 64 bits and
//! results are truncated to the width. Flags are returned in their RFLAGS bit positions; every
//! function documents which flags it defines. Undefined flags follow what Intel processors do
//! where that is documented by common practice, else they are left as in `old_flags`.

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
