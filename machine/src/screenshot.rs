//! Saving the screen as a PNG file.

use devices::framebuffer::Framebuffer;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a screenshot could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    /// Writing the file failed.
    #[error("cannot write the screenshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PNG encoder refused the picture.
    #[error("cannot encode the screenshot {path}: {reason}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The picture as PNG bytes (RGBA, 8 bits per channel).
pub fn encode_png(frame: &Framebuffer) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, frame.width().max(1), frame.height().max(1));
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        if frame.width() == 0 || frame.height() == 0 {
            writer
                .write_image_data(&[0, 0, 0, 255])
                .map_err(|e| e.to_string())?;
        } else {
            writer
                .write_image_data(frame.pixels())
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// Saves `frame` as a PNG at `path`, written to a temporary file first and renamed into place,
/// so an existing file is replaced whole or not at all.
pub fn save_png(frame: &Framebuffer, path: &Path) -> Result<(), ScreenshotError> {
    let io = |source| ScreenshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = encode_png(frame).map_err(|reason| ScreenshotError::Encode {
        path: path.to_path_buf(),
        reason,
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_the_pixels() {
        let mut fb = Framebuffer::new(3, 2);
        fb.set_pixel(1, 1, [10, 20, 30, 255]);
        let bytes = encode_png(&fb).unwrap();
        let decoder = png::Decoder::new(bytes.as_slice());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(&buf[..info.buffer_size()], fb.pixels());
        assert_eq!(&buf[(3 + 1) * 4..(3 + 1) * 4 + 4], &[10, 20, 30, 255]);
    }
}
