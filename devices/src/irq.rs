//! Interrupt lines from devices to the interrupt router.

use std::sync::Arc;

/// Receives line level changes (the machine's interrupt router, or a test recorder).
pub trait LineSink: Send + Sync {
    /// Line `line` is now at `level` (true = asserted).
    fn set_line(&self, line: u32, level: bool);
}

/// One interrupt output of a device, wired to a line number (an ISA IRQ / GSI).
#[derive(Clone)]
pub struct IrqLine {
    sink: Arc<dyn LineSink>,
    line: u32,
}

impl std::fmt::Debug for IrqLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IrqLine({})", self.line)
    }
}

impl IrqLine {
    /// A line numbered `line` delivering to `sink`.
    pub fn new(sink: Arc<dyn LineSink>, line: u32) -> Self {
        Self { sink, line }
    }
    /// A line connected to nothing.
    pub fn disconnected() -> Self {
        struct Nowhere;
        impl LineSink for Nowhere {
            fn set_line(&self, _: u32, _: bool) {}
        }
        Self::new(Arc::new(Nowhere), 0)
    }
    /// The line number.
    pub fn number(&self) -> u32 {
        self.line
    }
    /// Drives the line to `level`.
    pub fn set_level(&self, level: bool) {
        self.sink.set_line(self.line, level)
    }
    /// Asserts then deasserts the line (an edge).
    pub fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// Records line levels; for unit tests of devices.
#[derive(Debug, Default)]
pub struct RecordingSink {
    levels: std::sync::Mutex<std::collections::BTreeMap<u32, bool>>,
    edges: std::sync::Mutex<Vec<(u32, bool)>>,
}

impl RecordingSink {
    /// Current level of `line` (false when never driven).
    pub fn level(&self, line: u32) -> bool {
        self.levels
            .lock()
            .unwrap()
            .get(&line)
            .copied()
            .unwrap_or(false)
    }
    /// Every change seen so far, in order; clears the record.
    pub fn take_changes(&self) -> Vec<(u32, bool)> {
        std::mem::take(&mut *self.edges.lock().unwrap())
    }
}

impl LineSink for RecordingSink {
    fn set_line(&self, line: u32, level: bool) {
        self.levels.lock().unwrap().insert(line, level);
        self.edges.lock().unwrap().push((line, level));
    }
}
