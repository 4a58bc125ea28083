//! The desktop app driven through egui_kittest: drops, clicks and keys as a person makes them,
//! on a library in a scratch folder and real VMs on the software CPU.

use super::*;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use machine::RunState;
use std::time::{Duration, Instant};
use vm_library::BackendChoice;

/// The test asset folder (`scripts/fetch-assets.sh` fills it).
fn assets() -> PathBuf {
    std::env::var_os("TERRARIUM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/assets"))
}

fn asset(name: &str) -> PathBuf {
    let p = assets().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

/// A fresh folder under the target directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tmp/gui-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn harness(app: TerrariumApp) -> Harness<'static, TerrariumApp> {
    Harness::builder()
        .with_size(egui::vec2(1100.0, 800.0))
        .build_ui_state(|ui, app: &mut TerrariumApp| app.show(ui), app)
}

fn app_in(dir: &Path) -> TerrariumApp {
    let mut app = TerrariumApp::new(Library::open(&dir.join("vms")).unwrap());
    app.firmware = Some(asset("bios.bin"));
    app
}

/// A file dropped from the desktop, as egui reports it.
#[derive(Debug)]
struct DroppedPath(PathBuf);

impl egui::DroppedFile for DroppedPath {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn drop_file(h: &mut Harness<'_, TerrariumApp>, path: &Path) {
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(DroppedPath(path.to_path_buf())));
    h.run_steps(2);
}

/// Runs frames until `done` holds for the app or `limit` passes. Once it holds, a few more
/// frames let windows opened meanwhile (a console started in the first frame) draw.
fn run_until(
    h: &mut Harness<'_, TerrariumApp>,
    limit: Duration,
    done: impl Fn(&TerrariumApp) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        h.step();
        if done(h.state()) {
            h.run_steps(3);
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Clicks the widget labelled `label` and lets the UI settle for a few frames (a running VM
/// keeps asking for repaints, so `run` would never settle).
fn click(h: &mut Harness<'_, TerrariumApp>, label: &str) {
    h.get_by_label(label).click();
    h.run_steps(3);
}

/// The first console.
fn console(app: &TerrariumApp) -> MutexGuard<'_, Console> {
    lock(app.consoles.first().expect("a console"))
}

/// True once SeaBIOS's banner is on the first console's screen.
fn seabios_on_screen(app: &TerrariumApp) -> bool {
    app.consoles.first().is_some_and(|c| {
        let c = lock(c);
        c.session.screen.texture().is_some()
            && c.session
                .machine()
                .text_screen()
                .is_some_and(|rows| rows.iter().any(|r| r.contains("SeaBIOS")))
    })
}

/// A library VM on the software CPU with `config` tweaks; returns its folder.
fn make_vm(app: &mut TerrariumApp, name: &str, tweak: impl FnOnce(&mut VmConfig)) -> PathBuf {
    let mut c = VmConfig::new(name, OsFamily::Other);
    c.memory_mib = 32;
    c.backend = BackendChoice::Emu;
    tweak(&mut c);
    let entry = app.library.create(c, DiskPlan::None).unwrap();
    app.reload();
    entry.dir
}

#[test]
fn dropping_an_iso_opens_the_wizard_prefilled_and_creates_the_vm() {
    let dir = scratch("wizard-drop");
    let iso = asset("linux.iso");
    let mut h = harness(app_in(&dir));
    h.run();
    h.get_by_label("No virtual machines yet");
    drop_file(&mut h, &iso);

    let w = h
        .state()
        .wizard
        .as_ref()
        .expect("the drop opened the wizard");
    assert_eq!(w.form.os, OsFamily::Linux);
    assert_eq!(w.form.cdrom, iso.display().to_string());
    assert_eq!(w.form.boot, vm_library::BootChoice::Cd);
    assert_eq!(w.disk, wizard::DiskChoice::Create);
    assert_eq!(w.form.memory_mib, OsFamily::Linux.default_memory_mib());
    h.get_by_label("Detected");
    h.get_by_label("qcow2").click();
    h.run();
    h.get_by_label("Create").click();
    h.run();

    assert!(h.state().wizard.is_none(), "{:?}", h.state().wizard);
    let entries = h.state().library.list();
    assert_eq!(entries.len(), 1);
    let c = entries[0].config.as_ref().unwrap();
    assert_eq!(c.os, OsFamily::Linux);
    assert_eq!(c.cdrom.as_deref(), Some(iso.as_path()));
    assert_eq!(c.disks.len(), 1);
    let disk = c.resolve(&entries[0].dir, &c.disks[0]);
    let image = disk::open(&disk, &disk::OpenOptions::read_only()).unwrap();
    assert_eq!(image.info().format, disk::Format::Qcow2);
    assert_eq!(image.size(), OsFamily::Linux.default_disk_gib() << 30);
    let toml = std::fs::read_to_string(entries[0].config_path()).unwrap();
    assert!(toml.contains("os = \"linux\""), "{toml}");
    // The library lists the new VM.
    h.get_by_label(&c.name);
}

#[test]
fn dropping_a_floppy_or_disk_prefills_their_drives() {
    let dir = scratch("wizard-floppy");
    let mut h = harness(app_in(&dir));
    h.run();
    drop_file(&mut h, &asset("memtest-floppy.img"));
    let w = h.state().wizard.as_ref().expect("wizard");
    assert_eq!(w.form.os, OsFamily::MemTest);
    assert_eq!(w.form.boot, vm_library::BootChoice::Floppy);
    assert!(w.form.floppy.ends_with("memtest-floppy.img"));
    assert_eq!(w.disk, wizard::DiskChoice::None);
    h.get_by_label("Cancel").click();
    h.run();
    assert!(h.state().wizard.is_none());

    drop_file(&mut h, &asset("linux-hdd.img"));
    let w = h.state().wizard.as_ref().expect("wizard");
    assert_eq!(w.disk, wizard::DiskChoice::Existing);
    assert_eq!(w.form.boot, vm_library::BootChoice::Disk);
    assert!(w.existing_disk.ends_with("linux-hdd.img"));
    assert_eq!(h.state().library.list().len(), 0, "cancel created nothing");
}

#[test]
fn dropping_a_file_that_is_not_an_image_is_refused() {
    let dir = scratch("wizard-reject");
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "shopping list: eggs, milk\n").unwrap();
    let mut h = harness(app_in(&dir));
    h.run();
    drop_file(&mut h, &notes);
    assert!(h.state().wizard.is_none());
    let message = h.state().errors.first().cloned().expect("an error dialog");
    assert!(message.contains("notes.txt"), "{message}");
    h.get_by_label("Something went wrong");
    h.get_by_label("OK").click();
    h.run();
    assert!(h.state().errors.is_empty());
    assert!(h.state().library.list().is_empty());
}

#[test]
fn dropping_a_vm_folder_imports_it() {
    let dir = scratch("import");
    let elsewhere = Library::open(&dir.join("elsewhere")).unwrap();
    let e = elsewhere
        .create(VmConfig::new("Traveller", OsFamily::Dos), DiskPlan::None)
        .unwrap();
    let mut h = harness(app_in(&dir));
    h.run();
    drop_file(&mut h, &e.dir);
    h.run();
    h.get_by_label("Traveller");
    assert_eq!(h.state().library.list().len(), 1);
}

#[test]
fn start_pause_resume_and_power_off() {
    let dir = scratch("lifecycle");
    let mut app = app_in(&dir);
    let vm = make_vm(&mut app, "Lifecycle", |_| {});
    let mut h = harness(app);
    h.run();
    h.get_by_label("Lifecycle").click();
    h.run();
    h.get_by_label("Start").click();
    h.step();
    assert_eq!(
        h.state().consoles.len(),
        1,
        "errors: {:?}",
        h.state().errors
    );
    assert_eq!(h.state().state_of(&vm), StateIcon::Running);
    // SeaBIOS draws its banner on the VGA, which the console shows.
    assert!(
        run_until(&mut h, Duration::from_secs(60), seabios_on_screen),
        "no SeaBIOS banner"
    );
    assert_eq!(console(h.state()).session.backend, "emu");

    click(&mut h, "Machine");
    click(&mut h, "Pause");
    assert_eq!(console(h.state()).session.state, RunState::Paused);
    assert_eq!(h.state().state_of(&vm), StateIcon::Paused);
    click(&mut h, "Machine");
    click(&mut h, "Resume");
    assert_eq!(console(h.state()).session.state, RunState::Running);

    click(&mut h, "Machine");
    click(&mut h, "Power off");
    assert_eq!(console(h.state()).session.state, RunState::Off);
    assert_eq!(h.state().state_of(&vm), StateIcon::Off);
    // Turning off left a thumbnail of the last screen for the library.
    assert!(vm.join(vm_library::THUMBNAIL_FILE).is_file());
    click(&mut h, "Close");
    assert!(h.state().consoles.is_empty());
}

#[test]
fn a_click_captures_and_the_host_key_releases() {
    let dir = scratch("capture");
    let mut app = app_in(&dir);
    let vm = make_vm(&mut app, "Capture", |c| {
        c.host_key = vm_library::HostKey::RightCtrl;
    });
    let mut h = harness(app);
    h.run();
    h.state_mut().start(&vm);
    assert!(
        run_until(&mut h, Duration::from_secs(60), seabios_on_screen),
        "no SeaBIOS banner"
    );
    h.get_by_label("Click the screen to capture keyboard and mouse");
    // Click in the middle of the screen image.
    let screen = h
        .get_all_by_role(egui::accesskit::Role::Image)
        .last()
        .map(|n| n.rect())
        .expect("screen image");
    h.hover_at(screen.center());
    h.step();
    h.event(egui::Event::PointerButton {
        pos: screen.center(),
        button: egui::PointerButton::Primary,
        pressed: true,
        modifiers: Default::default(),
    });
    h.event(egui::Event::PointerButton {
        pos: screen.center(),
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: Default::default(),
    });
    h.step();
    h.step();
    assert!(console(h.state()).captured, "a click captures");
    h.get_by_label("Press Right Ctrl to release keyboard and mouse");

    // Other keys go to the guest and keep the capture.
    h.key_press(egui::Key::A);
    h.step();
    assert!(console(h.state()).captured, "other keys keep the capture");
    h.key_down(egui::Key::ControlRight);
    h.step();
    assert!(!console(h.state()).captured, "the host key releases");
    h.key_up(egui::Key::ControlRight);
    h.step();
    h.get_by_label("Click the screen to capture keyboard and mouse");
    console(h.state()).session.power_off();
    h.step();
}

#[test]
fn settings_are_saved_and_read_back() {
    let dir = scratch("settings");
    let mut app = app_in(&dir);
    let vm = make_vm(&mut app, "Tweakable", |_| {});
    let mut h = harness(app);
    h.run();
    h.get_by_label("Tweakable").click();
    h.run();
    h.get_by_label("Settings…").click();
    h.run();
    {
        let s = h.state_mut().settings.as_mut().expect("settings dialog");
        s.form.memory_mib = 96;
        s.form.cpus = 2;
        s.form.name = "Tweaked".into();
    }
    h.run();
    h.get_by_label("Save").click();
    h.run();
    assert!(h.state().settings.is_none());
    let c = Library::load(&vm).unwrap();
    assert_eq!((c.memory_mib, c.cpus, c.name.as_str()), (96, 2, "Tweaked"));
    // A fresh app (a restart) shows the saved values.
    let mut h = harness(app_in(&dir));
    h.run();
    h.get_by_label("Tweaked");
    h.get_by_label_contains("96 MiB · 2 CPUs");
}

#[test]
fn a_missing_disk_image_gives_an_error_dialog() {
    let dir = scratch("missing-disk");
    let mut app = app_in(&dir);
    let gone = dir.join("gone.vhd");
    make_vm(&mut app, "Diskless", |c| c.disks = vec![gone.clone()]);
    let mut h = harness(app);
    h.run();
    h.get_by_label("Diskless").click();
    h.run();
    h.get_by_label("Start").click();
    h.run();
    assert!(h.state().consoles.is_empty());
    let message = h.state().errors.first().cloned().expect("error dialog");
    assert!(message.contains("gone.vhd"), "{message}");
    assert!(message.contains("Settings"), "{message}");
    h.get_by_label("Something went wrong");
}

#[test]
fn missing_firmware_and_broken_config_are_shown_not_fatal() {
    let dir = scratch("broken");
    let mut app = app_in(&dir);
    app.firmware = Some(dir.join("no-bios.bin"));
    let vm = make_vm(&mut app, "Firmwareless", |_| {});
    let broken = app.library.root().join("Broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join(vm_library::CONFIG_FILE), "name = [oops").unwrap();
    app.reload();
    let mut h = harness(app);
    h.run();
    // The broken VM is listed with its problem instead of disappearing.
    h.get_by_label_contains("vm.toml");
    h.state_mut().start(&vm);
    h.run();
    let message = h.state().errors.first().cloned().expect("error dialog");
    assert!(message.contains("no-bios.bin"), "{message}");
    assert!(h.state().consoles.is_empty());
}

#[test]
fn dropping_an_iso_on_a_running_vm_inserts_it_in_the_cd_drive() {
    let dir = scratch("cd-drop");
    let mut app = app_in(&dir);
    let vm = make_vm(&mut app, "Changer", |_| {});
    let mut h = harness(app);
    h.run();
    h.state_mut().start(&vm);
    assert!(
        run_until(&mut h, Duration::from_secs(60), seabios_on_screen),
        "no SeaBIOS banner"
    );
    let iso = asset("linux.iso");
    drop_file(&mut h, &iso);
    assert!(h.state().wizard.is_none(), "the drop went to the console");
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    // The CD stays in the VM's settings for the next start.
    let c = Library::load(&vm).unwrap();
    assert_eq!(c.cdrom.as_deref(), Some(iso.as_path()));
    // A disk image is not a CD: refused with a reason, the drive keeps the ISO.
    drop_file(&mut h, &asset("linux-hdd.img"));
    let message = h.state().errors.first().cloned().expect("error dialog");
    assert!(message.contains("not a CD image"), "{message}");
    assert_eq!(
        Library::load(&vm).unwrap().cdrom.as_deref(),
        Some(iso.as_path())
    );
    console(h.state()).session.power_off();
    h.step();
}

/// Complete four-digit counts a counter guest printed (a line cut by a snapshot is skipped).
fn full_counts(serial: &str) -> Vec<u32> {
    serial
        .lines()
        .filter(|l| l.trim().len() == 4)
        .filter_map(|l| u32::from_str_radix(l.trim(), 16).ok())
        .collect()
}

/// The count a counter guest keeps at 0x600, read from a saved RAM image.
fn count_in_ram(ram: &Path) -> u32 {
    let ram = std::fs::read(ram).unwrap();
    u32::from(u16::from_le_bytes([ram[0x600], ram[0x601]]))
}

/// Runs frames until the first console's guest printed at least `n` counts.
fn wait_for_counts(h: &mut Harness<'_, TerrariumApp>, n: usize, what: &str) {
    assert!(
        run_until(h, Duration::from_secs(60), |a| !a.consoles.is_empty()
            && full_counts(&console(a).session.serial).len() >= n),
        "{what}"
    );
}

/// An app in `dir` whose VMs run `firmware` (written to `dir`), with the VM `name` made by
/// `tweak`, started and counting; returns the harness, the VM folder and the firmware file.
fn counting_vm(
    dir: &Path,
    firmware: Vec<u8>,
    name: &str,
    tweak: impl FnOnce(&mut VmConfig),
) -> (Harness<'static, TerrariumApp>, PathBuf, PathBuf) {
    let path = dir.join("firmware.bin");
    std::fs::write(&path, firmware).unwrap();
    let mut app = app_in(dir);
    app.firmware = Some(path.clone());
    let vm = make_vm(&mut app, name, tweak);
    let mut h = harness(app);
    h.run();
    h.state_mut().start(&vm);
    wait_for_counts(&mut h, 3, "no count on serial");
    (h, vm, path)
}

#[test]
fn save_state_and_close_then_start_resumes_where_it_was() {
    let dir = scratch("save-state");
    let (mut h, vm, _) = counting_vm(
        &dir,
        conformance::firmware::serial_counter(),
        "Counter",
        |_| {},
    );
    click(&mut h, "Machine");
    click(&mut h, "Save state and close");
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    assert!(h.state().consoles.is_empty(), "the console closed");
    assert!(vm
        .join(vm_library::SAVED_STATE_DIR)
        .join("state.bin")
        .is_file());
    assert_eq!(h.state().state_of(&vm), StateIcon::Saved);
    h.run_steps(2);
    h.get_by_label("Saved");

    // Starting it resumes: the count goes on from what the saved machine counted last (read
    // from its RAM image) instead of starting at 1, and the saved state is used up.
    let last_before = count_in_ram(&vm.join(vm_library::SAVED_STATE_DIR).join("ram.bin"));
    assert!(last_before >= 3);
    h.get_by_label("Start").click();
    h.run_steps(2);
    wait_for_counts(&mut h, 1, "no count after resuming");
    let first = full_counts(&console(h.state()).session.serial)[0];
    assert!(
        first == last_before || first == last_before + 1,
        "resumed at {first}, saved at {last_before}"
    );
    assert!(!vm.join(vm_library::SAVED_STATE_DIR).exists());
    console(h.state()).session.power_off();
    h.step();
}

/// An empty 8 MiB dynamic VHD in `dir`.
fn vhd_disk(dir: &Path) -> PathBuf {
    let path = dir.join("disk.vhd");
    disk::create(
        &path,
        &disk::CreateOptions::new(disk::Format::VhdDynamic, 8 << 20),
    )
    .unwrap();
    path
}

#[test]
fn undo_disks_ask_at_power_off_and_discard_leaves_the_disk_alone() {
    let dir = scratch("undo");
    let base = vhd_disk(&dir);
    let before = std::fs::read(&base).unwrap();
    let mut app = app_in(&dir);
    let vm = make_vm(&mut app, "Undoable", |c| {
        c.disks = vec![base.clone()];
        c.undo_disks = true;
        c.boot = vm_library::BootChoice::Disk;
    });
    let mut h = harness(app);
    h.run();
    h.state_mut().start(&vm);
    assert!(
        run_until(&mut h, Duration::from_secs(60), seabios_on_screen),
        "no SeaBIOS banner"
    );
    let layer = vm.join(vm_library::undo::UNDO_DIR).join("disk0.vhd");
    assert!(layer.is_file(), "the VM runs on an undo layer");
    click(&mut h, "Machine");
    click(&mut h, "Power off");
    h.get_by_label("Keep changes");
    h.get_by_label("Commit changes");
    click(&mut h, "Discard changes");
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    assert!(h.state().consoles.is_empty(), "the console closed");
    assert!(!layer.exists(), "discard removed the undo layer");
    assert_eq!(
        std::fs::read(&base).unwrap(),
        before,
        "the disk was never written"
    );
}

/// The count the disk-counter guest last wrote to sector 0 of the VM's current disk layer.
fn count_on_disk(vm: &Path) -> u32 {
    let c = Library::load(vm).unwrap();
    let path = c.resolve(vm, &c.disks[0]);
    let mut img = disk::open(&path, &disk::OpenOptions::read_only()).unwrap();
    let mut b = [0u8; 2];
    img.read_at(0, &mut b).unwrap();
    u32::from(u16::from_le_bytes(b))
}

/// The count saved in a live snapshot's RAM image.
fn count_in_snapshot(vm: &Path, id: u32) -> u32 {
    count_in_ram(&vm_library::snapshots::snapshot_dir(vm, id).join(machine::saved::RAM_FILE))
}

#[test]
fn a_live_snapshot_reverts_the_disk_and_the_running_count_also_after_a_restart() {
    let dir = scratch("snapshot-live");
    let base = vhd_disk(&dir);
    let (mut h, vm, firmware) = counting_vm(
        &dir,
        conformance::firmware::disk_counter(),
        "Snapper",
        |c| c.disks = vec![base.clone()],
    );

    // Take a live snapshot from the console's Snapshots panel.
    click(&mut h, "View");
    click(&mut h, "Snapshots");
    h.run_steps(2);
    click(&mut h, "Take snapshot");
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    // The VM runs on while the snapshot's machine state is written; then it is live.
    let live = |vm: &Path| {
        vm_library::snapshots::SnapshotTree::load(vm)
            .map(|t| t.snapshots.first().is_some_and(|s| s.live))
            .unwrap_or(false)
    };
    assert!(
        run_until(&mut h, Duration::from_secs(60), |_| live(&vm)),
        "the snapshot's machine state was never completed"
    );
    h.run_steps(2);
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    let tree = vm_library::snapshots::SnapshotTree::load(&vm).unwrap();
    let snap = tree.snapshots[0].clone();
    let at_snapshot = count_in_snapshot(&vm, snap.id);

    // The guest goes on counting and writing to its disk (now the new layer).
    assert!(
        run_until(&mut h, Duration::from_secs(60), |_| count_on_disk(&vm)
            >= at_snapshot + 5),
        "the guest stopped writing after the snapshot"
    );
    let later = count_on_disk(&vm);

    // Revert: the later writes are gone and the count continues from the snapshot's.
    h.get_by_label_contains("Snapshot 1 (running)").click();
    h.run_steps(2);
    click(&mut h, "Revert");
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    assert!(
        count_on_disk(&vm) < later,
        "the disk kept writes made after the snapshot"
    );
    wait_for_counts(&mut h, 1, "no count after reverting");
    let first = full_counts(&console(h.state()).session.serial)[0];
    assert!(
        first == at_snapshot || first == at_snapshot + 1,
        "reverted to {first}, snapshot at {at_snapshot}"
    );
    console(h.state()).session.power_off();
    h.step();
    drop(h);

    // A new app (the process restarted): revert from the library, the same continuation.
    let mut app = app_in(&dir);
    app.firmware = Some(firmware);
    let mut h = harness(app);
    h.run();
    h.get_by_label("Snapper").click();
    h.run();
    h.get_by_label("Snapshots…").click();
    h.run();
    h.get_by_label_contains("Snapshot 1 (running)").click();
    h.run();
    click(&mut h, "Revert");
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    wait_for_counts(&mut h, 1, "no count after reverting in a new process");
    let first = full_counts(&console(h.state()).session.serial)[0];
    assert!(
        first == at_snapshot || first == at_snapshot + 1,
        "reverted to {first}, snapshot at {at_snapshot}"
    );
    console(h.state()).session.power_off();
    h.step();
}
