//! `terrarium disk`: create, inspect and convert disk images.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use disk::{CreateOptions, Format, ImageInfo};

/// Arguments of `terrarium disk`.
#[derive(Args, Debug)]
pub struct DiskArgs {
    #[command(subcommand)]
    command: DiskCommand,
}

#[derive(Subcommand, Debug)]
enum DiskCommand {
    /// Create an empty disk image, or an overlay on a backing image.
    Create {
        /// The new image (an existing file is never overwritten).
        file: PathBuf,
        /// Image format.
        #[arg(long)]
        format: FormatArg,
        /// Virtual size: bytes, or a number with a K, M, G or T suffix (powers of 1024).
        /// Optional with --backing (then the backing image's size).
        #[arg(long)]
        size: Option<String>,
        /// Backing image (qcow2) or parent VHD (vhd: makes a differencing disk).
        #[arg(long)]
        backing: Option<PathBuf>,
    },
    /// Show an image's format, sizes and backing chain.
    Info {
        /// The image.
        file: PathBuf,
    },
    /// Copy an image (flattening its backing chain) into a new image of another format.
    Convert {
        /// The source image.
        src: PathBuf,
        /// The new image (an existing file is never overwritten).
        dst: PathBuf,
        /// Format of the new image.
        #[arg(long)]
        format: FormatArg,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Raw,
    Vhd,
    VhdFixed,
    Qcow2,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Raw => Format::Raw,
            FormatArg::Vhd => Format::VhdDynamic,
            FormatArg::VhdFixed => Format::VhdFixed,
            FormatArg::Qcow2 => Format::Qcow2,
        }
    }
}

/// Parses `10G`, `512M`, `1048576`, `4k`: binary suffixes K, M, G, T (an optional trailing
/// `B` or `iB` is accepted).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => bail!("--size: `{s}` has an unknown suffix; use K, M, G or T"),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "--size: `{s}` is not a size; use a number with an optional K, M, G or T suffix"
        )
    })?;
    let size = n
        .checked_mul(1u64 << shift)
        .with_context(|| format!("--size: `{s}` is too large"))?;
    if size == 0 {
        bail!("--size: the size must be larger than zero");
    }
    Ok(size)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {} ({bytes} bytes)", UNITS[u])
    }
}

fn print_info(i: &ImageInfo, depth: usize) {
    let pad = "  ".repeat(depth);
    println!("{pad}image: {}", i.path.display());
    match i.format_version {
        Some(v) => println!("{pad}format: {} (version {v})", i.format),
        None => println!("{pad}format: {}", i.format),
    }
    println!("{pad}virtual size: {}", human(i.virtual_size));
    println!("{pad}file size: {}", human(i.file_size));
    println!("{pad}disk usage: {}", human(i.allocated_bytes));
    if let Some(cs) = i.cluster_size {
        let what = if i.format == Format::Qcow2 {
            "cluster size"
        } else {
            "block size"
        };
        println!("{pad}{what}: {cs}");
    }
    if let Some(b) = &i.backing_file {
        println!("{pad}backing file: {b}");
    }
    if let Some(b) = &i.backing {
        println!("{pad}backing image:");
        print_info(b, depth + 1);
    }
}

fn progress_printer(label: &'static str) -> impl FnMut(u64, u64) {
    let tty = std::io::stderr().is_terminal();
    let mut last = u64::MAX;
    move |done, total| {
        if !tty || total == 0 {
            return;
        }
        let pct = done.saturating_mul(100) / total;
        if pct != last {
            last = pct;
            eprint!("\r{label}: {pct:3}%");
            if done >= total {
                eprintln!();
            }
        }
    }
}

/// Runs `terrarium disk ...`; returns the exit code.
pub fn run(args: DiskArgs) -> anyhow::Result<i32> {
    match args.command {
        DiskCommand::Create {
            file,
            format,
            size,
            backing,
        } => {
            let format = Format::from(format);
            let size = size.as_deref().map(parse_size).transpose()?;
            if size.is_none() && backing.is_none() {
                bail!(
                    "{}: give --size (for example --size 20G) or --backing",
                    file.display()
                );
            }
            let mut o = CreateOptions::new(format, 0);
            o.size = size;
            if backing.is_some() && format == Format::VhdDynamic {
                o.format = Format::VhdDifferencing;
            }
            o.backing = backing;
            disk::create(&file, &o)?;
            let info = disk::info(&file)?;
            println!(
                "created {} ({}, {})",
                file.display(),
                info.format,
                human(info.virtual_size)
            );
        }
        DiskCommand::Info { file } => print_info(&disk::info(&file)?, 0),
        DiskCommand::Convert { src, dst, format } => {
            disk::convert(
                &src,
                &dst,
                format.into(),
                &mut progress_printer("converting"),
            )?;
            println!("converted {} to {}", src.display(), dst.display());
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert!(parse_size("10X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
