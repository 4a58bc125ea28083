//! x86 instruction semantics.
//!
//! [`alu`] holds the flag-exact arithmetic and logic as pure functions. The CPU core decodes
//! with iced-x86 and executes against its register state and a [`Bus`] (physical memory, port
//! I/O). The software CPU backend runs whole guests on it; the WHP backend uses it to complete
//! MMIO and string I/O exits.
#![forbid(unsafe_code)]

pub mod alu;
mod asm;
mod block;
pub mod cache;
pub mod cpu;
pub mod cpuid;
mod exec;
pub mod interrupt;
pub mod mmu;
mod native;
mod sse;
pub mod state;
mod x87;

pub use cache::CodeTracker;
pub use cpu::{Bus, Cpu, Fault, RamRegion, Step};
pub use native::{NativeCode, NativeFrame};
pub use state::CpuState;
