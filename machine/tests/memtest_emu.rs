//! memtest86+ (Debian's memtest86+x64.bin, direct boot) starts its tests on the software CPU;
//! its serial console shows the test screen.

mod common;

use machine::{
    create_partition, Backend, IrqChipMode, LinuxBoot, Machine, MachineConfig, MachineEvent,
};
use std::time::{Duration, Instant};

#[test]
fn memtest86plus_starts_testing() {
    let kernel = common::assets().join("memtest86+x64.bin");
    assert!(
        kernel.is_file(),
        "{} missing: run scripts/fetch-assets.sh",
        kernel.display()
    );
    let config = MachineConfig {
        memory_mib: 64,
        linux: Some(LinuxBoot {
            kernel,
            initrd: None,
            cmdline: "console=ttyS0,115200".into(),
        }),
        ..MachineConfig::default()
    };
    let partition = create_partition(Backend::Emu, 1, IrqChipMode::Split).expect("emu partition");
    let mut vm = Machine::new(config, partition).expect("machine");
    let events = vm.take_events().unwrap();
    vm.start().expect("start");
    let mut screen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = |s: &[u8]| {
        let t = String::from_utf8_lossy(s);
        t.contains("[Address test, walking ones") && t.contains("Errors: 0")
    };
    while !done(&screen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "memtest86+ did not start testing:\n{}",
            String::from_utf8_lossy(&screen)
        );
        match events.recv_timeout(left) {
            Ok(MachineEvent::Serial(b)) => screen.extend_from_slice(&b),
            Ok(MachineEvent::Off(r)) => panic!("machine turned off: {r:?}"),
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(&screen);
    assert!(text.contains("Memtest86+"), "{text}");
    vm.power_off();
    vm.wait();
}
