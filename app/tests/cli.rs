//! `terrarium run` as a user meets it: bad input gets one clear line and a non-zero exit.

use std::path::PathBuf;
use std::process::{Command, Output};

fn terrarium(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terrarium"))
        .args(args)
        .output()
        .expect("run terrarium")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One line on stderr, non-zero exit, no panic.
fn assert_clean_failure(o: &Output) -> String {
    let e = stderr(o);
    assert!(!o.status.success(), "should fail: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line expected: {e:?}");
    e
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("terrarium-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn missing_firmware_names_the_file() {
    let e = assert_clean_failure(&terrarium(&[
        "run",
        "--backend",
        "kvm",
        "--firmware",
        "/nonexistent/bios.bin",
    ]));
    assert!(e.contains("/nonexistent/bios.bin"), "{e}");
}

#[test]
fn wrong_sized_firmware_says_what_is_expected() {
    let f = temp("tiny.bin");
    std::fs::write(&f, [0u8; 100]).unwrap();
    let e = assert_clean_failure(&terrarium(&[
        "run",
        "--backend",
        "kvm",
        "--firmware",
        f.to_str().unwrap(),
    ]));
    assert!(e.contains("tiny.bin") && e.contains("64 KiB"), "{e}");
}

#[test]
fn invalid_memory_and_cpu_counts() {
    let e = assert_clean_failure(&terrarium(&["run", "--memory", "0"]));
    assert!(e.contains("--memory"), "{e}");
    let e = assert_clean_failure(&terrarium(&["run", "--cpus", "0"]));
    assert!(e.contains("--cpus"), "{e}");
    let e = assert_clean_failure(&terrarium(&["run", "--cpus", "100000"]));
    assert!(e.contains("--cpus"), "{e}");
}

#[test]
fn unreadable_kernel_names_the_file() {
    let e = assert_clean_failure(&terrarium(&[
        "run",
        "--backend",
        "kvm",
        "--kernel",
        "/nonexistent/vmlinuz",
    ]));
    assert!(e.contains("/nonexistent/vmlinuz"), "{e}");
    let junk = temp("junk-kernel");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let e = assert_clean_failure(&terrarium(&[
        "run",
        "--backend",
        "kvm",
        "--kernel",
        junk.to_str().unwrap(),
    ]));
    assert!(e.contains("junk-kernel") && e.contains("bzImage"), "{e}");
}

#[test]
fn no_permission_on_dev_kvm_explains_the_kvm_group() {
    // Only meaningful where /dev/kvm exists and we can drop to an unprivileged user.
    if !std::path::Path::new("/dev/kvm").exists()
        || !std::path::Path::new("/usr/bin/setpriv").exists()
    {
        return;
    }
    let uid = unsafe_free_uid();
    if uid != 0 {
        return; // Not root: cannot switch users; the case is covered by the message test below.
    }
    let o = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_terrarium"),
        ])
        .args(["run", "--backend", "kvm", "--firmware", "/dev/null"])
        .output()
        .expect("setpriv");
    let e = stderr(&o);
    // Either /dev/kvm is closed to nobody (the usual 0600/0660 modes) or it is open to all.
    if e.contains("/dev/kvm") {
        let e = assert_clean_failure(&o);
        assert!(e.contains("kvm group") && e.contains("usermod"), "{e}");
    }
}

fn unsafe_free_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

#[test]
fn unsupported_backend_says_what_to_use() {
    let e = assert_clean_failure(&terrarium(&[
        "run",
        "--backend",
        "whp",
        "--firmware",
        "/dev/null",
    ]));
    assert!(e.contains("Windows Hypervisor Platform"), "{e}");
}

/// A 64 KiB firmware whose reset vector runs `popcnt`, prints 'K' on the debug port and halts.
/// KVM hosts without usable hardware virtualization (KVM-PVM) run such guests in KVM's
/// instruction emulator, which lacks `popcnt`: the run must end with one line naming the
/// address and suggesting `--backend emu`. With hardware virtualization the instruction runs
/// and 'K' appears.
#[test]
fn kvm_emulation_failure_is_one_clear_line() {
    if !std::path::Path::new("/dev/kvm").exists() {
        return;
    }
    let mut rom = vec![0xf4u8; 64 << 10];
    let reset = [
        0xf3, 0x0f, 0xb8, 0xc0, // popcnt eax, eax
        0xb0, b'K', // mov al, 'K'
        0xba, 0x02, 0x04, // mov dx, 0x402
        0xee, // out dx, al
        0xfa, // cli
        0xf4, // hlt
    ];
    let at = rom.len() - 16;
    rom[at..at + reset.len()].copy_from_slice(&reset);
    let fw = temp("popcnt.bin");
    std::fs::write(&fw, &rom).unwrap();
    let dbg = temp("popcnt-debug.txt");
    let o = terrarium(&[
        "run",
        "--backend",
        "kvm",
        "--firmware",
        fw.to_str().unwrap(),
        "--debugcon",
        dbg.to_str().unwrap(),
        "--timeout",
        "5",
    ]);
    let printed = std::fs::read_to_string(&dbg).unwrap_or_default();
    if printed.contains('K') {
        return; // Hardware virtualization ran the instruction.
    }
    let e = assert_clean_failure(&o);
    assert!(e.contains("0xffff0") || e.contains("0xfffffff0"), "{e}");
    assert!(e.contains("--backend emu"), "{e}");
}

/// Without access to /dev/kvm, `--backend auto` explains the fallback in one line and runs the
/// VM on the software CPU (SeaBIOS reaches its boot attempt on the debug port).
#[test]
fn auto_falls_back_to_the_software_cpu_with_a_reason() {
    let assets = std::env::var_os("TERRARIUM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/assets"));
    let bios = assets.join("bios.bin");
    if !std::path::Path::new("/dev/kvm").exists() || unsafe_free_uid() != 0 || !bios.is_file() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("terrarium-auto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _ = Command::new("chmod").arg("0777").arg(&dir).status();
    let dbg = dir.join("debug.txt");
    let o = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_terrarium"),
        ])
        .args([
            "run",
            "--backend",
            "auto",
            "--firmware",
            bios.to_str().unwrap(),
        ])
        .args(["--debugcon", dbg.to_str().unwrap(), "--timeout", "5"])
        .output()
        .expect("setpriv");
    let e = stderr(&o);
    if !e.contains("/dev/kvm") {
        return; // /dev/kvm is open to everyone here: auto used KVM.
    }
    let first = e.lines().next().unwrap_or_default();
    assert!(
        first.contains("software CPU") && first.contains("kvm group"),
        "{e}"
    );
    let log = std::fs::read_to_string(&dbg).unwrap_or_default();
    assert!(
        log.contains("Booting from Hard Disk"),
        "SeaBIOS did not run on the software CPU:\n{log}\n{e}"
    );
}

fn asset(name: &str) -> PathBuf {
    std::env::var_os("TERRARIUM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/assets"))
        .join(name)
}

#[test]
fn missing_or_corrupt_disk_images_name_the_file() {
    let bios = asset("bios.bin");
    let e = assert_clean_failure(&terrarium(&[
        "run",
        "--backend",
        "emu",
        "--firmware",
        bios.to_str().unwrap(),
        "--disk",
        "/nonexistent/disk.qcow2",
    ]));
    assert!(e.contains("/nonexistent/disk.qcow2"), "{e}");
    // A qcow2 header that claims more than the file holds.
    let bad = temp("bad.qcow2");
    let mut header = vec![0u8; 512];
    header[..4].copy_from_slice(b"QFI\xfb");
    header[4..8].copy_from_slice(&3u32.to_be_bytes());
    header[20..24].copy_from_slice(&16u32.to_be_bytes()); // 64 KiB clusters
    header[24..32].copy_from_slice(&(1u64 << 40).to_be_bytes()); // 1 TiB
    header[36..40].copy_from_slice(&1u32.to_be_bytes()); // L1 size
    header[40..48].copy_from_slice(&(1u64 << 30).to_be_bytes()); // L1 past the end
    std::fs::write(&bad, &header).unwrap();
    let e = assert_clean_failure(&terrarium(&[
        "run",
        "--backend",
        "emu",
        "--firmware",
        bios.to_str().unwrap(),
        "--disk",
        bad.to_str().unwrap(),
    ]));
    assert!(e.contains("bad.qcow2"), "{e}");
}

#[test]
fn screenshot_is_saved_when_the_run_ends() {
    let bios = asset("bios.bin");
    assert!(
        bios.is_file(),
        "{} missing: run scripts/fetch-assets.sh",
        bios.display()
    );
    let png = temp("screen.png");
    let _ = std::fs::remove_file(&png);
    let o = terrarium(&[
        "run",
        "--backend",
        "emu",
        "--firmware",
        bios.to_str().unwrap(),
        "--timeout",
        "3",
        "--screenshot",
        png.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "timeout exit: {}", stderr(&o));
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: 720×400, the 80×25 text screen in 9×16 cells.
    assert_eq!(&bytes[16..24], &[0, 0, 2, 0xd0, 0, 0, 1, 0x90]);
}
