//! The Snapshots panel: the tree of a VM's snapshots with Take, Revert, Delete and Rename.

use std::path::Path;
use std::time::{Duration, Instant};
use vm_library::snapshots::{self, Snapshot, SnapshotTree};

/// How long the panel trusts what it read from disk (other windows or the command line may
/// change the tree meanwhile); actions re-read at once.
const REFRESH: Duration = Duration::from_secs(2);

/// What the panel shows, read from the VM folder.
#[derive(Debug, Clone)]
struct Loaded {
    at: Instant,
    tree: Result<SnapshotTree, String>,
    take_needs: Option<u64>,
}

/// What the user asked the panel for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Take a snapshot with this name.
    Take(String),
    /// Revert to a snapshot.
    Revert(u32),
    /// Delete a snapshot.
    Delete(u32),
    /// Rename a snapshot.
    Rename(u32, String),
}

/// The panel's own state.
#[derive(Debug, Default, Clone)]
pub struct SnapshotPanel {
    /// The snapshot picked in the list.
    pub selected: Option<u32>,
    /// Name for the next snapshot.
    pub new_name: String,
    /// New name for the selected snapshot.
    pub rename: String,
    /// A delete waiting for confirmation.
    pub confirm_delete: Option<u32>,
    loaded: Option<Loaded>,
}

fn megabytes(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

impl SnapshotPanel {
    /// Draws the panel for the VM in `dir`; `ram_bytes` is the running VM's RAM (a live
    /// snapshot stores it), `None` when the VM is off (the snapshot holds the disks only).
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        dir: &Path,
        ram_bytes: Option<u64>,
    ) -> Option<SnapshotAction> {
        let mut action = None;
        if self
            .loaded
            .as_ref()
            .is_none_or(|l| l.at.elapsed() > REFRESH)
        {
            self.loaded = Some(Loaded {
                at: Instant::now(),
                tree: SnapshotTree::load(dir).map_err(|e| e.to_string()),
                take_needs: vm_library::Library::load(dir)
                    .ok()
                    .map(|c| snapshots::space_for_take(&c, ram_bytes)),
            });
        }
        let loaded = self.loaded.clone()?;
        let tree = match loaded.tree {
            Ok(t) => t,
            Err(e) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
                return None;
            }
        };
        ui.heading("Snapshots");
        if self.new_name.is_empty() {
            self.new_name = format!("Snapshot {}", tree.snapshots.len() + 1);
        }
        ui.horizontal(|ui| {
            let l = ui.label("Name");
            ui.add(egui::TextEdit::singleline(&mut self.new_name).desired_width(140.0))
                .labelled_by(l.id);
            if ui.button("Take snapshot").clicked() {
                action = Some(SnapshotAction::Take(std::mem::take(&mut self.new_name)));
            }
        });
        if let Some(need) = loaded.take_needs {
            let kind = if ram_bytes.is_some() {
                "with the running machine's state"
            } else {
                "of the disks"
            };
            ui.label(format!(
                "A snapshot {kind} needs up to {}.",
                megabytes(need)
            ));
        }
        ui.separator();
        if tree.snapshots.is_empty() {
            ui.label("No snapshots yet.");
        }
        self.rows(ui, &tree, None, 0);
        if let Some(id) = self.selected.filter(|id| tree.get(*id).is_some()) {
            ui.separator();
            ui.horizontal(|ui| {
                if ui.button("Revert").clicked() {
                    action = Some(SnapshotAction::Revert(id));
                }
                if ui.button("Delete…").clicked() {
                    self.confirm_delete = Some(id);
                }
            });
            ui.horizontal(|ui| {
                let l = ui.label("New name");
                ui.add(egui::TextEdit::singleline(&mut self.rename).desired_width(120.0))
                    .labelled_by(l.id);
                if ui.button("Rename").clicked() && !self.rename.trim().is_empty() {
                    action = Some(SnapshotAction::Rename(id, std::mem::take(&mut self.rename)));
                }
            });
            if self.confirm_delete == Some(id) {
                let need = snapshots::space_for_delete(dir, id).unwrap_or(0);
                let merge = if tree.current == Some(id) {
                    format!(
                        "The changes made since are merged into it (up to {} more disk space).",
                        megabytes(need)
                    )
                } else {
                    "Its disk layers are removed; no other state needs them.".to_string()
                };
                ui.label(merge);
                ui.horizontal(|ui| {
                    if ui.button("Delete snapshot").clicked() {
                        self.confirm_delete = None;
                        action = Some(SnapshotAction::Delete(id));
                    }
                    if ui.button("Keep it").clicked() {
                        self.confirm_delete = None;
                    }
                });
            }
        }
        if action.is_some() {
            self.loaded = None;
        }
        action
    }

    fn rows(&mut self, ui: &mut egui::Ui, tree: &SnapshotTree, parent: Option<u32>, depth: usize) {
        for s in tree.children(parent) {
            ui.horizontal(|ui| {
                ui.add_space(16.0 * depth as f32);
                let label = row_label(s, tree.current == Some(s.id));
                if ui
                    .selectable_label(self.selected == Some(s.id), label)
                    .clicked()
                {
                    self.selected = Some(s.id);
                    self.rename = s.name.clone();
                }
            });
            self.rows(ui, tree, Some(s.id), depth + 1);
        }
    }
}

fn row_label(s: &Snapshot, current: bool) -> String {
    let kind = if s.deleting {
        "being deleted"
    } else if s.live {
        "running"
    } else {
        "disks only"
    };
    let here = if current { " — current" } else { "" };
    format!("{} ({kind}){here}", s.name)
}
