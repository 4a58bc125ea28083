//! The library on a real file system, in folders under the target's temp dir.

use std::fs;
use std::path::{Path, PathBuf};

use vm_library::{
    write_atomic, BackendChoice, BootChoice, DiskPlan, HostKey, Library, LibraryError,
    NewDiskFormat, OsFamily, VmConfig, VmEntry, CONFIG_FORMAT_VERSION,
};

const MIB: u64 = 1 << 20;

/// A fresh, empty folder for one test.
fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("vm-library")
        .join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn ok_names(entries: &[VmEntry]) -> Vec<String> {
    entries.iter().map(VmEntry::display_name).collect()
}

fn disk_size(path: &Path) -> u64 {
    disk::open(path, &disk::OpenOptions::read_only())
        .unwrap()
        .size()
}

#[test]
fn create_with_vhd_disk() {
    let lib = Library::open(&tmp("create_vhd").join("vms")).unwrap();
    let plan = DiskPlan::Create {
        format: NewDiskFormat::Vhd,
        size_bytes: 64 * MIB,
    };
    let e = lib
        .create(VmConfig::new("Debian 12", OsFamily::Linux), plan)
        .unwrap();
    assert_eq!(e.dir, lib.root().join("Debian 12"));
    assert!(e.dir.is_absolute());
    let cfg = e.config.as_ref().unwrap();
    assert_eq!(cfg.disks, vec![PathBuf::from("disk.vhd")]);
    let image = cfg.resolve(&e.dir, &cfg.disks[0]);
    assert_eq!(image, e.dir.join("disk.vhd"));
    assert_eq!(disk_size(&image), 64 * MIB);
    assert_eq!(disk::info(&image).unwrap().format, disk::Format::VhdDynamic);
    assert_eq!(Library::load(&e.dir).unwrap(), *cfg);
    assert_eq!(names_in(&e.dir), ["disk.vhd", "vm.toml"]);
    assert_eq!(names_in(lib.root()), ["Debian 12"]);
    let listed = lib.list();
    assert_eq!(ok_names(&listed), ["Debian 12"]);
    assert_eq!(listed[0].thumbnail_path(), e.dir.join("screen.png"));
}

#[test]
fn create_with_qcow2_disk() {
    let lib = Library::open(&tmp("create_qcow2")).unwrap();
    let plan = DiskPlan::Create {
        format: NewDiskFormat::Qcow2,
        size_bytes: 100 * MIB + 1,
    };
    let e = lib
        .create(VmConfig::new("FreeBSD", OsFamily::Bsd), plan)
        .unwrap();
    let cfg = e.config.unwrap();
    assert_eq!(cfg.disks, vec![PathBuf::from("disk.qcow2")]);
    let image = e.dir.join("disk.qcow2");
    // Rounded up to whole sectors.
    assert_eq!(disk_size(&image), 100 * MIB + 512);
    assert_eq!(disk::info(&image).unwrap().format, disk::Format::Qcow2);
}

#[test]
fn create_with_existing_disk_and_none() {
    let base = tmp("create_existing");
    let lib = Library::open(&base.join("vms")).unwrap();
    let image = base.join("shared.qcow2");
    disk::create(
        &image,
        &disk::CreateOptions::new(disk::Format::Qcow2, 8 * MIB),
    )
    .unwrap();
    let e = lib
        .create(
            VmConfig::new("Uses shared", OsFamily::Linux),
            DiskPlan::Existing(image.clone()),
        )
        .unwrap();
    assert_eq!(e.config.as_ref().unwrap().disks, vec![image.clone()]);
    assert_eq!(names_in(&e.dir), ["vm.toml"]);

    let e = lib
        .create(VmConfig::new("Diskless", OsFamily::Dos), DiskPlan::None)
        .unwrap();
    assert!(e.config.unwrap().disks.is_empty());
    assert_eq!(ok_names(&lib.list()), ["Diskless", "Uses shared"]);
}

#[test]
fn folder_names_are_sanitized_and_unique() {
    let lib = Library::open(&tmp("unique")).unwrap();
    let mk = |name: &str| {
        let e = lib
            .create(VmConfig::new(name, OsFamily::Other), DiskPlan::None)
            .unwrap();
        e.dir.file_name().unwrap().to_string_lossy().into_owned()
    };
    assert_eq!(mk("Test VM"), "Test VM");
    assert_eq!(mk("Test VM"), "Test VM (2)");
    assert_eq!(mk("Test VM"), "Test VM (3)");
    assert_eq!(mk("Win: XP/SP3*"), "Win_ XP_SP3_");
    assert_eq!(mk("..hidden"), "hidden");
    assert_eq!(mk("Привет"), "VM");
    assert_eq!(mk("CON"), "CON_");
    assert_eq!(mk("x.removed"), "x.removed_");
    let listed = lib.list();
    assert_eq!(listed.len(), 8);
    // Sorted by display name, case-insensitively.
    let names = ok_names(&listed);
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.to_lowercase());
    assert_eq!(names, sorted);
}

fn full_config() -> VmConfig {
    let mut c = VmConfig::new("Debian 12", OsFamily::Linux);
    c.os_name = Some("Debian GNU/Linux 12".into());
    c.memory_mib = 2048;
    c.cpus = 2;
    c.backend = BackendChoice::Kvm;
    c.boot = BootChoice::Disk;
    c.disks = vec![
        PathBuf::from("disk.vhd"),
        PathBuf::from("/data/second disk.qcow2"),
    ];
    c.cdrom = Some(PathBuf::from("/isos/debian-12.iso"));
    c.floppy = Some(PathBuf::from("boot.img"));
    c.host_key = HostKey::ScrollLock;
    c.undo_disks = true;
    c
}

#[test]
fn save_load_round_trip_and_readable_toml() {
    let dir = tmp("round_trip");
    let lib = Library::open(&dir).unwrap();
    let vm = dir.join("vm1");
    fs::create_dir(&vm).unwrap();
    let c = full_config();
    lib.save(&vm, &c).unwrap();
    assert_eq!(Library::load(&vm).unwrap(), c);

    let text = fs::read_to_string(vm.join("vm.toml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        "format_version = 1",
        "name = \"Debian 12\"",
        "os = \"linux\"",
        "os_name = \"Debian GNU/Linux 12\"",
        "memory_mib = 2048",
        "cpus = 2",
        "backend = \"kvm\"",
        "boot = \"disk\"",
        "cdrom = \"/isos/debian-12.iso\"",
        "host_key = \"scroll-lock\"",
        "undo_disks = true",
    ] {
        assert!(lines.contains(&want), "missing line {want:?} in:\n{text}");
    }
    assert!(text.starts_with("# Terrarium"), "{text}");
    assert!(text.contains("disk.vhd") && text.contains("/data/second disk.qcow2"));

    // Optional settings left out are not written, and defaults fill them back in.
    let minimal = VmConfig::new("Small", OsFamily::Dos);
    lib.save(&vm, &minimal).unwrap();
    let text = fs::read_to_string(vm.join("vm.toml")).unwrap();
    assert!(
        !text.contains("cdrom") && !text.contains("os_name"),
        "{text}"
    );
    assert_eq!(Library::load(&vm).unwrap(), minimal);

    // A hand-written file with only the required keys loads with defaults.
    fs::write(
        vm.join("vm.toml"),
        "format_version = 1\nname = \"Hand\"\nos = \"windows\"\nmemory_mib = 512\ncpus = 1\n",
    )
    .unwrap();
    let c = Library::load(&vm).unwrap();
    assert_eq!(c.os, OsFamily::Windows);
    assert_eq!(c.host_key, HostKey::RightCtrl);
    assert_eq!(c.backend, BackendChoice::Auto);
    assert_eq!(c.boot, BootChoice::Cd);
    assert!(!c.undo_disks && c.disks.is_empty());
}

#[test]
fn save_refuses_invalid_and_keeps_old_file() {
    let dir = tmp("save_invalid");
    let lib = Library::open(&dir).unwrap();
    let vm = dir.join("vm");
    fs::create_dir(&vm).unwrap();
    let good = VmConfig::new("Good", OsFamily::Linux);
    lib.save(&vm, &good).unwrap();
    let mut bad = good.clone();
    bad.cpus = 0;
    assert!(matches!(
        lib.save(&vm, &bad),
        Err(LibraryError::Invalid { field: "cpus", .. })
    ));
    assert_eq!(Library::load(&vm).unwrap(), good);
    // Saving into a folder that does not exist names the file.
    let err = lib.save(&dir.join("nope"), &good).unwrap_err();
    assert!(matches!(err, LibraryError::Io { .. }));
    assert!(err.to_string().contains("vm.toml"), "{err}");
}

#[test]
fn corrupt_config_is_listed_with_file_and_line() {
    let root = tmp("corrupt");
    let lib = Library::open(&root).unwrap();
    lib.create(VmConfig::new("Fine", OsFamily::Linux), DiskPlan::None)
        .unwrap();
    let broken = root.join("Broken VM");
    fs::create_dir(&broken).unwrap();
    fs::write(
        broken.join("vm.toml"),
        "format_version = 1\nname = \"x\"\nmemory_mib = = 3\n",
    )
    .unwrap();
    // Not a VM folder at all: not listed.
    fs::create_dir(root.join("stuff")).unwrap();

    let listed = lib.list();
    assert_eq!(ok_names(&listed), ["Broken VM", "Fine"]);
    let err = listed[0].config.as_ref().unwrap_err();
    assert!(
        err.contains("Broken VM") && err.contains("vm.toml"),
        "{err}"
    );
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("fix or remove the file"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    // Missing key, wrong type, out-of-range value, bad enum, not UTF-8: all errors, no panic.
    for text in [
        &b"format_version = 1\nname = \"x\"\nos = \"linux\"\ncpus = 1\n"[..],
        b"format_version = 1\nname = \"x\"\nos = \"linux\"\nmemory_mib = \"lots\"\ncpus = 1\n",
        b"format_version = 1\nname = \"x\"\nos = \"linux\"\nmemory_mib = 4\ncpus = 1\n",
        b"format_version = 1\nname = \"x\"\nos = \"amiga\"\nmemory_mib = 64\ncpus = 1\n",
        b"format_version = 1\nname = \"x\"\nos = \"linux\"\nmemory_mib = 64\ncpus = -1\n",
        b"format_version = 0\nname = \"x\"\nos = \"linux\"\nmemory_mib = 64\ncpus = 1\n",
        b"format_version = 99999999999\n",
        b"\xff\xfe garbage",
        b"",
    ] {
        fs::write(broken.join("vm.toml"), text).unwrap();
        let err = Library::load(&broken).unwrap_err();
        assert!(matches!(err, LibraryError::Parse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("vm.toml") && !msg.contains('\n'), "{msg}");
    }
    fs::write(
        broken.join("vm.toml"),
        b"format_version = 1\nname = \"x\"\nos = \"linux\"\nmemory_mib = 4\ncpus = 1\n",
    )
    .unwrap();
    let msg = Library::load(&broken).unwrap_err().to_string();
    assert!(
        msg.contains("memory_mib") && msg.contains("16 to 1048576"),
        "{msg}"
    );
}

#[test]
fn newer_format_version_is_refused() {
    let root = tmp("newer");
    let lib = Library::open(&root).unwrap();
    let vm = root.join("Future");
    fs::create_dir(&vm).unwrap();
    fs::write(
        vm.join("vm.toml"),
        "format_version = 7\nname = \"Future\"\nsomething_new = { a = 1 }\n",
    )
    .unwrap();
    match Library::load(&vm) {
        Err(LibraryError::NewerFormat { path, found }) => {
            assert_eq!(found, 7);
            assert_eq!(path, vm.join("vm.toml"));
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
    let listed = lib.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].display_name(), "Future");
    let err = listed[0].config.as_ref().unwrap_err();
    assert!(
        err.contains("update Terrarium") && err.contains("vm.toml"),
        "{err}"
    );
    assert_eq!(CONFIG_FORMAT_VERSION, 1);
}

#[test]
fn validate_names_field_and_range() {
    let ok = VmConfig::new("ok", OsFamily::Linux);
    ok.validate().unwrap();
    type Change = Box<dyn Fn(&mut VmConfig)>;
    let cases: Vec<(Change, &str, &str)> = vec![
        (Box::new(|c| c.name = String::new()), "name", "1 to 64"),
        (Box::new(|c| c.name = "   ".into()), "name", "1 to 64"),
        (Box::new(|c| c.name = "x".repeat(65)), "name", "1 to 64"),
        (Box::new(|c| c.name = "a\nb".into()), "name", "control"),
        (
            Box::new(|c| c.memory_mib = 15),
            "memory_mib",
            "16 to 1048576",
        ),
        (
            Box::new(|c| c.memory_mib = 1_048_577),
            "memory_mib",
            "16 to 1048576",
        ),
        (Box::new(|c| c.cpus = 0), "cpus", "1 to 255"),
        (Box::new(|c| c.cpus = 256), "cpus", "1 to 255"),
        (
            Box::new(|c| c.format_version = 2),
            "format_version",
            "use 1",
        ),
        (
            Box::new(|c| c.disks = vec![PathBuf::new()]),
            "disks",
            "empty",
        ),
        (
            Box::new(|c| c.cdrom = Some(PathBuf::new())),
            "cdrom",
            "empty",
        ),
    ];
    for (change, field, range) in cases {
        let mut c = ok.clone();
        change(&mut c);
        match c.validate() {
            Err(e @ LibraryError::Invalid { field: f, .. }) => {
                assert_eq!(f, field);
                let msg = e.to_string();
                assert!(msg.contains(field) && msg.contains(range), "{msg}");
            }
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
    // Limits themselves are fine.
    let mut c = ok.clone();
    c.name = "é".repeat(64);
    c.memory_mib = 16;
    c.cpus = 255;
    c.validate().unwrap();
    c.memory_mib = 1_048_576;
    c.validate().unwrap();
}

#[test]
fn import_is_persisted_and_not_duplicated() {
    let base = tmp("import");
    let root = base.join("vms");
    let outside = base.join("elsewhere").join("Old VM");
    fs::create_dir_all(&outside).unwrap();
    let lib = Library::open(&root).unwrap();
    lib.save(&outside, &VmConfig::new("Old VM", OsFamily::Windows))
        .unwrap();
    let e = lib.import(&outside).unwrap();
    assert_eq!(e.dir, outside);
    assert_eq!(e.config.unwrap().name, "Old VM");
    // Again, and through a path with a `.` in it: still once.
    lib.import(&outside).unwrap();
    lib.import(&base.join("elsewhere/./Old VM")).unwrap();

    let lib = Library::open(&root).unwrap();
    let listed = lib.list();
    assert_eq!(ok_names(&listed), ["Old VM"]);
    assert_eq!(listed[0].dir, outside);
    let text = fs::read_to_string(root.join("library.toml")).unwrap();
    assert_eq!(text.matches("Old VM").count(), 1, "{text}");
    assert!(text.lines().any(|l| l == "format_version = 1"), "{text}");

    // A folder already under the root is not listed twice.
    let inner = lib
        .create(VmConfig::new("Inner", OsFamily::Linux), DiskPlan::None)
        .unwrap();
    lib.import(&inner.dir).unwrap();
    assert_eq!(ok_names(&lib.list()), ["Inner", "Old VM"]);
}

#[test]
fn import_needs_a_vm_folder() {
    let base = tmp("import_not_vm");
    let lib = Library::open(&base.join("vms")).unwrap();
    let empty = base.join("empty");
    fs::create_dir(&empty).unwrap();
    let err = lib.import(&empty).unwrap_err();
    assert!(
        matches!(&err, LibraryError::NotAVm { path } if *path == empty),
        "{err:?}"
    );
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(matches!(
        lib.import(&base.join("does-not-exist")),
        Err(LibraryError::NotAVm { .. })
    ));
    // A broken vm.toml is refused with the parse error, and nothing is listed.
    fs::write(empty.join("vm.toml"), "garbage").unwrap();
    assert!(matches!(
        lib.import(&empty),
        Err(LibraryError::Parse { .. })
    ));
    assert!(lib.list().is_empty());
    assert!(!lib.root().join("library.toml").exists());
}

#[test]
fn missing_imported_folder_is_listed() {
    let base = tmp("import_missing");
    let lib = Library::open(&base.join("vms")).unwrap();
    let usb = base.join("usb").join("Gone");
    fs::create_dir_all(&usb).unwrap();
    lib.save(&usb, &VmConfig::new("Gone", OsFamily::Linux))
        .unwrap();
    lib.import(&usb).unwrap();
    fs::remove_dir_all(&usb).unwrap();

    let listed = lib.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].display_name(), "Gone");
    let err = listed[0].config.as_ref().unwrap_err();
    assert!(err.contains("is missing") && err.contains("Gone"), "{err}");

    // It can be dropped from the library, with or without delete_files.
    lib.remove(&listed[0], true).unwrap();
    assert!(lib.list().is_empty());
}

#[test]
fn corrupt_library_file_is_shown_not_overwritten() {
    let base = tmp("library_corrupt");
    let lib = Library::open(&base.join("vms")).unwrap();
    let lf = lib.root().join("library.toml");
    fs::write(&lf, "imported = [\n").unwrap();
    let listed = lib.list();
    assert_eq!(listed.len(), 1);
    let err = listed[0].config.as_ref().unwrap_err();
    assert!(
        err.contains("library.toml") && err.contains("library file"),
        "{err}"
    );
    let other = base.join("other");
    fs::create_dir(&other).unwrap();
    lib.save(&other, &VmConfig::new("Other", OsFamily::Linux))
        .unwrap();
    assert!(matches!(
        lib.import(&other),
        Err(LibraryError::Parse { .. })
    ));
    assert_eq!(fs::read_to_string(&lf).unwrap(), "imported = [\n");
    fs::write(&lf, "format_version = 3\n").unwrap();
    assert!(matches!(
        lib.import(&other),
        Err(LibraryError::NewerFormat { found: 3, .. })
    ));

    // Removing the entry that shows the broken file sets the file aside.
    let listed = lib.list();
    assert_eq!(listed.len(), 1);
    lib.remove(&listed[0], false).unwrap();
    assert!(lib.root().join("library.toml.removed").is_file());
    assert!(lib.list().is_empty());
    lib.import(&other).unwrap();
    assert_eq!(ok_names(&lib.list()), ["Other"]);
}

#[test]
fn remove_root_vm_keeps_or_deletes_files() {
    let lib = Library::open(&tmp("remove_root")).unwrap();
    let plan = DiskPlan::Create {
        format: NewDiskFormat::Vhd,
        size_bytes: 4 * MIB,
    };
    let keep = lib
        .create(VmConfig::new("Keep", OsFamily::Linux), plan.clone())
        .unwrap();
    let del = lib
        .create(VmConfig::new("Delete", OsFamily::Linux), plan.clone())
        .unwrap();

    lib.remove(&keep, false).unwrap();
    assert!(!keep.dir.exists());
    let kept = lib.root().join("Keep.removed");
    assert!(kept.join("vm.toml").is_file() && kept.join("disk.vhd").is_file());

    lib.remove(&del, true).unwrap();
    assert!(!del.dir.exists());
    assert_eq!(names_in(lib.root()), ["Keep.removed"]);
    assert!(lib.list().is_empty());

    // A second "Keep" removed without deleting does not clash with the first.
    let keep2 = lib
        .create(VmConfig::new("Keep", OsFamily::Linux), plan)
        .unwrap();
    assert_eq!(keep2.dir, lib.root().join("Keep"));
    lib.remove(&keep2, false).unwrap();
    assert_eq!(names_in(lib.root()), ["Keep (2).removed", "Keep.removed"]);

    // Importing a removed folder restores it under its VM name.
    let back = lib.import(&kept).unwrap();
    assert_eq!(back.dir, lib.root().join("Keep"));
    assert_eq!(ok_names(&lib.list()), ["Keep"]);
    assert!(!lib.root().join("library.toml").exists());
}

#[test]
fn remove_imported_vm() {
    let base = tmp("remove_imported");
    let lib = Library::open(&base.join("vms")).unwrap();
    let mk = |name: &str| {
        let dir = base.join(name);
        fs::create_dir(&dir).unwrap();
        disk::create(
            &dir.join("disk.vhd"),
            &disk::CreateOptions::new(disk::Format::VhdDynamic, 4 * MIB),
        )
        .unwrap();
        let mut c = VmConfig::new(name, OsFamily::Linux);
        c.disks = vec!["disk.vhd".into(), "../outside.vhd".into()];
        lib.save(&dir, &c).unwrap();
        fs::write(dir.join("screen.png"), b"png").unwrap();
        lib.import(&dir).unwrap()
    };
    fs::write(base.join("outside.vhd"), b"not mine").unwrap();
    let a = mk("A");
    let b = mk("B");
    fs::write(b.dir.join("notes.txt"), b"user file").unwrap();
    let c = mk("C");

    // Without delete_files only the listing goes.
    lib.remove(&a, false).unwrap();
    assert_eq!(names_in(&a.dir), ["disk.vhd", "screen.png", "vm.toml"]);
    assert_eq!(ok_names(&lib.list()), ["B", "C"]);

    // With delete_files the VM's own files go; a user file keeps the folder.
    lib.remove(&b, true).unwrap();
    assert_eq!(names_in(&b.dir), ["notes.txt"]);
    lib.remove(&c, true).unwrap();
    assert!(!c.dir.exists());
    assert!(base.join("outside.vhd").is_file());
    assert!(lib.list().is_empty());
    let lib = Library::open(lib.root()).unwrap();
    assert!(lib.list().is_empty());
}

#[test]
fn failed_create_leaves_nothing() {
    let base = tmp("create_fail");
    let lib = Library::open(&base.join("vms")).unwrap();
    let cfg = VmConfig::new("Fails", OsFamily::Linux);

    let zero = DiskPlan::Create {
        format: NewDiskFormat::Vhd,
        size_bytes: 0,
    };
    let err = lib.create(cfg.clone(), zero).unwrap_err();
    assert!(
        matches!(
            err,
            LibraryError::Invalid {
                field: "disk size",
                ..
            }
        ),
        "{err:?}"
    );

    let missing = base.join("no-such.vhd");
    let err = lib
        .create(cfg.clone(), DiskPlan::Existing(missing))
        .unwrap_err();
    assert!(err.to_string().contains("no-such.vhd"), "{err}");

    // Fails after the folder was made: VHD cannot be 3 TiB.
    let huge = DiskPlan::Create {
        format: NewDiskFormat::Vhd,
        size_bytes: 3 << 40,
    };
    let err = lib.create(cfg.clone(), huge).unwrap_err();
    assert!(matches!(err, LibraryError::Disk(_)), "{err:?}");

    let mut bad = cfg.clone();
    bad.memory_mib = 1;
    assert!(matches!(
        lib.create(bad, DiskPlan::None),
        Err(LibraryError::Invalid {
            field: "memory_mib",
            ..
        })
    ));

    assert!(
        names_in(lib.root()).is_empty(),
        "{:?}",
        names_in(lib.root())
    );
    assert!(lib.list().is_empty());
}

#[test]
fn write_atomic_replaces_and_leaves_no_temp_files() {
    let dir = tmp("atomic");
    let f = dir.join("screen.png");
    write_atomic(&f, b"first version, longer").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"first version, longer");
    write_atomic(&f, b"second").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"second");
    write_atomic(&f, b"").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"");
    assert_eq!(names_in(&dir), ["screen.png"]);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&f, b"third").unwrap();
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    assert!(write_atomic(&dir.join("no-dir").join("x"), b"x").is_err());
    // A folder in the way: the rename fails, the temp file is cleaned up.
    fs::create_dir(dir.join("sub")).unwrap();
    fs::write(dir.join("sub").join("keep"), b"k").unwrap();
    assert!(write_atomic(&dir.join("sub"), b"x").is_err());
    assert_eq!(names_in(&dir), ["screen.png", "sub"]);
}

#[test]
fn open_default_honours_terrarium_home() {
    let home = tmp("home");
    // The only test that touches the environment.
    std::env::set_var("TERRARIUM_HOME", &home);
    let lib = Library::open_default().unwrap();
    std::env::remove_var("TERRARIUM_HOME");
    assert_eq!(lib.root(), home.join("vms"));
    assert!(home.join("vms").is_dir());
}

#[test]
fn load_from_folder_without_config() {
    let dir = tmp("load_missing");
    assert!(matches!(
        Library::load(&dir),
        Err(LibraryError::NotAVm { .. })
    ));
    let e = VmEntry {
        dir: dir.clone(),
        config: Err("broken".into()),
    };
    assert_eq!(e.display_name(), "load_missing");
}
