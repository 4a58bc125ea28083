//! Debian's Linux 6.1 bzImage with the busybox initramfs, direct boot on the software CPU:
//! `/init` prints the marker on the serial console and powers off through ACPI, which must turn
//! the machine off by itself.

mod common;

use machine::{
    create_partition, Backend, IrqChipMode, LinuxBoot, Machine, MachineConfig, MachineEvent,
    OffReason,
};
use std::time::{Duration, Instant};

const MARKER: &str = "TERRARIUM-BOOT-OK";
/// Generous: the interpreter needs minutes for the kernel's decompression on a slow machine.
const LIMIT: Duration = Duration::from_secs(1200);

fn boot(cpus: u32) {
    let assets = common::assets();
    let kernel = assets.join("vmlinuz");
    assert!(
        kernel.is_file(),
        "{} missing: run scripts/fetch-assets.sh",
        kernel.display()
    );
    let config = MachineConfig {
        memory_mib: 256,
        cpus,
        linux: Some(LinuxBoot {
            kernel,
            initrd: Some(assets.join("initramfs.cpio.gz")),
            // The kernel's crypto self-tests cost ~20 s of interpretation and test nothing of ours.
            cmdline: "console=ttyS0 cryptomgr.notests".into(),
        }),
        ..MachineConfig::default()
    };
    let partition =
        create_partition(Backend::Emu, cpus, IrqChipMode::Split).expect("emu partition");
    let mut vm = Machine::new(config, partition).expect("machine");
    let events = vm.take_events().unwrap();
    vm.start().expect("start");
    let mut console = Vec::new();
    let deadline = Instant::now() + LIMIT;
    let off = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            vm.power_off();
            panic!(
                "no power-off within {LIMIT:?}; console:\n{}",
                String::from_utf8_lossy(&console)
            );
        }
        match events.recv_timeout(left) {
            Ok(MachineEvent::Serial(b)) => console.extend_from_slice(&b),
            Ok(MachineEvent::Off(reason)) => break reason,
            _ => {}
        }
    };
    let text = String::from_utf8_lossy(&console);
    assert_eq!(off, OffReason::GuestPowerOff, "console:\n{text}");
    assert!(text.contains(MARKER), "no marker; console:\n{text}");
    assert!(text.contains("reboot: Power down"), "console:\n{text}");
    if cpus > 1 {
        assert!(
            text.contains(&format!("smp: Brought up 1 node, {cpus} CPUs")),
            "console:\n{text}"
        );
    }
    vm.wait();
}

#[test]
fn linux_one_cpu_prints_marker_and_powers_off() {
    boot(1);
}

#[test]
fn linux_two_cpus_prints_marker_and_powers_off() {
    boot(2);
}
