//! The picture a display device shows, shared with whoever presents it (the GUI, the
//! screenshot code).
//!
//! A [`Framebuffer`] holds `width × height` pixels as **RGBA8 bytes**: row-major, 4 bytes per
//! pixel in the order red, green, blue, alpha (alpha is always 255), rows packed without
//! padding (`stride() == width * 4`). That is the layout egui's `ColorImage` and PNG encoders
//! take, so a consumer copies bytes without converting them.
//!
//! The device draws and records what it re-drew with [`Framebuffer::mark_dirty`]; the consumer
//! calls [`Framebuffer::take_dirty`] to learn (and clear) the changed rectangles. A resize bumps
//! [`Framebuffer::generation`] and marks the whole frame dirty, so a consumer that remembers
//! the generation it last saw notices a new size even if it missed the dirty list.
//!
//! Device threads (vCPUs, the timer loop) and the GUI thread share one through
//! [`SharedFramebuffer`], a cloneable handle around a mutex.

use std::sync::{Arc, Mutex, MutexGuard};

/// At most this many separate dirty rectangles are kept; more collapse into their bounding box.
pub const MAX_DIRTY_RECTS: usize = 32;

/// Bytes per pixel (RGBA8).
pub const BYTES_PER_PIXEL: usize = 4;

/// A rectangle in framebuffer pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Rect {
    /// A rectangle from its left/top corner and size.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// True when it covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// One past the right edge.
    pub fn right(&self) -> u64 {
        u64::from(self.x) + u64::from(self.width)
    }

    /// One past the bottom edge.
    pub fn bottom(&self) -> u64 {
        u64::from(self.y) + u64::from(self.height)
    }

    /// Number of pixels covered.
    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// The smallest rectangle containing both.
    pub fn union(&self, other: &Rect) -> Rect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let right = self.right().max(other.right());
        let bottom = self.bottom().max(other.bottom());
        Rect::new(
            x,
            y,
            (right - u64::from(x)) as u32,
            (bottom - u64::from(y)) as u32,
        )
    }

    /// True when the two overlap or share an edge (so their union wastes little).
    pub fn touches(&self, other: &Rect) -> bool {
        u64::from(self.x) <= other.right()
            && u64::from(other.x) <= self.right()
            && u64::from(self.y) <= other.bottom()
            && u64::from(other.y) <= self.bottom()
    }

    /// True when `(x, y)` lies inside.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        x >= self.x && u64::from(x) < self.right() && y >= self.y && u64::from(y) < self.bottom()
    }

    /// The part inside a `width × height` frame, if any.
    pub fn clipped(&self, width: u32, height: u32) -> Option<Rect> {
        if self.x >= width || self.y >= height || self.is_empty() {
            return None;
        }
        let right = self.right().min(u64::from(width));
        let bottom = self.bottom().min(u64::from(height));
        Some(Rect::new(
            self.x,
            self.y,
            (right - u64::from(self.x)) as u32,
            (bottom - u64::from(self.y)) as u32,
        ))
    }
}

/// Packs red, green and blue into a pixel (alpha 255), in the framebuffer's byte order.
pub const fn rgb(r: u8, g: u8, b: u8) -> [u8; 4] {
    [r, g, b, 0xFF]
}

/// RGBA8 pixels, the resize generation and the dirty rectangles of one display.
#[derive(Clone)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
    generation: u64,
    updates: u64,
    dirty: Vec<Rect>,
    full: bool,
}

impl std::fmt::Debug for Framebuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framebuffer")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("generation", &self.generation)
            .field("dirty", &self.dirty.len())
            .field("full", &self.full)
            .finish()
    }
}

impl Default for Framebuffer {
    fn default() -> Self {
        Self::new(640, 480)
    }
}

impl Framebuffer {
    /// A black frame of `width × height` pixels, entirely dirty.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: black(width, height),
            generation: 0,
            updates: 0,
            dirty: Vec::new(),
            full: true,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from one row to the next (`width * 4`).
    pub fn stride(&self) -> usize {
        self.width as usize * BYTES_PER_PIXEL
    }

    /// Counts resizes; a consumer that sees a new value must re-read the size.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counts every change the device recorded (dirty marks and resizes); cheap to poll.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// All pixels, RGBA8, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// All pixels for drawing (device side). Mark what changed with [`Self::mark_dirty`].
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }

    /// Row `y` (RGBA8), or `None` below the frame.
    pub fn row(&self, y: u32) -> Option<&[u8]> {
        let stride = self.stride();
        let start = y as usize * stride;
        (y < self.height).then(|| &self.pixels[start..start + stride])
    }

    /// Row `y` for drawing, or `None` below the frame.
    pub fn row_mut(&mut self, y: u32) -> Option<&mut [u8]> {
        let stride = self.stride();
        let start = y as usize * stride;
        (y < self.height).then(move || &mut self.pixels[start..start + stride])
    }

    /// The pixel at `(x, y)` as `[r, g, b, a]`, or `None` outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * BYTES_PER_PIXEL;
        let p = &self.pixels[i..i + BYTES_PER_PIXEL];
        Some([p[0], p[1], p[2], p[3]])
    }

    /// Sets one pixel (ignored outside the frame). Does not mark it dirty.
    pub fn set_pixel(&mut self, x: u32, y: u32, rgba: [u8; 4]) {
        if x < self.width && y < self.height {
            let i = (y as usize * self.width as usize + x as usize) * BYTES_PER_PIXEL;
            self.pixels[i..i + BYTES_PER_PIXEL].copy_from_slice(&rgba);
        }
    }

    /// Fills the whole frame with one colour and marks it all dirty.
    pub fn fill(&mut self, rgba: [u8; 4]) {
        for p in self.pixels.chunks_exact_mut(BYTES_PER_PIXEL) {
            p.copy_from_slice(&rgba);
        }
        self.mark_all_dirty();
    }

    /// Changes the size. A new size clears the frame to black, bumps the generation and marks
    /// everything dirty; the same size does nothing. Returns true when the size changed.
    pub fn resize(&mut self, width: u32, height: u32) -> bool {
        if width == self.width && height == self.height {
            return false;
        }
        self.width = width;
        self.height = height;
        self.pixels = black(width, height);
        self.generation += 1;
        self.mark_all_dirty();
        true
    }

    /// Records that the device re-drew `rect` (clipped to the frame). Touching rectangles are
    /// merged; past [`MAX_DIRTY_RECTS`] all collapse into their bounding box.
    pub fn mark_dirty(&mut self, rect: Rect) {
        let Some(mut r) = rect.clipped(self.width, self.height) else {
            return;
        };
        self.updates += 1;
        if self.full {
            return;
        }
        if r.width == self.width && r.height == self.height {
            self.mark_all_dirty();
            return;
        }
        while let Some(i) = self.dirty.iter().position(|d| d.touches(&r)) {
            r = r.union(&self.dirty.swap_remove(i));
        }
        self.dirty.push(r);
        if self.dirty.len() > MAX_DIRTY_RECTS {
            let bounds = self.dirty.iter().fold(Rect::default(), |a, b| a.union(b));
            self.dirty.clear();
            self.dirty.push(bounds);
        }
    }

    /// Records that the whole frame changed.
    pub fn mark_all_dirty(&mut self) {
        self.updates += 1;
        self.full = true;
        self.dirty.clear();
    }

    /// True when something changed since the last [`Self::take_dirty`].
    pub fn has_dirty(&self) -> bool {
        self.full || !self.dirty.is_empty()
    }

    /// True when the whole frame is dirty.
    pub fn is_full_dirty(&self) -> bool {
        self.full
    }

    /// The rectangles that changed since the last call (the whole frame as one rectangle when
    /// everything changed), and clears them.
    pub fn take_dirty(&mut self) -> Vec<Rect> {
        if std::mem::take(&mut self.full) {
            self.dirty.clear();
            if self.width == 0 || self.height == 0 {
                return Vec::new();
            }
            return vec![Rect::new(0, 0, self.width, self.height)];
        }
        std::mem::take(&mut self.dirty)
    }

    /// Copies the pixels of `rect` (clipped to the frame) as tightly packed RGBA8 rows, e.g.
    /// for a partial texture upload. Empty when the rectangle lies outside.
    pub fn copy_rect(&self, rect: Rect) -> Vec<u8> {
        let Some(r) = rect.clipped(self.width, self.height) else {
            return Vec::new();
        };
        let stride = self.stride();
        let row_bytes = r.width as usize * BYTES_PER_PIXEL;
        let mut out = Vec::with_capacity(row_bytes * r.height as usize);
        for y in r.y..r.y + r.height {
            let start = y as usize * stride + r.x as usize * BYTES_PER_PIXEL;
            out.extend_from_slice(&self.pixels[start..start + row_bytes]);
        }
        out
    }
}

fn black(width: u32, height: u32) -> Vec<u8> {
    let n = width as usize * height as usize;
    let mut v = vec![0u8; n * BYTES_PER_PIXEL];
    for p in v.chunks_exact_mut(BYTES_PER_PIXEL) {
        p[3] = 0xFF;
    }
    v
}

/// A [`Framebuffer`] shared between the device that draws it and the consumer that shows it.
#[derive(Clone, Default)]
pub struct SharedFramebuffer(Arc<Mutex<Framebuffer>>);

impl std::fmt::Debug for SharedFramebuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.lock().fmt(f)
    }
}

impl SharedFramebuffer {
    /// Shares `framebuffer`.
    pub fn new(framebuffer: Framebuffer) -> Self {
        Self(Arc::new(Mutex::new(framebuffer)))
    }

    /// Locks the frame (a panic elsewhere while it was held does not poison it for us).
    pub fn lock(&self) -> MutexGuard<'_, Framebuffer> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_frame_is_black_opaque_and_fully_dirty() {
        let mut fb = Framebuffer::new(4, 3);
        assert_eq!(fb.pixels().len(), 4 * 3 * 4);
        assert_eq!(fb.pixel(3, 2), Some([0, 0, 0, 255]));
        assert_eq!(fb.pixel(4, 0), None);
        assert_eq!(fb.take_dirty(), vec![Rect::new(0, 0, 4, 3)]);
        assert!(fb.take_dirty().is_empty());
        assert!(!fb.has_dirty());
    }

    #[test]
    fn resize_bumps_generation_only_on_change() {
        let mut fb = Framebuffer::new(8, 8);
        fb.take_dirty();
        assert!(!fb.resize(8, 8));
        assert_eq!(fb.generation(), 0);
        assert!(fb.resize(16, 4));
        assert_eq!(fb.generation(), 1);
        assert_eq!((fb.width(), fb.height(), fb.stride()), (16, 4, 64));
        assert_eq!(fb.take_dirty(), vec![Rect::new(0, 0, 16, 4)]);
    }

    #[test]
    fn dirty_rects_merge_clip_and_collapse() {
        let mut fb = Framebuffer::new(100, 100);
        fb.take_dirty();
        fb.mark_dirty(Rect::new(0, 0, 10, 10));
        fb.mark_dirty(Rect::new(10, 0, 5, 10)); // shares an edge: merged
        fb.mark_dirty(Rect::new(50, 50, 5, 5));
        fb.mark_dirty(Rect::new(95, 95, 20, 20)); // clipped
        fb.mark_dirty(Rect::new(200, 0, 1, 1)); // outside: ignored
        let mut d = fb.take_dirty();
        d.sort_by_key(|r| (r.y, r.x));
        assert_eq!(
            d,
            vec![
                Rect::new(0, 0, 15, 10),
                Rect::new(50, 50, 5, 5),
                Rect::new(95, 95, 5, 5)
            ]
        );
        for i in 0..(MAX_DIRTY_RECTS as u32 + 1) {
            fb.mark_dirty(Rect::new(i * 3, i * 3, 1, 1));
        }
        assert_eq!(
            fb.take_dirty(),
            vec![Rect::new(
                0,
                0,
                MAX_DIRTY_RECTS as u32 * 3 + 1,
                MAX_DIRTY_RECTS as u32 * 3 + 1
            )]
        );
        fb.mark_dirty(Rect::new(0, 0, 100, 100));
        assert!(fb.is_full_dirty());
    }

    #[test]
    fn copy_rect_packs_rows() {
        let mut fb = Framebuffer::new(3, 2);
        fb.set_pixel(1, 0, rgb(1, 2, 3));
        fb.set_pixel(2, 1, rgb(4, 5, 6));
        let bytes = fb.copy_rect(Rect::new(1, 0, 5, 5));
        assert_eq!(
            bytes,
            vec![1, 2, 3, 255, 0, 0, 0, 255, 0, 0, 0, 255, 4, 5, 6, 255]
        );
        let shared = SharedFramebuffer::new(fb);
        assert_eq!(shared.clone().lock().pixel(2, 1), Some(rgb(4, 5, 6)));
    }
}
