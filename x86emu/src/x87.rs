//! x87 floating point.

use crate::cpu::{Bus, Cpu, R};
use iced_x86::Instruction;

/// Executes `i` if it is an x87 instruction; `None` when it is not one.
pub(crate) fn execute(_cpu: &mut Cpu, _i: &Instruction, _bus: &mut dyn Bus) -> Option<R<()>> {
    None
}
