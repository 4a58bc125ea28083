//! `terrarium snapshot` on a library VM that is off: take, list, revert, rename and delete,
//! with the disk's contents checked after each step, and refusal while the VM runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn home(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn terrarium(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terrarium"))
        .env("TERRARIUM_HOME", home)
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The first byte the VM's current disk layer reads at offset 0.
fn first_byte(vm: &Path) -> u8 {
    let c = vm_library::Library::load(vm).unwrap();
    let p = c.resolve(vm, &c.disks[0]);
    let mut img = disk::open(&p, &disk::OpenOptions::read_only()).unwrap();
    let mut b = [0u8; 1];
    img.read_at(0, &mut b).unwrap();
    b[0]
}

fn write_first(vm: &Path, byte: u8) {
    let c = vm_library::Library::load(vm).unwrap();
    let p = c.resolve(vm, &c.disks[0]);
    let mut img = disk::open(&p, &disk::OpenOptions::read_write()).unwrap();
    img.write_at(0, &[byte; 512]).unwrap();
    img.flush().unwrap();
}

#[test]
fn take_list_revert_rename_delete_from_the_command_line() {
    let home = home("snapshot-cli");
    let library = vm_library::Library::open(&home.join("vms")).unwrap();
    let mut config = vm_library::VmConfig::new("Cli VM", vm_library::OsFamily::Other);
    config.memory_mib = 32;
    let entry = library
        .create(
            config,
            vm_library::DiskPlan::Create {
                format: vm_library::NewDiskFormat::Qcow2,
                size_bytes: 8 << 20,
            },
        )
        .unwrap();
    let vm = entry.dir;
    write_first(&vm, 1);

    ok(&terrarium(&home, &["snapshot", "take", "Cli VM", "before"]));
    write_first(&vm, 2);
    let list = ok(&terrarium(&home, &["snapshot", "list", "Cli VM"]));
    assert!(list.contains("before (disks only)  <- current"), "{list}");

    ok(&terrarium(
        &home,
        &["snapshot", "revert", "Cli VM", "before"],
    ));
    assert_eq!(first_byte(&vm), 1, "revert brought the disk back");
    write_first(&vm, 3);
    ok(&terrarium(
        &home,
        &["snapshot", "rename", "Cli VM", "1", "kept"],
    ));
    assert!(ok(&terrarium(&home, &["snapshot", "list", "Cli VM"])).contains("kept"));

    // Deleting the current snapshot keeps the current state.
    ok(&terrarium(&home, &["snapshot", "delete", "Cli VM", "kept"]));
    assert_eq!(first_byte(&vm), 3);
    assert!(ok(&terrarium(&home, &["snapshot", "list", "Cli VM"])).contains("no snapshots"));

    // While the VM runs (here: a mark held by this test process), changes are refused.
    std::fs::write(
        vm.join(vm_library::RUNNING_FILE),
        std::process::id().to_string(),
    )
    .unwrap();
    let o = terrarium(&home, &["snapshot", "take", "Cli VM", "x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is running"));
    std::fs::remove_file(vm.join(vm_library::RUNNING_FILE)).unwrap();

    let o = terrarium(&home, &["snapshot", "list", "No Such VM"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Cli VM"));
}
