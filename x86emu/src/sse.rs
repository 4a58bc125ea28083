//! MMX, SSE and SSE2, FXSAVE/FXRSTOR and MXCSR.

use crate::cpu::{Bus, Cpu, R};
use iced_x86::Instruction;

/// Executes `i` if it is an MMX/SSE/SSE2/FXSAVE-family instruction; `None` when it is not one.
pub(crate) fn execute(_cpu: &mut Cpu, _i: &Instruction, _bus: &mut dyn Bus) -> Option<R<()>> {
    None
}
