//! What a person sees and types, on the software CPU with real guests: the standard VGA's text
//! screen under SeaBIOS, isolinux and memtest86+; Linux's framebuffer console through
//! bochs-drm at 1024×768×32 (read back with the kernel's own console font); keystrokes and mouse moves from the host input API reaching
//! programs in the guest. Every screen is saved as a PNG under the target directory
//! (`target/tmp/screens/`) and checked against the text it must show.

mod common;

use common::{assets, scratch, seabios};
use machine::{
    create_partition, Backend, BootDevice, IrqChipMode, LinuxBoot, Machine, MachineConfig,
    MachineEvent, MouseButtons, MouseEvent, OffReason,
};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const MARKER: &str = "TERRARIUM-BOOT-OK";

fn asset(name: &str) -> PathBuf {
    let p = assets().join(name);
    assert!(
        p.is_file(),
        "{} missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

/// A running VM on the software CPU and its serial output so far.
struct Guest {
    vm: Machine,
    events: Receiver<MachineEvent>,
    serial: String,
    off: Option<OffReason>,
}

impl Guest {
    fn start(config: MachineConfig) -> Self {
        let partition =
            create_partition(Backend::Emu, config.cpus, IrqChipMode::Split).expect("emu partition");
        let mut vm = Machine::new(config, partition).expect("machine");
        let events = vm.take_events().expect("events");
        vm.start().expect("start");
        Self {
            vm,
            events,
            serial: String::new(),
            off: None,
        }
    }

    fn pump(&mut self, wait: Duration) {
        if let Ok(e) = self.events.recv_timeout(wait) {
            self.take(e);
            while let Ok(e) = self.events.try_recv() {
                self.take(e);
            }
        }
    }

    fn take(&mut self, e: MachineEvent) {
        match e {
            MachineEvent::Serial(b) => self.serial.push_str(&String::from_utf8_lossy(&b)),
            MachineEvent::Off(r) => self.off = Some(r),
            _ => {}
        }
    }

    /// Runs until `done` holds (checked every 50 ms) or `limit` passes.
    fn until(&mut self, limit: Duration, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            if Instant::now() >= deadline || self.off.is_some() {
                self.screenshot("failed");
            }
            assert!(
                Instant::now() < deadline && self.off.is_none(),
                "{what} did not happen (off: {:?}); screen:\n{}\nserial:\n{}",
                self.off,
                self.text().join("\n"),
                self.serial
            );
            self.pump(Duration::from_millis(50));
        }
    }

    fn text(&self) -> Vec<String> {
        self.vm.text_screen().unwrap_or_default()
    }

    fn screen_shows(&self, s: &str) -> bool {
        self.text().iter().any(|l| l.contains(s))
    }

    /// Saves the screen as `target/tmp/screens/NAME.png`; returns its size.
    fn screenshot(&self, name: &str) -> (u32, u32) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screens");
        std::fs::create_dir_all(&dir).unwrap();
        let screen = self.vm.screen();
        let fb = screen.lock();
        let path = dir.join(format!("{name}.png"));
        machine::screenshot::save_png(&fb, &path).expect("save screenshot");
        // The file decodes to the same picture.
        let decoder = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            &buf[..info.buffer_size()],
            fb.pixels(),
            "{}",
            path.display()
        );
        let colours: std::collections::HashSet<&[u8]> = fb.pixels().chunks(4).collect();
        assert!(colours.len() > 1, "{} is a blank picture", path.display());
        (fb.width(), fb.height())
    }

    fn stop(mut self) {
        self.vm.power_off();
        self.vm.wait();
    }
}

fn firmware_config(boot: BootDevice) -> MachineConfig {
    let mut order = vec![BootDevice::Cdrom, BootDevice::Disk, BootDevice::Floppy];
    order.retain(|d| *d != boot);
    order.insert(0, boot);
    MachineConfig {
        memory_mib: 256,
        firmware: Some(seabios()),
        boot_order: order,
        ..MachineConfig::default()
    }
}

#[test]
fn seabios_banner_on_the_text_screen() {
    let mut g = Guest::start(firmware_config(BootDevice::Disk));
    g.until(Duration::from_secs(60), "the SeaBIOS banner", |g| {
        g.screen_shows("SeaBIOS (version") && g.screen_shows("No bootable device")
    });
    assert_eq!(g.screenshot("seabios"), (720, 400));
    g.stop();
}

#[test]
fn isolinux_boot_prompt_on_the_text_screen() {
    let config = MachineConfig {
        cdrom: Some(asset("linux.iso")),
        ..firmware_config(BootDevice::Cdrom)
    };
    let mut g = Guest::start(config);
    g.until(Duration::from_secs(120), "the isolinux prompt", |g| {
        g.screen_shows("ISOLINUX") && g.screen_shows("boot:")
    });
    assert_eq!(g.screenshot("isolinux"), (720, 400));
    assert!(
        g.screen_shows("Terrarium test CD"),
        "{}",
        g.text().join("\n")
    );
    g.stop();
}

#[test]
fn memtest86plus_main_screen() {
    let config = MachineConfig {
        floppy: Some(asset("memtest-floppy.img")),
        ..firmware_config(BootDevice::Floppy)
    };
    let mut g = Guest::start(config);
    g.until(Duration::from_secs(180), "memtest86+'s test screen", |g| {
        g.screen_shows("Memtest86+") && g.screen_shows("walking ones")
    });
    g.screenshot("memtest86plus");
    g.stop();
}

/// The 8×16 font Linux's framebuffer console draws with (the asset script takes it from the
/// kernel image).
fn linux_font() -> Vec<[u8; 16]> {
    let data = std::fs::read(asset("linux-font-8x16.bin")).unwrap();
    assert_eq!(data.len(), 256 * 16, "linux-font-8x16.bin");
    data.chunks(16).map(|g| g.try_into().unwrap()).collect()
}

/// Reads a framebuffer console as text: 8×16 cells from the top left, each matched against
/// the font's printable ASCII glyphs (pixels unlike the cell's background colour are ink).
fn read_console(fb: &machine::Framebuffer, font: &[[u8; 16]]) -> Vec<String> {
    let (cols, rows) = (fb.width() / 8, fb.height() / 16);
    let px = |x: u32, y: u32| {
        let i = ((y * fb.width() + x) * 4) as usize;
        [fb.pixels()[i], fb.pixels()[i + 1], fb.pixels()[i + 2]]
    };
    (0..rows)
        .map(|row| {
            (0..cols)
                .map(|col| {
                    let (x0, y0) = (col * 8, row * 16);
                    let bg = px(x0 + 7, y0 + 15);
                    let mut cell = [0u8; 16];
                    for (y, bits) in cell.iter_mut().enumerate() {
                        for x in 0..8 {
                            if px(x0 + x, y0 + y as u32) != bg {
                                *bits |= 0x80 >> x;
                            }
                        }
                    }
                    (0x20u8..0x7f)
                        .find(|&c| font[usize::from(c)] == cell)
                        .map_or('?', char::from)
                })
                .collect()
        })
        .collect()
}

#[test]
fn linux_framebuffer_console_keyboard_and_mouse() {
    let config = MachineConfig {
        memory_mib: 256,
        linux: Some(LinuxBoot {
            kernel: asset("vmlinuz"),
            initrd: Some(asset("initramfs.cpio.gz")),
            cmdline: "console=ttyS0 console=tty0 cryptomgr.notests terrarium.test=desktop".into(),
        }),
        ..MachineConfig::default()
    };
    let _ = scratch("desktop");
    let mut g = Guest::start(config);
    let limit = Duration::from_secs(1200);

    // The mouse: a move right with the left button held, then the release.
    g.until(limit, "the guest opening /dev/input/mice", |g| {
        g.serial.contains("MOUSE-READY")
    });
    let input = g.vm.input();
    let held = MouseButtons {
        left: true,
        ..Default::default()
    };
    input.mouse(MouseEvent {
        dx: 10,
        dy: 0,
        dz: 0,
        buttons: held,
    });
    input.mouse(MouseEvent {
        dx: 0,
        dy: 0,
        dz: 0,
        buttons: MouseButtons::default(),
    });
    g.until(
        Duration::from_secs(120),
        "mouse packets in the guest",
        |g| {
            // A whole line: the serial output may stop in the middle of one.
            g.serial
                .split_inclusive('\n')
                .any(|l| l.starts_with("MOUSE ") && l.ends_with('\n'))
        },
    );
    let packets: Vec<u8> = g
        .serial
        .split_inclusive('\n')
        .find(|l| l.starts_with("MOUSE ") && l.ends_with('\n'))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    assert_eq!(packets.len(), 6, "two 3-byte packets: {packets:x?}");
    // First packet: left button, moved right by 10 (mousedev reports PS/2 packets).
    assert_eq!(packets[0] & 0x07, 0x01, "left button down: {packets:x?}");
    assert_eq!(packets[1], 10, "dx: {packets:x?}");
    assert_eq!(packets[3] & 0x07, 0x00, "button released: {packets:x?}");

    // The keyboard: a command typed into the shell on the console.
    g.until(limit, "the shell", |g| g.serial.contains("SHELL-READY"));
    input
        .type_text("echo TYPED-$((6*7)) > /dev/ttyS0\n")
        .expect("typeable");
    g.until(
        Duration::from_secs(120),
        "the typed command's output",
        |g| g.serial.contains("TYPED-42"),
    );

    // The screen: bochs-drm's console at 1024×768 shows the marker and the command.
    let font = linux_font();
    let mut text = Vec::new();
    g.until(Duration::from_secs(60), "the marker on the console", |g| {
        let screen = g.vm.screen();
        let fb = screen.lock();
        text = read_console(&fb, &font);
        text.iter().any(|l| l.contains(MARKER))
    });
    assert_eq!(g.screenshot("linux-fbcon"), (1024, 768));
    assert!(
        text.iter().any(|l| l.contains("echo TYPED-$((6*7))")),
        "typed command not on the console:\n{}",
        text.join("\n")
    );

    input.type_text("poweroff -f\n").expect("typeable");
    g.until(Duration::from_secs(120), "power-off", |g| g.off.is_some());
    assert_eq!(
        g.off,
        Some(OffReason::GuestPowerOff),
        "serial:\n{}",
        g.serial
    );
    g.stop();
}
