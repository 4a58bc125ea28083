//! Whole-machine save and restore on the software CPU: a firmware that prints an incrementing
//! counter (kept in RAM) on the serial port is paused, saved, and restored into new machines,
//! which continue the count exactly where the saved one stopped.

mod common;

use machine::{create_partition, Backend, IrqChipMode, Machine, MachineConfig, MachineEvent};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn config(firmware: &std::path::Path) -> MachineConfig {
    MachineConfig {
        memory_mib: 16,
        firmware: Some(firmware.to_path_buf()),
        ..MachineConfig::default()
    }
}

fn machine(config: MachineConfig, restore: Option<&std::path::Path>) -> Machine {
    let partition = create_partition(Backend::Emu, 1, IrqChipMode::Split).expect("partition");
    match restore {
        Some(dir) => Machine::restore(config, partition, dir).expect("restore"),
        None => Machine::new(config, partition).expect("machine"),
    }
}

/// Collects serial output until `lines` complete lines arrived or 60 s passed.
fn serial_lines(events: &std::sync::mpsc::Receiver<MachineEvent>, out: &mut String, lines: usize) {
    let end = Instant::now() + Duration::from_secs(60);
    while out.matches('\n').count() < lines && Instant::now() < end {
        if let Ok(MachineEvent::Serial(b)) = events.recv_timeout(Duration::from_millis(100)) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
}

/// The counter values in `text`, which must be consecutive from the first.
fn consecutive(text: &str) -> Vec<u32> {
    let values: Vec<u32> = text
        .lines()
        .map(|l| {
            u32::from_str_radix(l, 16).unwrap_or_else(|_| panic!("bad line {l:?} in {text:?}"))
        })
        .collect();
    for w in values.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the count jumped: {text:?}");
    }
    values
}

/// Drains serial output that arrived while the machine was pausing.
fn drain(events: &std::sync::mpsc::Receiver<MachineEvent>, out: &mut String) {
    std::thread::sleep(Duration::from_millis(50));
    while let Ok(e) = events.try_recv() {
        if let MachineEvent::Serial(b) = e {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
}

#[test]
fn a_restored_machine_continues_the_count_from_its_saved_state() {
    let dir = common::scratch("saved-state-counter");
    let firmware = dir.join("counter.bin");
    std::fs::write(&firmware, conformance::firmware::serial_counter()).unwrap();
    let saved = dir.join("state");

    let mut a = machine(config(&firmware), None);
    let events = a.take_events().unwrap();
    a.start().unwrap();
    let mut before = String::new();
    let t = Instant::now();
    serial_lines(&events, &mut before, 4);
    eprintln!("4 lines in {:?}: {before:?}", t.elapsed());
    a.pause();
    drain(&events, &mut before);
    a.save_state(&saved).unwrap();
    // The saved machine can go on: it is paused, not consumed.
    a.resume();
    let mut more = String::new();
    serial_lines(&events, &mut more, 2);
    a.power_off();
    a.wait();

    // Two reverts to the same state: each continues from the same count (the RAM file is
    // mapped privately and never changes).
    for round in 0..2 {
        let mut b = machine(config(&firmware), Some(&saved));
        let events = b.take_events().unwrap();
        b.start().unwrap();
        let mut after = String::new();
        serial_lines(&events, &mut after, 3);
        b.power_off();
        b.wait();
        let whole = format!("{before}{after}");
        let values = consecutive(
            whole
                .lines()
                .take(6)
                .collect::<Vec<_>>()
                .join("\n")
                .as_str(),
        );
        assert!(values.len() >= 6, "round {round}: {whole:?}");
    }
}

#[test]
fn a_background_save_holds_the_machine_as_it_was_when_paused() {
    let dir = common::scratch("saved-state-background");
    let firmware = dir.join("counter.bin");
    std::fs::write(&firmware, conformance::firmware::serial_counter()).unwrap();
    let saved = dir.join("state");

    let mut a = machine(config(&firmware), None);
    let events = a.take_events().unwrap();
    a.start().unwrap();
    let mut before = String::new();
    serial_lines(&events, &mut before, 4);
    a.pause();
    drain(&events, &mut before);
    let mut save = a.save_state_background(&saved).unwrap();
    // The machine runs on (and changes its counter in RAM) while the state is written.
    a.resume();
    let mut more = String::new();
    serial_lines(&events, &mut more, 3);
    while !save.is_ready() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (written, total) = save.progress();
    assert_eq!(written, total);
    save.finish().unwrap();
    let ram = std::fs::metadata(saved.join(machine::saved::RAM_FILE))
        .unwrap()
        .len();
    assert_eq!(ram, total);
    a.power_off();
    a.wait();

    let mut b = machine(config(&firmware), Some(&saved));
    let events = b.take_events().unwrap();
    b.start().unwrap();
    let mut after = String::new();
    serial_lines(&events, &mut after, 3);
    b.power_off();
    b.wait();
    // The restored count follows the last value printed before the pause, not the values
    // the machine printed while its state was being written.
    let whole = format!("{before}{after}");
    let values = consecutive(&whole.lines().take(7).collect::<Vec<_>>().join("\n"));
    assert!(values.len() >= 7, "{whole:?}");
    let later = consecutive(more.trim_end());
    assert!(
        later[0] > *consecutive(before.trim_end()).last().unwrap(),
        "{more:?}"
    );
}

#[test]
fn damaged_or_mismatched_saved_state_is_refused_clearly() {
    let dir = common::scratch("saved-state-refusals");
    let firmware = dir.join("counter.bin");
    std::fs::write(&firmware, conformance::firmware::serial_counter()).unwrap();
    let saved = dir.join("state");
    let mut a = machine(config(&firmware), None);
    a.start().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    a.pause();
    a.save_state(&saved).unwrap();
    a.power_off();
    a.wait();

    let partition = || create_partition(Backend::Emu, 1, IrqChipMode::Split).unwrap();
    // Another memory size.
    let mut bigger = config(&firmware);
    bigger.memory_mib = 32;
    let e = Machine::restore(bigger, partition(), &saved)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("16 MiB"), "{e}");
    // A truncated state file.
    let state = saved.join(machine::saved::STATE_FILE);
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() - 10]).unwrap();
    let e = Machine::restore(config(&firmware), partition(), &saved)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("state.bin"), "{e}");
    std::fs::write(&state, &bytes).unwrap();
    // A state written in another format version, older or newer.
    for version in [0u8, 2] {
        let mut other = bytes.clone();
        other[8] = version;
        std::fs::write(&state, &other).unwrap();
        let e = Machine::restore(config(&firmware), partition(), &saved)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("format"), "{e}");
    }
    std::fs::write(&state, &bytes).unwrap();
    // A RAM file of the wrong size.
    let ram = saved.join(machine::saved::RAM_FILE);
    let f = std::fs::OpenOptions::new().write(true).open(&ram).unwrap();
    f.set_len(1 << 20).unwrap();
    let e = Machine::restore(config(&firmware), partition(), &saved)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("ram.bin"), "{e}");
}

#[test]
fn seabios_screen_and_devices_survive_save_and_restore() {
    let dir = common::scratch("saved-state-seabios");
    let saved = dir.join("state");
    let cfg = || MachineConfig {
        memory_mib: 32,
        firmware: Some(common::seabios()),
        vga_bios: Some(common::assets().join("vgabios-stdvga.bin")),
        ..MachineConfig::default()
    };
    let mut a = machine(cfg(), None);
    a.start().unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let on_screen = |m: &Machine, text: &str| {
        m.text_screen()
            .is_some_and(|rows| rows.iter().any(|r| r.contains(text)))
    };
    while !on_screen(&a, "Booting from") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    a.pause();
    let screen = a.text_screen().expect("text mode");
    assert!(screen.iter().any(|r| r.contains("SeaBIOS")), "{screen:?}");
    a.save_state(&saved).unwrap();
    a.power_off();
    a.wait();

    // Before it runs a single instruction, the restored machine shows the same screen.
    let mut b = machine(cfg(), Some(&saved));
    assert_eq!(b.text_screen().expect("text mode"), screen);
    // And it runs on: SeaBIOS finishes its boot attempts on the restored devices.
    let events = b.take_events().unwrap();
    b.start().unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while !on_screen(&b, "No bootable device") && Instant::now() < end {
        if let Ok(MachineEvent::Off(reason)) = events.recv_timeout(Duration::from_millis(20)) {
            panic!("the restored machine stopped: {reason:?}");
        }
    }
    assert!(on_screen(&b, "No bootable device"), "{:?}", b.text_screen());
    b.power_off();
    b.wait();
}

/// A tmpfs of `mib` MiB at `dir`, unmounted when dropped; `None` where mounting is not allowed
/// (tests not run as root).
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &std::path::Path, mib: u32) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?
            .success();
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_during_save_keeps_the_machine_running_and_the_earlier_state_whole() {
    let dir = common::scratch("saved-state-full-disk");
    let firmware = dir.join("counter.bin");
    std::fs::write(&firmware, conformance::firmware::serial_counter()).unwrap();
    // Room for one 16 MiB machine state, not for a second one being written beside it.
    let Some(fs) = SmallFs::mount(&dir.join("small"), 24) else {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let saved = fs.0.join("state");

    let mut a = machine(config(&firmware), None);
    let events = a.take_events().unwrap();
    a.start().unwrap();
    let mut out = String::new();
    serial_lines(&events, &mut out, 3);
    a.pause();
    a.save_state(&saved).unwrap();
    let first = std::fs::read(saved.join(machine::saved::STATE_FILE)).unwrap();
    a.resume();
    serial_lines(&events, &mut out, 6);
    a.pause();
    let e = a.save_state(&saved).expect_err("the disk is full");
    assert!(e.to_string().contains("ram.bin"), "{e}");
    // Nothing of the failed save is left, the first state is untouched, the machine goes on.
    assert_eq!(
        std::fs::read(saved.join(machine::saved::STATE_FILE)).unwrap(),
        first
    );
    let names: Vec<_> = std::fs::read_dir(&saved)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // The same from a save in the background: the error names the file, nothing is left.
    let e = a
        .save_state_background(&saved)
        .and_then(|s| s.finish())
        .expect_err("the disk is full");
    assert!(e.to_string().contains("ram.bin"), "{e}");
    let names: Vec<_> = std::fs::read_dir(&saved)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        std::fs::read(saved.join(machine::saved::STATE_FILE)).unwrap(),
        first
    );
    a.resume();
    serial_lines(&events, &mut out, 8);
    a.power_off();
    a.wait();
    // The first state still restores.
    let mut b = machine(config(&firmware), Some(&saved));
    let events = b.take_events().unwrap();
    b.start().unwrap();
    let mut after = String::new();
    serial_lines(&events, &mut after, 2);
    b.power_off();
    b.wait();
    assert!(!after.is_empty());
    drop(fs);
}
