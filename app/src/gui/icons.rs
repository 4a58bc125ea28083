//! The GUI's icons from `ui-assets/`, decoded once into textures.

use media_detect::OsFamily;
use std::collections::HashMap;

macro_rules! asset {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../ui-assets/", $path))
    };
}

/// OS icons (128 px, drawn smaller) by family.
const OS_ICONS: [(OsFamily, &[u8]); 6] = [
    (OsFamily::Linux, asset!("os/linux@2x.png")),
    (OsFamily::Windows, asset!("os/windows@2x.png")),
    (OsFamily::Dos, asset!("os/dos@2x.png")),
    (OsFamily::Bsd, asset!("os/bsd@2x.png")),
    (OsFamily::MemTest, asset!("os/memtest@2x.png")),
    (OsFamily::Other, asset!("os/other@2x.png")),
];

/// The run-state glyphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateIcon {
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Off.
    Off,
    /// Off with a saved state to resume.
    Saved,
}

const STATE_ICONS: [(StateIcon, &[u8]); 4] = [
    (StateIcon::Running, asset!("app/state-running.png")),
    (StateIcon::Paused, asset!("app/state-paused.png")),
    (StateIcon::Off, asset!("app/state-off.png")),
    (StateIcon::Saved, asset!("app/state-saved.png")),
];

/// The app icon (256 px), for the window.
pub const APP_ICON_PNG: &[u8] = asset!("app/terrarium.png");

/// Decodes a PNG into RGBA8 pixels and its size.
pub fn decode_png(bytes: &[u8]) -> Option<(Vec<u8>, [usize; 2])> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().ok()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).ok()?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width as usize, info.height as usize);
    let rgba = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 0xFF])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g, 0xFF]).collect(),
        png::ColorType::Indexed => return None,
    };
    (rgba.len() == w * h * 4).then_some((rgba, [w, h]))
}

/// Textures for the icons, made on first use.
#[derive(Default)]
pub struct Icons {
    os: HashMap<OsFamily, egui::TextureHandle>,
    state: HashMap<StateIcon, egui::TextureHandle>,
}

fn texture(ctx: &egui::Context, name: &str, png: &[u8]) -> egui::TextureHandle {
    let image = match decode_png(png) {
        Some((rgba, size)) => egui::ColorImage::from_rgba_unmultiplied(size, &rgba),
        None => egui::ColorImage::filled([1, 1], egui::Color32::GRAY),
    };
    ctx.load_texture(name, image, egui::TextureOptions::LINEAR)
}

impl Icons {
    /// The icon of an OS family.
    pub fn os(&mut self, ctx: &egui::Context, os: OsFamily) -> egui::TextureHandle {
        self.os
            .entry(os)
            .or_insert_with(|| {
                let png = OS_ICONS
                    .iter()
                    .find(|(f, _)| *f == os)
                    .map_or(OS_ICONS[5].1, |(_, p)| p);
                texture(ctx, os.icon_name(), png)
            })
            .clone()
    }

    /// A run-state glyph.
    pub fn state(&mut self, ctx: &egui::Context, state: StateIcon) -> egui::TextureHandle {
        self.state
            .entry(state)
            .or_insert_with(|| {
                let png = STATE_ICONS
                    .iter()
                    .find(|(s, _)| *s == state)
                    .map_or(STATE_ICONS[2].1, |(_, p)| p);
                texture(ctx, "state", png)
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_icon_decodes() {
        let pngs = OS_ICONS.iter().map(|(_, p)| *p);
        for png in pngs.chain(STATE_ICONS.iter().map(|(_, p)| *p)) {
            let (rgba, [w, h]) = decode_png(png).expect("icon decodes");
            assert_eq!(rgba.len(), w * h * 4);
        }
        assert!(decode_png(APP_ICON_PNG).is_some());
    }
}
