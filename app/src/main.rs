//! `terrarium`: the desktop app (no arguments) and the command line (`terrarium run ...`).
#![forbid(unsafe_code)]

mod disk_cmd;
mod gui;
mod run;
mod snapshot_cmd;

use clap::{Parser, Subcommand};

/// Terrarium runs isolated local virtual machines.
#[derive(Parser, Debug)]
#[command(name = "terrarium", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once at start-up, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run one VM headless until it powers off.
    Run(run::RunArgs),
    /// Create, inspect and convert disk images.
    Disk(disk_cmd::DiskArgs),
    /// Take, list, revert, delete and rename a library VM's snapshots.
    Snapshot(snapshot_cmd::SnapshotArgs),
    /// Open the desktop app (what `terrarium` alone does), optionally starting a VM.
    Gui(GuiArgs),
}

/// Options of `terrarium gui`.
#[derive(clap::Args, Debug)]
struct GuiArgs {
    /// Start the library VM with this name when the window opens.
    #[arg(long)]
    start: Option<String>,
    /// Write frame statistics to this file on exit (for benchmarks).
    #[arg(long)]
    stats: Option<std::path::PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TERRARIUM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        Some(Command::Run(args)) => match run::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("terrarium: {e:#}");
                1
            }
        },
        Some(Command::Disk(args)) => match disk_cmd::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("terrarium: {e:#}");
                1
            }
        },
        Some(Command::Snapshot(args)) => match snapshot_cmd::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("terrarium: {e:#}");
                1
            }
        },
        Some(Command::Gui(args)) => open_gui(gui::GuiOptions {
            start: args.start,
            stats: args.stats,
        }),
        None => open_gui(gui::GuiOptions::default()),
    };
    std::process::exit(code);
}

fn open_gui(options: gui::GuiOptions) -> i32 {
    match gui::run(options) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("terrarium: {e:#}");
            1
        }
    }
}
