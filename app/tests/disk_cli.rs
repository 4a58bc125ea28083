//! `terrarium disk` through the real binary: create, info, convert, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn terrarium(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terrarium"))
        .args(args)
        .output()
        .expect("run terrarium")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn success(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}{}", stdout(o), stderr(o));
    stdout(o)
}

/// One line on stderr, non-zero exit, no panic.
fn clean_failure(o: &Output) -> String {
    let e = stderr(o);
    assert!(!o.status.success(), "should fail: {}", stdout(o));
    assert!(!e.contains("panicked"), "panicked: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line expected: {e:?}");
    e
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("terrarium-disk-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn create_info_convert() {
    let d = temp_dir("ok");
    for (name, fmt, shown) in [
        ("a.qcow2", "qcow2", "format: qcow2 (version 3)"),
        ("b.vhd", "vhd", "format: vhd"),
        ("c.vhd", "vhd-fixed", "format: vhd-fixed"),
        ("d.img", "raw", "format: raw"),
    ] {
        let f = d.join(name);
        let out = success(&terrarium(&[
            "disk",
            "create",
            s(&f),
            "--format",
            fmt,
            "--size",
            "64M",
        ]));
        assert!(out.contains("created"), "{out}");
        let info = success(&terrarium(&["disk", "info", s(&f)]));
        assert!(info.contains(shown), "{info}");
        assert!(
            info.contains("virtual size: 64.0 MiB (67108864 bytes)"),
            "{info}"
        );
    }
    // An overlay takes its size from the backing image.
    let ov = d.join("overlay.qcow2");
    success(&terrarium(&[
        "disk",
        "create",
        s(&ov),
        "--format",
        "qcow2",
        "--backing",
        s(&d.join("a.qcow2")),
    ]));
    let info = success(&terrarium(&["disk", "info", s(&ov)]));
    assert!(info.contains("backing file: a.qcow2"), "{info}");
    assert!(info.contains("67108864 bytes"), "{info}");
    let diff = d.join("diff.vhd");
    success(&terrarium(&[
        "disk",
        "create",
        s(&diff),
        "--format",
        "vhd",
        "--backing",
        s(&d.join("b.vhd")),
    ]));
    let info = success(&terrarium(&["disk", "info", s(&diff)]));
    assert!(info.contains("format: vhd-differencing"), "{info}");
    // Convert the overlay chain to a standalone VHD.
    let conv = d.join("flat.vhd");
    let out = success(&terrarium(&[
        "disk",
        "convert",
        s(&ov),
        s(&conv),
        "--format",
        "vhd",
    ]));
    assert!(out.contains("converted"), "{out}");
    let info = success(&terrarium(&["disk", "info", s(&conv)]));
    assert!(
        info.contains("format: vhd") && !info.contains("backing"),
        "{info}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn errors_are_one_line_and_name_the_file() {
    let d = temp_dir("bad");
    let f = d.join("x.qcow2");
    let e = clean_failure(&terrarium(&[
        "disk",
        "create",
        s(&f),
        "--format",
        "qcow2",
        "--size",
        "12Q",
    ]));
    assert!(e.contains("--size") && e.contains("K, M, G or T"), "{e}");
    let e = clean_failure(&terrarium(&["disk", "create", s(&f), "--format", "qcow2"]));
    assert!(e.contains("x.qcow2") && e.contains("--size"), "{e}");
    success(&terrarium(&[
        "disk",
        "create",
        s(&f),
        "--format",
        "qcow2",
        "--size",
        "1M",
    ]));
    let e = clean_failure(&terrarium(&[
        "disk",
        "create",
        s(&f),
        "--format",
        "qcow2",
        "--size",
        "1M",
    ]));
    assert!(e.contains("x.qcow2") && e.contains("already exists"), "{e}");
    let e = clean_failure(&terrarium(&["disk", "info", "/nonexistent/disk.vhd"]));
    assert!(e.contains("/nonexistent/disk.vhd"), "{e}");
    // A damaged image: a fixed VHD with a broken footer checksum.
    let v = d.join("broken.vhd");
    success(&terrarium(&[
        "disk",
        "create",
        s(&v),
        "--format",
        "vhd-fixed",
        "--size",
        "1M",
    ]));
    let mut bytes = std::fs::read(&v).unwrap();
    let n = bytes.len();
    bytes[n - 512 + 40] ^= 0x55;
    std::fs::write(&v, bytes).unwrap();
    let e = clean_failure(&terrarium(&["disk", "info", s(&v)]));
    assert!(e.contains("broken.vhd") && e.contains("checksum"), "{e}");
    let e = clean_failure(&terrarium(&[
        "disk",
        "convert",
        s(&v),
        s(&d.join("out.qcow2")),
        "--format",
        "qcow2",
    ]));
    assert!(e.contains("broken.vhd"), "{e}");
    assert!(!d.join("out.qcow2").exists());
    // Raw images cannot have a backing file.
    let e = clean_failure(&terrarium(&[
        "disk",
        "create",
        s(&d.join("r.img")),
        "--format",
        "raw",
        "--backing",
        s(&f),
    ]));
    assert!(e.contains("r.img") && e.contains("backing"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}
