//! `terrarium snapshot`: the snapshot tree of a library VM from the command line.
//!
//! The VM is named as in the library (or given as its folder). Snapshots taken here hold the
//! disks only; a VM running in the desktop app takes live snapshots from its window, and the
//! commands that change its disks refuse to run meanwhile.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use vm_library::snapshots::{self, SnapshotTree};
use vm_library::Library;

/// Arguments of `terrarium snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// List a VM's snapshots as a tree.
    List {
        /// VM name (or folder).
        vm: String,
    },
    /// Take a snapshot of a VM that is off (its disks).
    Take {
        /// VM name (or folder).
        vm: String,
        /// Name of the new snapshot.
        name: String,
    },
    /// Make the VM what it was at a snapshot (the changes since are dropped); a snapshot of a
    /// running VM makes the next start resume there.
    Revert {
        /// VM name (or folder).
        vm: String,
        /// Snapshot id or name.
        snapshot: String,
    },
    /// Delete a snapshot, merging its changes where the VM's state needs them.
    Delete {
        /// VM name (or folder).
        vm: String,
        /// Snapshot id or name.
        snapshot: String,
    },
    /// Rename a snapshot.
    Rename {
        /// VM name (or folder).
        vm: String,
        /// Snapshot id or name.
        snapshot: String,
        /// The new name.
        name: String,
    },
}

/// The folder of the VM called `vm` in the library, or `vm` itself when it is a VM folder.
fn vm_dir(vm: &str) -> Result<PathBuf> {
    let p = Path::new(vm);
    if p.join(vm_library::CONFIG_FILE).is_file() {
        return Ok(p.to_path_buf());
    }
    let library = Library::open_default()?;
    let entries = library.list();
    match entries.iter().find(|e| e.display_name() == vm) {
        Some(e) => Ok(e.dir.clone()),
        None => {
            let names: Vec<String> = entries.iter().map(|e| e.display_name()).collect();
            bail!(
                "there is no VM named {vm} in {} (VMs: {})",
                library.root().display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        }
    }
}

fn find(tree: &SnapshotTree, dir: &Path, which: &str) -> Result<u32> {
    if let Ok(id) = which.parse::<u32>() {
        if tree.get(id).is_some() {
            return Ok(id);
        }
    }
    let named: Vec<u32> = tree
        .snapshots
        .iter()
        .filter(|s| s.name == which)
        .map(|s| s.id)
        .collect();
    match named.as_slice() {
        [id] => Ok(*id),
        [] => bail!("{} has no snapshot {which}", dir.display()),
        _ => bail!(
            "several snapshots are named {which}: give the id (see `terrarium snapshot list`)"
        ),
    }
}

fn refuse_if_running(dir: &Path) -> Result<()> {
    if let Some(pid) = vm_library::running_pid(dir) {
        bail!(
            "{} is running (process {pid}): use the Snapshots panel of its window, or turn it \
             off first",
            dir.display()
        );
    }
    Ok(())
}

fn print_tree(tree: &SnapshotTree, parent: Option<u32>, depth: usize) {
    for s in tree.children(parent) {
        let kind = if s.live { "running" } else { "disks only" };
        let here = if tree.current == Some(s.id) {
            "  <- current"
        } else {
            ""
        };
        println!(
            "{}{:>3}  {} ({kind}){here}",
            "  ".repeat(depth),
            s.id,
            s.name
        );
        print_tree(tree, Some(s.id), depth + 1);
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Runs the command; returns the exit code.
pub fn run(args: SnapshotArgs) -> Result<i32> {
    match args.command {
        SnapshotCommand::List { vm } => {
            let dir = vm_dir(&vm)?;
            let tree = SnapshotTree::load(&dir)?;
            if tree.snapshots.is_empty() {
                println!("{vm} has no snapshots");
            }
            print_tree(&tree, None, 0);
        }
        SnapshotCommand::Take { vm, name } => {
            let dir = vm_dir(&vm)?;
            refuse_if_running(&dir)?;
            let config = Library::load(&dir)?;
            eprintln!(
                "taking a snapshot of the disks (needs up to {})",
                mib(snapshots::space_for_take(&config, None))
            );
            let s = snapshots::take(&dir, &name, None)?;
            println!("snapshot {} \"{}\" taken", s.id, s.name);
        }
        SnapshotCommand::Revert { vm, snapshot } => {
            let dir = vm_dir(&vm)?;
            refuse_if_running(&dir)?;
            let tree = SnapshotTree::load(&dir)?;
            let id = find(&tree, &dir, &snapshot)?;
            let state = snapshots::revert(&dir, id)?;
            let saved = dir.join(vm_library::SAVED_STATE_DIR);
            let _ = std::fs::remove_dir_all(&saved);
            if let Some(state) = state {
                // The next start resumes the snapshot's machine (links, not copies).
                std::fs::create_dir_all(&saved)
                    .with_context(|| format!("cannot create {}", saved.display()))?;
                for f in [machine::saved::STATE_FILE, machine::saved::RAM_FILE] {
                    let (from, to) = (state.join(f), saved.join(f));
                    std::fs::hard_link(&from, &to)
                        .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
                        .with_context(|| format!("cannot link {}", to.display()))?;
                }
                println!("reverted; the next start resumes the VM where the snapshot was taken");
            } else {
                println!("reverted the disks");
            }
        }
        SnapshotCommand::Delete { vm, snapshot } => {
            let dir = vm_dir(&vm)?;
            refuse_if_running(&dir)?;
            let tree = SnapshotTree::load(&dir)?;
            let id = find(&tree, &dir, &snapshot)?;
            let need = snapshots::space_for_delete(&dir, id)?;
            if need > 0 {
                eprintln!(
                    "merging the changes since into it (needs up to {})",
                    mib(need)
                );
            }
            let mut shown = None;
            snapshots::delete(&dir, id, &mut |done, total| {
                // Progress in 10 % steps (each disk's merge counts from 0 again).
                let step = (done * 10).checked_div(total).unwrap_or(10);
                if shown != Some((step, total)) {
                    shown = Some((step, total));
                    eprintln!("merging: {}% of {}", step * 10, mib(total));
                }
            })?;
            println!("snapshot {id} deleted");
        }
        SnapshotCommand::Rename { vm, snapshot, name } => {
            let dir = vm_dir(&vm)?;
            let tree = SnapshotTree::load(&dir)?;
            let id = find(&tree, &dir, &snapshot)?;
            snapshots::rename(&dir, id, &name)?;
            println!("snapshot {id} renamed to \"{}\"", name.trim());
        }
    }
    Ok(0)
}
