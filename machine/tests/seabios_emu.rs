//! SeaBIOS POST on the software CPU: banner, RAM size, CPU count (SMP bring-up through
//! INIT/SIPI) and the boot attempt on the debug port.

mod common;

use machine::{
    create_partition, Backend, IrqChipMode, Machine, MachineConfig, MachineEvent, OffReason,
};
use std::time::{Duration, Instant};

fn post(cpus: u32) {
    let config = MachineConfig {
        memory_mib: 128,
        cpus,
        firmware: Some(common::seabios()),
        ..MachineConfig::default()
    };
    let partition =
        create_partition(Backend::Emu, cpus, IrqChipMode::Split).expect("emu partition");
    let mut vm = Machine::new(config, partition).expect("machine");
    let events = vm.take_events().unwrap();
    vm.start().expect("start");
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log.contains("No bootable device") {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no boot attempt within 120 s; debug port said:\n{log}"
        );
        match events.recv_timeout(left) {
            Ok(MachineEvent::DebugPort(b)) => log.push_str(&String::from_utf8_lossy(&b)),
            Ok(MachineEvent::Off(r)) => panic!("machine turned off: {r:?}\n{log}"),
            _ => {}
        }
    }
    assert!(log.contains("SeaBIOS (version 1.16"), "{log}");
    assert!(log.contains("RamSize: 0x08000000"), "{log}");
    assert!(log.contains(&format!("Found {cpus} cpu(s)")), "{log}");
    assert!(log.contains("Booting from Hard Disk"), "{log}");
    vm.power_off();
    assert_eq!(vm.wait(), OffReason::Requested);
}

#[test]
fn post_one_cpu() {
    post(1);
}

#[test]
fn post_two_cpus() {
    post(2);
}
