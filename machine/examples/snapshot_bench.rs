//! Take and revert of a whole machine's state, for `bench/snapshot.sh`.
//!
//! `snapshot_bench MIB ROUNDS DIR` runs `conformance::firmware::random_fill(MIB)` on the
//! software CPU until it has filled the guest's RAM with random data, then ROUNDS times: take
//! (pause, capture vCPUs and devices and start writing RAM from a copy-on-write snapshot into
//! DIR/state, resume), complete (the time from the pause until every file is synced and in
//! place) and revert (power the running machine off, build a new one from the saved state,
//! start it). Prints each round's times and the medians in milliseconds. `snapshot_bench --firmware MIB FILE` only writes the firmware
//! (so the QEMU side of the benchmark runs the same guest).

use machine::{create_partition, Backend, IrqChipMode, Machine, MachineConfig, MachineEvent};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn config(mib: u64, firmware: &Path) -> MachineConfig {
    MachineConfig {
        memory_mib: mib,
        firmware: Some(firmware.to_path_buf()),
        ..MachineConfig::default()
    }
}

fn build(mib: u64, firmware: &Path, restore: Option<&Path>) -> Machine {
    let partition = create_partition(Backend::Emu, 1, IrqChipMode::Split).expect("partition");
    let config = config(mib, firmware);
    match restore {
        Some(dir) => Machine::restore(config, partition, dir).expect("restore"),
        None => Machine::new(config, partition).expect("machine"),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--firmware") {
        let mib: u32 = args[1].parse().expect("MIB");
        std::fs::write(&args[2], conformance::firmware::random_fill(mib)).expect("write");
        return;
    }
    let [mib, rounds, dir] = args.as_slice() else {
        eprintln!("usage: snapshot_bench MIB ROUNDS DIR | --firmware MIB FILE");
        std::process::exit(2);
    };
    let mib: u64 = mib.parse().expect("MIB");
    let rounds: usize = rounds.parse().expect("ROUNDS");
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("folder");
    let firmware = dir.join("fill.bin");
    std::fs::write(&firmware, conformance::firmware::random_fill(mib as u32)).expect("write");
    let state = dir.join("state");

    let mut vm = build(mib, &firmware, None);
    let events = vm.take_events().expect("events");
    vm.start().expect("start");
    let started = Instant::now();
    let mut serial = String::new();
    while !serial.contains("FILLED") {
        match events.recv_timeout(Duration::from_secs(600)) {
            Ok(MachineEvent::Serial(b)) => serial.push_str(&String::from_utf8_lossy(&b)),
            Ok(MachineEvent::Off(r)) => panic!("the guest stopped: {r:?}"),
            Ok(_) => {}
            Err(_) => panic!("no FILLED within 600 s"),
        }
    }
    eprintln!(
        "guest RAM filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (mut takes, mut completes, mut reverts) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Take: the guest is stopped only while its state is captured; RAM is written from a
        // copy-on-write snapshot while it runs on, and the take is complete (every file
        // synced and in place) when `finish` returns.
        let t = Instant::now();
        vm.pause();
        let save = vm.save_state_background(&state).expect("save");
        vm.resume();
        let take = t.elapsed().as_secs_f64() * 1e3;
        save.finish().expect("finish");
        let complete = t.elapsed().as_secs_f64() * 1e3;

        std::thread::sleep(Duration::from_millis(200));
        // Revert: the running machine stops, the saved one runs. Unmapping the old machine's
        // RAM (about 0.1 s for 512 MiB of touched pages) happens on another thread, off the
        // path to the reverted guest running.
        let t = Instant::now();
        vm.power_off();
        vm.wait();
        let old = std::mem::replace(&mut vm, build(mib, &firmware, Some(&state)));
        std::thread::spawn(move || drop(old));
        vm.start().expect("start");
        let revert = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "round {round}: take {take:.1} ms (complete {complete:.1} ms), revert {revert:.1} ms"
        );
        takes.push(take);
        completes.push(complete);
        reverts.push(revert);
    }
    println!(
        "median: take {:.1} ms, revert {:.1} ms, complete {:.1} ms",
        median(&mut takes),
        median(&mut reverts),
        median(&mut completes)
    );
    vm.power_off();
    vm.wait();
}
