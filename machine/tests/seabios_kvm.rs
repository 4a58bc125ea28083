//! SeaBIOS POST on KVM: banner, RAM size, CPU count and the boot attempt on the debug port, in
//! both interrupt controller placements; plus pause, resume, reset and power-off on a live VM.
#![cfg(target_os = "linux")]

mod common;

use machine::{
    create_partition, Backend, IrqChipMode, Machine, MachineConfig, MachineEvent, OffReason,
    RunState,
};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

fn start(cpus: u32, irqchip: IrqChipMode) -> (Machine, Receiver<MachineEvent>) {
    let config = MachineConfig {
        memory_mib: 128,
        cpus,
        firmware: Some(common::seabios()),
        irqchip,
        ..MachineConfig::default()
    };
    let partition = create_partition(Backend::Kvm, cpus, irqchip).expect("KVM partition");
    let mut vm = Machine::new(config, partition).expect("machine");
    let events = vm.take_events().unwrap();
    vm.start().expect("start");
    (vm, events)
}

/// Collects debug-port text until `needle` has appeared `count` times (60 s at most).
fn debug_until(events: &Receiver<MachineEvent>, log: &mut String, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.matches(needle).count() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {needle:?} within 60 s; debug port said:\n{log}"
        );
        match events.recv_timeout(left) {
            Ok(MachineEvent::DebugPort(b)) => log.push_str(&String::from_utf8_lossy(&b)),
            Ok(MachineEvent::Off(r)) => panic!("machine turned off: {r:?}\n{log}"),
            Ok(_) => {}
            Err(_) => {}
        }
    }
}

fn post(cpus: u32, irqchip: IrqChipMode) {
    let (mut vm, events) = start(cpus, irqchip);
    let mut log = String::new();
    debug_until(&events, &mut log, "No bootable device", 1);
    assert!(log.contains("SeaBIOS (version 1.16"), "{log}");
    assert!(log.contains("RamSize: 0x08000000"), "{log}");
    assert!(log.contains(&format!("Found {cpus} cpu(s)")), "{log}");
    assert!(log.contains("Booting from Hard Disk"), "{log}");
    vm.power_off();
    assert_eq!(vm.wait(), OffReason::Requested);
}

#[test]
fn post_one_cpu_split_irqchip() {
    post(1, IrqChipMode::Split);
}

#[test]
fn post_two_cpus_split_irqchip() {
    post(2, IrqChipMode::Split);
}

#[test]
fn post_one_cpu_in_kernel_irqchip() {
    post(1, IrqChipMode::InKernel);
}

#[test]
fn post_two_cpus_in_kernel_irqchip() {
    post(2, IrqChipMode::InKernel);
}

#[test]
fn pause_resume_reset_power_off() {
    let (mut vm, events) = start(2, IrqChipMode::Split);
    let mut log = String::new();
    debug_until(&events, &mut log, "SeaBIOS (version", 1);
    vm.pause();
    assert_eq!(vm.state(), RunState::Paused);
    vm.resume();
    assert_eq!(vm.state(), RunState::Running);
    debug_until(&events, &mut log, "No bootable device", 1);
    // A reset runs POST again from the reset vector: the banner appears once more.
    let banners = log.matches("BUILD: gcc").count();
    vm.reset();
    debug_until(&events, &mut log, "BUILD: gcc", banners + 1);
    debug_until(&events, &mut log, "Found 2 cpu(s)", 2);
    vm.power_off();
    assert_eq!(vm.wait(), OffReason::Requested);
    assert_eq!(vm.state(), RunState::Off);
}

/// Saved mid-POST on KVM and restored into a new KVM machine, SeaBIOS carries on to its boot
/// attempt without starting over.
#[test]
fn post_continues_after_save_and_restore() {
    let dir = common::scratch("kvm-saved-state");
    let (vm, events) = start(1, IrqChipMode::Split);
    let mut log = String::new();
    debug_until(&events, &mut log, "Found 1 cpu(s)", 1);
    vm.pause();
    vm.save_state(&dir).expect("save");
    drop(vm);

    let config = MachineConfig {
        memory_mib: 128,
        firmware: Some(common::seabios()),
        ..MachineConfig::default()
    };
    let partition = create_partition(Backend::Kvm, 1, IrqChipMode::Split).expect("KVM partition");
    let mut restored = Machine::restore(config, partition, &dir).expect("restore");
    let events = restored.take_events().unwrap();
    restored.start().expect("start");
    let mut after = String::new();
    debug_until(&events, &mut after, "No bootable device", 1);
    // The RAM size is printed before the CPUs are counted: seen again, POST would have restarted.
    assert!(log.contains("RamSize:"), "{log}");
    assert!(!after.contains("RamSize:"), "POST started over:\n{after}");
    assert!(after.contains("Booting from Hard Disk"), "{after}");
    restored.power_off();
    restored.wait();
}
