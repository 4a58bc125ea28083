//! Host-side I/O benchmark on one image, with the access pattern of `qemu-img bench`: `count`
//! requests of `size` bytes, the first at offset 0, each next one `step` bytes further,
//! wrapping modulo the virtual size. Prints the elapsed seconds and MiB/s.
//!
//! `cargo run --release -p disk --example bench -- IMAGE read|write COUNT SIZE STEP`

use std::path::PathBuf;
use std::time::Instant;

use disk::OpenOptions;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        return Err("usage: bench IMAGE read|write COUNT SIZE STEP".into());
    }
    let path = PathBuf::from(&args[0]);
    let write = match args[1].as_str() {
        "read" => false,
        "write" => true,
        m => return Err(format!("mode `{m}`: use read or write")),
    };
    let num = |s: &str| s.parse::<u64>().map_err(|e| format!("`{s}`: {e}"));
    let (count, size, step) = (num(&args[2])?, num(&args[3])?, num(&args[4])?);
    let opts = OpenOptions {
        read_only: !write,
        format: None,
    };
    let mut dev = disk::open(&path, &opts).map_err(|e| e.to_string())?;
    let image_size = dev.size();
    if size == 0 || size > image_size {
        return Err(format!(
            "request size {size} does not fit the {image_size}-byte disk"
        ));
    }
    let mut buf = vec![0xa5u8; size as usize];
    let mut offset = 0u64;
    let start = Instant::now();
    for _ in 0..count {
        if write {
            dev.write_at(offset, &buf).map_err(|e| e.to_string())?;
        } else {
            dev.read_at(offset, &mut buf).map_err(|e| e.to_string())?;
        }
        offset = (offset + step) % image_size;
        if offset + size > image_size {
            offset = 0;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    dev.flush().map_err(|e| e.to_string())?;
    let mib = (count * size) as f64 / f64::from(1 << 20);
    println!("{secs:.3} s, {:.1} MiB/s", mib / secs);
    Ok(())
}
