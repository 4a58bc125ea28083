//! Interoperability with QEMU's `qemu-img`/`qemu-io`: images QEMU makes read back correctly, and
//! images this crate makes and writes are `qemu-img check`-clean and `qemu-img compare` equal to
//! a raw copy. These tests need /usr/bin/qemu-img (package qemu-utils); without it they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use disk::{BlockDevice, CreateOptions, Format, OpenOptions};

const QEMU_IMG: &str = "/usr/bin/qemu-img";
const QEMU_IO: &str = "/usr/bin/qemu-io";

fn tool(path: &str) -> &str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: these tests compare against QEMU; install it with \
         `apt-get install qemu-utils`"
    );
    path
}

fn run(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(tool(cmd))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let (code, text) = run(cmd, args);
    assert_eq!(code, 0, "{cmd} {args:?} failed: {text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("disk-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn qemu_virtual_size(img: &Path, fmt: &str) -> u64 {
    let out = ok(QEMU_IMG, &["info", "-f", fmt, "--output=json", s(img)]);
    let key = "\"virtual-size\":";
    let at = out.rfind(key).expect("virtual-size in qemu-img info") + key.len();
    out[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

/// The whole virtual disk as QEMU reads it.
fn qemu_raw(img: &Path, fmt: &str, dir: &TempDir) -> Vec<u8> {
    let out = dir.path("qemu-flat.raw");
    let _ = std::fs::remove_file(&out);
    ok(
        QEMU_IMG,
        &["convert", "-f", fmt, "-O", "raw", s(img), s(&out)],
    );
    let data = std::fs::read(&out).expect("read flat copy");
    let _ = std::fs::remove_file(&out);
    data
}

fn read_all(dev: &mut dyn BlockDevice) -> Vec<u8> {
    let mut all = vec![0u8; dev.size() as usize];
    // Odd-sized pieces exercise unaligned reads.
    let mut pos = 0usize;
    let mut step = 12_345usize;
    while pos < all.len() {
        let n = step.min(all.len() - pos);
        dev.read_at(pos as u64, &mut all[pos..pos + n])
            .expect("read");
        pos += n;
        step = step * 3 % 400_000 + 511;
    }
    all
}

fn assert_same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: sizes differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i}: {} vs {}", a[i], b[i]);
    }
}

fn qemu_check_clean(img: &Path, fmt: &str) {
    let (code, text) = run(QEMU_IMG, &["check", "-f", fmt, s(img)]);
    if fmt != "qcow2" {
        assert!(
            code == 0 || (code == 63 && text.contains("does not support checks")),
            "qemu-img check {}: {text}",
            img.display()
        );
    } else {
        assert_eq!(code, 0, "qemu-img check {}: {text}", img.display());
        assert!(text.contains("No errors were found"), "{text}");
        assert!(!text.contains("leaked"), "{text}");
    }
}

fn qemu_compare(img: &Path, fmt: &str, raw: &Path) {
    let (code, text) = run(
        QEMU_IMG,
        &["compare", "-f", fmt, "-F", "raw", s(img), s(raw)],
    );
    assert_eq!(
        code,
        0,
        "qemu-img compare {} with {}: {text}",
        img.display(),
        raw.display()
    );
}

fn qemu_io_write(img: &Path, fmt: &str, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(s(img));
    ok(QEMU_IO, &args);
}

fn check_qemu_made(img: &Path, fmt: &str, dir: &TempDir) {
    let expected = qemu_raw(img, fmt, dir);
    let mut dev = disk::open(img, &OpenOptions::read_only()).expect("open qemu image");
    assert_eq!(
        dev.size(),
        qemu_virtual_size(img, fmt),
        "virtual size of {}",
        img.display()
    );
    assert_same(
        &read_all(dev.as_mut()),
        &expected,
        &img.display().to_string(),
    );
}

#[test]
fn reads_qemu_vpc_dynamic_and_fixed() {
    let d = TempDir::new("vpc");
    for (name, sub) in [("dyn.vhd", "dynamic"), ("fixed.vhd", "fixed")] {
        let img = d.path(name);
        ok(
            QEMU_IMG,
            &[
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                &format!("subformat={sub}"),
                s(&img),
                "20M",
            ],
        );
        qemu_io_write(
            &img,
            "vpc",
            &[
                "write -P 0xab 0 64k",
                "write -P 0x17 3000k 5k",
                "write -P 0xcd 19M 4k",
            ],
        );
        check_qemu_made(&img, "vpc", &d);
        let info = disk::info(&img).expect("info");
        let want = if sub == "fixed" {
            Format::VhdFixed
        } else {
            Format::VhdDynamic
        };
        assert_eq!(info.format, want);
    }
    // Sizes that CHS cannot express exactly, and a `force_size` image (creator `qem2`).
    for (size, extra) in [("1G", ""), ("3000M", ""), ("1000M", "force_size=on")] {
        let img = d.path("sized.vhd");
        let _ = std::fs::remove_file(&img);
        let mut args = vec!["create", "-q", "-f", "vpc"];
        if !extra.is_empty() {
            args.extend(["-o", extra]);
        }
        args.extend([s(&img), size]);
        ok(QEMU_IMG, &args);
        let dev = disk::open(&img, &OpenOptions::read_only()).expect("open");
        assert_eq!(dev.size(), qemu_virtual_size(&img, "vpc"), "{size} {extra}");
    }
}

#[test]
fn reads_qemu_qcow2_plain_backed_and_compressed() {
    let d = TempDir::new("qcow2-read");
    // Plain v3 and v2 with content.
    for compat in ["1.1", "0.10"] {
        let img = d.path(&format!("plain-{compat}.qcow2"));
        ok(
            QEMU_IMG,
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("compat={compat}"),
                s(&img),
                "10M",
            ],
        );
        qemu_io_write(
            &img,
            "qcow2",
            &[
                "write -P 0x11 0 100k",
                "write -P 0x22 5M 3k",
                "write -z 6M 128k",
                "write -P 0x33 9M 1M",
            ],
        );
        check_qemu_made(&img, "qcow2", &d);
    }
    // A backing chain: raw base, qcow2 overlay with partial writes.
    let base = d.path("base.raw");
    ok(QEMU_IMG, &["create", "-q", "-f", "raw", s(&base), "8M"]);
    qemu_io_write(&base, "raw", &["write -P 0x44 0 8M"]);
    let ov = d.path("overlay.qcow2");
    ok(
        QEMU_IMG,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            s(&ov),
        ],
    );
    qemu_io_write(
        &ov,
        "qcow2",
        &["write -P 0x55 1000 3000", "write -z 2M 64k"],
    );
    check_qemu_made(&ov, "qcow2", &d);
    let info = disk::info(&ov).expect("info");
    assert_eq!(info.backing_file.as_deref(), Some("base.raw"));
    assert_eq!(info.backing.as_ref().map(|b| b.format), Some(Format::Raw));
    // Compressed clusters from `qemu-img convert -c`.
    let src = d.path("pattern.raw");
    let mut rng = Rng(99);
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = if (i / 70_000) % 3 == 0 {
            0
        } else {
            (rng.next() % 7) as u8
        };
    }
    std::fs::write(&src, &data).expect("write pattern");
    let comp = d.path("compressed.qcow2");
    ok(
        QEMU_IMG,
        &[
            "convert",
            "-q",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&src),
            s(&comp),
        ],
    );
    check_qemu_made(&comp, "qcow2", &d);
}

/// Writes a reproducible mix of unaligned, cluster-crossing and large writes to `dev` and to
/// `mirror`.
fn scribble(dev: &mut dyn BlockDevice, mirror: &mut [u8], seed: u64, count: usize) {
    let mut rng = Rng(seed);
    let size = mirror.len() as u64;
    for i in 0..count {
        let len = match i % 4 {
            0 => 1 + rng.below(700),
            1 => 4096,
            2 => 60_000 + rng.below(200_000),
            _ => 512 * (1 + rng.below(8)),
        }
        .min(size);
        let off = rng.below(size - len + 1);
        let v = rng.next() as u8;
        let data: Vec<u8> = (0..len).map(|k| v.wrapping_add(k as u8)).collect();
        dev.write_at(off, &data).expect("write");
        mirror[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
    // The last byte, and a write ending exactly at the end.
    let end = size - 1;
    dev.write_at(end, &[0xee]).expect("write last byte");
    mirror[end as usize] = 0xee;
    dev.flush().expect("flush");
}

fn our_image_round_trip(
    format: Format,
    opts: impl Fn(&mut CreateOptions),
    qfmt: &str,
    name: &str,
    writes: usize,
) -> Vec<u8> {
    let d = TempDir::new(name);
    let img = d.path(name);
    let size = 24u64 << 20;
    let mut o = CreateOptions::new(format, size);
    opts(&mut o);
    disk::create(&img, &o).expect("create");
    assert_eq!(
        qemu_virtual_size(&img, qfmt),
        size,
        "{name}: qemu-img's idea of the size"
    );
    qemu_check_clean(&img, qfmt);
    let mut mirror = vec![0u8; size as usize];
    {
        let mut dev = disk::open(&img, &OpenOptions::read_write()).expect("open");
        assert_eq!(dev.size(), size);
        scribble(dev.as_mut(), &mut mirror, 7, writes);
        assert_same(&read_all(dev.as_mut()), &mirror, name);
    }
    // Reopen and write again (appends after existing data).
    {
        let mut dev = disk::open(&img, &OpenOptions::read_write()).expect("reopen");
        scribble(dev.as_mut(), &mut mirror, 8, 60);
    }
    let raw = d.path("mirror.raw");
    std::fs::write(&raw, &mirror).expect("mirror");
    qemu_check_clean(&img, qfmt);
    qemu_compare(&img, qfmt, &raw);
    let mut dev = disk::open(&img, &OpenOptions::read_only()).expect("open ro");
    assert_same(&read_all(dev.as_mut()), &mirror, name);
    std::fs::read(&img).expect("read image")
}

#[test]
fn our_qcow2_v3_is_clean_and_equal() {
    our_image_round_trip(Format::Qcow2, |_| {}, "qcow2", "v3.qcow2", 120);
}

#[test]
fn our_qcow2_v2_is_clean_and_equal() {
    our_image_round_trip(
        Format::Qcow2,
        |o| o.qcow2_version = 2,
        "qcow2",
        "v2.qcow2",
        120,
    );
}

#[test]
fn our_qcow2_small_clusters_grow_the_refcount_table() {
    // 512-byte clusters: one refcount block covers 128 KiB and the first refcount table
    // 8 MiB, so 24 MiB of writes need new blocks and a bigger table.
    let img = our_image_round_trip(
        Format::Qcow2,
        |o| o.cluster_size = 512,
        "qcow2",
        "small.qcow2",
        400,
    );
    let reftable_clusters = u32::from_be_bytes([img[56], img[57], img[58], img[59]]);
    let reftable_offset = u64::from_be_bytes(img[48..56].try_into().expect("8 bytes"));
    assert!(reftable_clusters > 1, "the refcount table never grew");
    assert_ne!(reftable_offset, 512, "the refcount table never moved");
}

#[test]
fn our_vhd_dynamic_is_equal() {
    our_image_round_trip(Format::VhdDynamic, |_| {}, "vpc", "dyn.vhd", 120);
}

#[test]
fn our_vhd_fixed_is_equal() {
    our_image_round_trip(Format::VhdFixed, |_| {}, "vpc", "fixed.vhd", 120);
}

#[test]
fn our_raw_is_equal() {
    our_image_round_trip(Format::Raw, |_| {}, "raw", "disk.raw", 120);
}

#[test]
fn writes_into_qemu_compressed_and_zero_clusters() {
    let d = TempDir::new("qcow2-rewrite");
    let src = d.path("src.raw");
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i / 1000) as u8;
    }
    std::fs::write(&src, &data).expect("write src");
    let comp = d.path("c.qcow2");
    ok(
        QEMU_IMG,
        &[
            "convert",
            "-q",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&src),
            s(&comp),
        ],
    );
    // Zero clusters: unallocated ones and preallocated ones.
    qemu_io_write(
        &comp,
        "qcow2",
        &[
            "write -z 1M 192k",
            "write -P 0x66 3M 64k",
            "write -z 3M 64k",
        ],
    );
    let mut mirror = qemu_raw(&comp, "qcow2", &d);
    {
        let mut dev = disk::open(&comp, &OpenOptions::read_write()).expect("open");
        scribble(dev.as_mut(), &mut mirror, 3, 80);
        for off in [(1u64 << 20) + 100, 3 << 20, 65_536 * 5 + 7] {
            let w = vec![0x99u8; 300];
            dev.write_at(off, &w).expect("write");
            mirror[off as usize..off as usize + 300].copy_from_slice(&w);
        }
        dev.flush().expect("flush");
    }
    let raw = d.path("mirror.raw");
    std::fs::write(&raw, &mirror).expect("mirror");
    qemu_check_clean(&comp, "qcow2");
    qemu_compare(&comp, "qcow2", &raw);
}

#[test]
fn qcow2_overlay_copies_on_write_and_commits() {
    let d = TempDir::new("overlay");
    let base = d.path("base.qcow2");
    let size = 6u64 << 20;
    disk::create(&base, &CreateOptions::new(Format::Qcow2, size)).expect("create base");
    let mut mirror = vec![0u8; size as usize];
    {
        let mut dev = disk::open(&base, &OpenOptions::read_write()).expect("open base");
        scribble(dev.as_mut(), &mut mirror, 11, 40);
    }
    let base_before = mirror.clone();
    let ov = d.path("overlay.qcow2");
    disk::create_overlay(&base, &ov, Format::Qcow2).expect("overlay");
    {
        let mut dev = disk::open(&ov, &OpenOptions::read_write()).expect("open overlay");
        assert_eq!(dev.size(), size);
        scribble(dev.as_mut(), &mut mirror, 12, 40);
        assert_same(&read_all(dev.as_mut()), &mirror, "overlay");
    }
    // The base is untouched; qemu sees the overlay's contents through the chain.
    let raw = d.path("mirror.raw");
    std::fs::write(&raw, &mirror).expect("mirror");
    qemu_check_clean(&ov, "qcow2");
    qemu_compare(&ov, "qcow2", &raw);
    std::fs::write(&raw, &base_before).expect("mirror");
    qemu_compare(&base, "qcow2", &raw);
    let text = ok(QEMU_IMG, &["info", s(&ov)]);
    assert!(text.contains("backing file: base.qcow2"), "{text}");
    assert!(text.contains("backing file format: qcow2"), "{text}");

    let mut calls = 0u32;
    let mut last = (0u64, 0u64);
    disk::commit(&ov, &mut |done, total| {
        calls += 1;
        last = (done, total);
    })
    .expect("commit");
    assert!(calls > 1);
    assert_eq!(last, (size, size));
    std::fs::write(&raw, &mirror).expect("mirror");
    qemu_check_clean(&base, "qcow2");
    qemu_compare(&base, "qcow2", &raw);
}

#[test]
fn vhd_differencing_overlay_and_commit() {
    let d = TempDir::new("vhd-diff");
    let base = d.path("base.vhd");
    let size = 8u64 << 20;
    disk::create(&base, &CreateOptions::new(Format::VhdDynamic, size)).expect("create");
    let mut mirror = vec![0u8; size as usize];
    {
        let mut dev = disk::open(&base, &OpenOptions::read_write()).expect("open");
        scribble(dev.as_mut(), &mut mirror, 21, 30);
    }
    let base_before = mirror.clone();
    std::fs::create_dir_all(d.path("sub")).expect("subdir");
    let child = d.path("sub/child.vhd");
    disk::create_overlay(&base, &child, Format::VhdDynamic).expect("overlay");
    {
        let mut dev = disk::open(&child, &OpenOptions::read_write()).expect("open child");
        assert_eq!(dev.info().format, Format::VhdDifferencing);
        scribble(dev.as_mut(), &mut mirror, 22, 60);
        assert_same(&read_all(dev.as_mut()), &mirror, "differencing");
    }
    // Moving the pair keeps the relative locator working.
    let moved = TempDir::new("vhd-diff-moved");
    std::fs::create_dir_all(moved.path("sub")).expect("subdir");
    std::fs::copy(&base, moved.path("base.vhd")).expect("copy");
    std::fs::copy(&child, moved.path("sub/child.vhd")).expect("copy");
    let mut dev =
        disk::open(&moved.path("sub/child.vhd"), &OpenOptions::read_only()).expect("open moved");
    assert_same(&read_all(dev.as_mut()), &mirror, "moved differencing");
    let info = dev.info();
    assert_eq!(
        info.backing.as_ref().map(|b| b.path.clone()),
        Some(moved.path("sub/../base.vhd"))
    );
    drop(dev);

    let raw = d.path("mirror.raw");
    std::fs::write(&raw, &base_before).expect("mirror");
    qemu_compare(&base, "vpc", &raw);
    disk::commit(&child, &mut |_, _| {}).expect("commit");
    std::fs::write(&raw, &mirror).expect("mirror");
    qemu_compare(&base, "vpc", &raw);
    // Still a valid child of the same parent.
    let mut dev = disk::open(&child, &OpenOptions::read_only()).expect("reopen child");
    assert_same(&read_all(dev.as_mut()), &mirror, "after commit");
}

#[test]
fn convert_between_formats() {
    let d = TempDir::new("convert");
    let src = d.path("src.qcow2");
    ok(QEMU_IMG, &["create", "-q", "-f", "qcow2", s(&src), "12M"]);
    qemu_io_write(
        &src,
        "qcow2",
        &[
            "write -P 0x71 0 300k",
            "write -P 0x72 7M 5k",
            "write -P 0x73 12284k 4k",
        ],
    );
    let expected = qemu_raw(&src, "qcow2", &d);
    let raw = d.path("expected.raw");
    std::fs::write(&raw, &expected).expect("expected");
    let mut prev = src.clone();
    for (fmt, q, name) in [
        (Format::VhdDynamic, "vpc", "a.vhd"),
        (Format::Qcow2, "qcow2", "b.qcow2"),
        (Format::VhdFixed, "vpc", "c.vhd"),
        (Format::Raw, "raw", "d.raw"),
    ] {
        let dst = d.path(name);
        disk::convert(&prev, &dst, fmt, &mut |_, _| {}).expect("convert");
        qemu_check_clean(&dst, q);
        qemu_compare(&dst, q, &raw);
        let info = disk::info(&dst).expect("info");
        assert_eq!(info.format, fmt);
        prev = dst;
    }
    // Sparse: the qcow2 copy holds little more than the data written.
    let q = disk::info(&d.path("b.qcow2")).expect("info");
    assert!(q.file_size < 2 << 20, "qcow2 copy is {} bytes", q.file_size);
    // Refuses to overwrite.
    let e = disk::convert(&src, &d.path("b.qcow2"), Format::Qcow2, &mut |_, _| {}).unwrap_err();
    assert!(
        e.to_string().contains("b.qcow2") && e.to_string().contains("exists"),
        "{e}"
    );
}

fn expect_error(path: &Path, needle: &str) -> String {
    let e = match disk::open(path, &OpenOptions::read_only()) {
        Ok(_) => panic!("{} opened but should not", path.display()),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains(&path.display().to_string()),
        "error does not name the file: {e}"
    );
    assert!(e.contains(needle), "error `{e}` lacks `{needle}`");
    assert_eq!(e.lines().count(), 1, "{e}");
    e
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut data = std::fs::read(path).expect("read");
    data[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).expect("write");
}

#[test]
fn bad_images_give_clear_errors() {
    let d = TempDir::new("bad");
    // Truncated qcow2 header.
    let q = d.path("trunc.qcow2");
    disk::create(&q, &CreateOptions::new(Format::Qcow2, 1 << 20)).expect("create");
    let data = std::fs::read(&q).expect("read");
    std::fs::write(&q, &data[..50]).expect("truncate");
    expect_error(&q, "truncated");
    // L1 table past the end of the file.
    let q = d.path("l1.qcow2");
    disk::create(&q, &CreateOptions::new(Format::Qcow2, 1 << 20)).expect("create");
    patch(&q, 40, &(1u64 << 40).to_be_bytes());
    expect_error(&q, "L1 table");
    // Huge virtual size.
    let q = d.path("huge.qcow2");
    disk::create(&q, &CreateOptions::new(Format::Qcow2, 1 << 20)).expect("create");
    patch(&q, 24, &(1u64 << 62).to_be_bytes());
    expect_error(&q, "virtual size");
    let v = d.path("huge.vhd");
    disk::create(&v, &CreateOptions::new(Format::VhdDynamic, 1 << 20)).expect("create");
    let len = std::fs::metadata(&v).expect("meta").len();
    for off in [0, len - 512] {
        patch(&v, off + 48, &(1u64 << 50).to_be_bytes());
        let mut f = std::fs::read(&v).expect("read")[off as usize..off as usize + 512].to_vec();
        f[64..68].fill(0);
        let sum = !f.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        patch(&v, off + 64, &sum.to_be_bytes());
    }
    expect_error(&v, "2040 GiB");
    // Corrupt checksums: fixed footer, dynamic header.
    let v = d.path("sum.vhd");
    disk::create(&v, &CreateOptions::new(Format::VhdFixed, 1 << 20)).expect("create");
    patch(&v, (1 << 20) + 40, &[0x12]);
    expect_error(&v, "checksum");
    let v = d.path("dynsum.vhd");
    disk::create(&v, &CreateOptions::new(Format::VhdDynamic, 1 << 20)).expect("create");
    patch(&v, 512 + 30, &[0x77]);
    expect_error(&v, "checksum");
    // Truncated dynamic VHD: the dynamic header is cut off (only the footer copy at 0 is left).
    let v = d.path("cut.vhd");
    disk::create(&v, &CreateOptions::new(Format::VhdDynamic, 64 << 20)).expect("create");
    let data = std::fs::read(&v).expect("read");
    std::fs::write(&v, &data[..1000]).expect("write");
    expect_error(&v, "truncated");
    // A dynamic VHD whose block table points past the end of the file.
    let v = d.path("batpast.vhd");
    disk::create(&v, &CreateOptions::new(Format::VhdDynamic, 64 << 20)).expect("create");
    patch(&v, 1536, &0x0100_0000u32.to_be_bytes());
    expect_error(&v, "truncated");
    // Backing loop a -> b -> a.
    let a = d.path("a.qcow2");
    let b = d.path("b.qcow2");
    disk::create(&a, &CreateOptions::new(Format::Qcow2, 1 << 20)).expect("create a");
    let mut o = CreateOptions::new(Format::Qcow2, 1 << 20);
    o.backing = Some(a.clone());
    disk::create(&b, &o).expect("create b");
    ok(
        QEMU_IMG,
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            s(&a),
        ],
    );
    let e = expect_error(&b, "loops");
    assert!(e.contains("a.qcow2"), "{e}");
    // Encrypted images are refused by name.
    let enc = d.path("enc.qcow2");
    disk::create(&enc, &CreateOptions::new(Format::Qcow2, 1 << 20)).expect("create");
    patch(&enc, 32, &1u32.to_be_bytes());
    expect_error(&enc, "encrypted");
    // Unknown incompatible feature bits.
    let inc = d.path("incompat.qcow2");
    disk::create(&inc, &CreateOptions::new(Format::Qcow2, 1 << 20)).expect("create");
    patch(&inc, 72, &(1u64 << 20).to_be_bytes());
    expect_error(&inc, "bit 20");
    // A missing file.
    expect_error(&d.path("nope.qcow2"), "cannot open");
}

#[test]
fn writes_into_qemu_made_images() {
    let d = TempDir::new("qemu-made-write");
    let base = d.path("base.raw");
    ok(QEMU_IMG, &["create", "-q", "-f", "raw", s(&base), "6M"]);
    qemu_io_write(&base, "raw", &["write -P 0x3c 0 6M"]);
    let cases: Vec<(PathBuf, &str, Vec<&str>)> = vec![
        (d.path("d.vhd"), "vpc", vec!["-f", "vpc"]),
        (
            d.path("f.vhd"),
            "vpc",
            vec!["-f", "vpc", "-o", "subformat=fixed"],
        ),
        (
            d.path("r1.qcow2"),
            "qcow2",
            vec!["-f", "qcow2", "-o", "refcount_bits=1"],
        ),
        (
            d.path("r64.qcow2"),
            "qcow2",
            vec!["-f", "qcow2", "-o", "refcount_bits=64"],
        ),
        (
            d.path("v2.qcow2"),
            "qcow2",
            vec!["-f", "qcow2", "-o", "compat=0.10,cluster_size=4096"],
        ),
        (
            d.path("ov.qcow2"),
            "qcow2",
            vec!["-f", "qcow2", "-b", "base.raw", "-F", "raw"],
        ),
    ];
    for (img, fmt, opts) in cases {
        let mut args = vec!["create", "-q"];
        args.extend(opts);
        args.push(s(&img));
        if !args.contains(&"-b") {
            args.push("6M");
        }
        ok(QEMU_IMG, &args);
        qemu_io_write(
            &img,
            fmt,
            &["write -P 0x21 64k 100k", "write -P 0x22 5M 3k"],
        );
        let mut mirror = qemu_raw(&img, fmt, &d);
        {
            let mut dev = disk::open(&img, &OpenOptions::read_write()).expect("open");
            assert_eq!(dev.size(), mirror.len() as u64, "{}", img.display());
            scribble(dev.as_mut(), &mut mirror, 31, 50);
        }
        let raw = d.path("mirror.raw");
        std::fs::write(&raw, &mirror).expect("mirror");
        qemu_check_clean(&img, fmt);
        qemu_compare(&img, fmt, &raw);
    }
}
