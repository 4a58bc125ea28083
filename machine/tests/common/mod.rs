//! Helpers shared by the machine's integration tests.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use std::path::PathBuf;

/// The test asset folder (`scripts/fetch-assets.sh` fills it).
pub fn assets() -> PathBuf {
    std::env::var_os("TERRARIUM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/assets"))
}

/// SeaBIOS's bios.bin from the asset folder; fails with the fix when it is missing.
pub fn seabios() -> PathBuf {
    let p = assets().join("bios.bin");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

/// What a run printed and how it ended.
pub struct RunResult {
    /// How the machine turned off (`None`: still on at the time limit, then powered off).
    pub off: Option<machine::OffReason>,
    /// Everything the first serial port printed.
    pub serial: String,
}

/// Runs `config` on the software CPU until the machine turns off, `stop` returns true for the
/// serial output so far, or `limit` passes; then powers it off and waits for it.
pub fn run_emu(
    config: machine::MachineConfig,
    limit: std::time::Duration,
    stop: impl Fn(&str) -> bool,
) -> RunResult {
    use machine::{create_partition, Backend, IrqChipMode, Machine, MachineEvent};
    let partition =
        create_partition(Backend::Emu, config.cpus, IrqChipMode::Split).expect("emu partition");
    let mut vm = Machine::new(config, partition).expect("machine");
    let events = vm.take_events().expect("event stream");
    vm.start().expect("start");
    let deadline = std::time::Instant::now() + limit;
    let mut serial = Vec::new();
    let off = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stop(&String::from_utf8_lossy(&serial)) {
            break None;
        }
        match events.recv_timeout(left) {
            Ok(MachineEvent::Serial(b)) => serial.extend_from_slice(&b),
            Ok(MachineEvent::Off(reason)) => break Some(reason),
            _ => {}
        }
    };
    vm.power_off();
    vm.wait();
    RunResult {
        off,
        serial: String::from_utf8_lossy(&serial).into_owned(),
    }
}

/// A fresh folder for one test's files under the target directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}
