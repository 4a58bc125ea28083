//! Fuzzing harnesses: open a byte buffer as an image and read and write a few sectors. The
//! `fuzz/` targets call these; the unit tests run them on thousands of mutated images.

use std::path::Path;

use crate::raw::Raw;
use crate::{open_memory, BlockDevice, Format, MemStorage, OpenOptions, Result};

/// Opens `data` as a VHD (any variant) and exercises it. Never panics on any input.
pub fn vhd(data: &[u8]) {
    run(data, Format::VhdDynamic);
}

/// Opens `data` as a qcow2 image and exercises it. Never panics on any input.
pub fn qcow2(data: &[u8]) {
    run(data, Format::Qcow2);
}

fn zero_backing(_name: &str) -> Result<Box<dyn BlockDevice>> {
    let st = MemStorage::new(vec![0x5a; 256 << 10], 256 << 10);
    Ok(Box::new(Raw::open(st, Path::new("<backing>"), true)?))
}

fn run(data: &[u8], format: Format) {
    let limit = data.len() as u64 + (16 << 20);
    let name = Path::new("<fuzz>");
    let mut opts = OpenOptions {
        read_only: false,
        format: Some(format),
    };
    let st = MemStorage::new(data.to_vec(), limit);
    let dev = match open_memory(st, name, &opts, &mut zero_backing) {
        Ok(d) => d,
        Err(_) => {
            opts.read_only = true;
            let st = MemStorage::new(data.to_vec(), limit);
            match open_memory(st, name, &opts, &mut zero_backing) {
                Ok(d) => d,
                Err(_) => return,
            }
        }
    };
    exercise(dev, data);
}

fn exercise(mut dev: Box<dyn BlockDevice>, data: &[u8]) {
    let size = dev.size();
    let _ = dev.info();
    let seed = data
        .iter()
        .take(64)
        .fold(0x9e37_79b9_u64, |a, &b| a.rotate_left(5) ^ u64::from(b));
    let mut offsets = vec![
        0u64,
        size / 2,
        size.saturating_sub(4096),
        seed % size.max(1),
    ];
    offsets.push(size.saturating_sub(1));
    let mut buf = vec![0u8; 8192];
    for &o in &offsets {
        let n = 8192.min(size.saturating_sub(o)) as usize;
        let _ = dev.read_at(o, &mut buf[..n]);
        let _ = dev.extent(o, 1 << 20);
    }
    let _ = dev.read_at(size, &mut buf[..1]);
    let _ = dev.read_at(u64::MAX - 1, &mut buf[..16]);
    if !dev.read_only() {
        let pattern: Vec<u8> = (0..5000u32).map(|i| (i as u8) ^ (seed as u8)).collect();
        for &o in &offsets {
            let o = o.saturating_sub(100);
            let n = pattern.len().min(size.saturating_sub(o) as usize);
            let _ = dev.write_at(o, &pattern[..n]);
            let _ = dev.read_at(o, &mut buf[..n]);
        }
        let _ = dev.write_at(size, &pattern[..1]);
        let _ = dev.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qcow2::{self, Qcow2Options};
    use crate::vhd;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    fn mem() -> MemStorage {
        MemStorage::new(Vec::new(), 64 << 20)
    }

    fn seeds() -> Vec<(Format, Vec<u8>)> {
        let p = Path::new("<seed>");
        let mut out = Vec::new();
        for (version, cs) in [(3u32, 65536u32), (2, 512), (3, 4096)] {
            let mut st = mem();
            let o = Qcow2Options {
                version,
                cluster_size: cs,
                backing: None,
            };
            qcow2::create(&mut st, p, 4 << 20, &o).expect("create qcow2");
            out.push((Format::Qcow2, written(st, Format::Qcow2)));
        }
        let mut st = mem();
        let o = Qcow2Options {
            backing: Some(("base.img".into(), "raw".into())),
            ..Qcow2Options::default()
        };
        qcow2::create(&mut st, p, 1 << 20, &o).expect("create qcow2 overlay");
        out.push((Format::Qcow2, written(st, Format::Qcow2)));
        let mut st = mem();
        vhd::create_dynamic(&mut st, p, 3 << 20).expect("create vhd");
        out.push((Format::VhdDynamic, written(st, Format::VhdDynamic)));
        let mut st = mem();
        vhd::create_fixed(&mut st, p, 256 << 10).expect("create fixed vhd");
        out.push((Format::VhdFixed, written(st, Format::VhdFixed)));
        let mut st = mem();
        let parent = vhd::ParentRef {
            uuid: [0; 16],
            mtime: 0,
            name: "parent.vhd".into(),
            absolute: "\\tmp\\parent.vhd".into(),
            relative: ".\\parent.vhd".into(),
        };
        vhd::create_sparse(&mut st, p, 1 << 20, Some(&parent)).expect("create diff vhd");
        out.push((
            Format::VhdDifferencing,
            written(st, Format::VhdDifferencing),
        ));
        out
    }

    /// Writes a few patterns through the real code and returns the resulting bytes.
    fn written(st: MemStorage, format: Format) -> Vec<u8> {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(st));
        let mut dev = open_shared(shared.clone(), format);
        let size = dev.size();
        for (i, o) in [0u64, 70_000, size / 2 + 3].into_iter().enumerate() {
            let n = 3000.min(size - o) as usize;
            dev.write_at(o, &vec![i as u8 + 1; n]).expect("seed write");
            let mut back = vec![0u8; n];
            dev.read_at(o, &mut back).expect("seed read");
            assert!(back.iter().all(|&b| b == i as u8 + 1));
        }
        drop(dev);
        let data = shared.lock().map(|g| g.data.clone()).unwrap_or_default();
        data
    }

    /// A store shared with the test, so the bytes can be taken back after writing.
    struct Shared(std::sync::Arc<std::sync::Mutex<MemStorage>>);
    impl crate::Storage for Shared {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .write_at(offset, buf)
        }
        fn len(&self) -> std::io::Result<u64> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .len()
        }
        fn set_len(&mut self, len: u64) -> std::io::Result<()> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .set_len(len)
        }
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn open_shared(
        st: std::sync::Arc<std::sync::Mutex<MemStorage>>,
        format: Format,
    ) -> Box<dyn BlockDevice> {
        let opts = OpenOptions {
            read_only: false,
            format: Some(format),
        };
        let mut resolver = |_req: crate::BackingRequest<'_>| zero_backing("");
        crate::open_storage(Shared(st), Path::new("<seed>"), &opts, &mut resolver)
            .expect("seed opens")
    }

    #[test]
    fn seeds_run_through_the_harness() {
        for (format, data) in seeds() {
            assert!(!data.is_empty(), "{format}");
            run(&data, format);
        }
    }

    #[test]
    fn mutated_images_never_panic() {
        let seeds = seeds();
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let interesting: [u64; 10] = [
            0,
            1,
            0x1ff,
            0x200,
            0xffff,
            0x7fff_ffff,
            0xffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
            1 << 40,
        ];
        for iter in 0..3000u32 {
            let (format, seed) = &seeds[iter as usize % seeds.len()];
            let mut d = seed.clone();
            let muts = 1 + rng.below(6);
            for _ in 0..muts {
                let hot = d.len().min(if rng.below(4) == 0 { d.len() } else { 2048 }) as u64;
                match rng.below(5) {
                    0 => {
                        let i = rng.below(hot) as usize;
                        d[i] = rng.next() as u8;
                    }
                    1 => {
                        let i = (rng.below(hot) & !7) as usize;
                        let v = interesting[rng.below(interesting.len() as u64) as usize];
                        let n = if rng.below(2) == 0 { 4 } else { 8 };
                        let bytes = v.to_be_bytes();
                        for k in 0..n {
                            if let Some(b) = d.get_mut(i + k) {
                                *b = bytes[8 - n + k];
                            }
                        }
                    }
                    2 => {
                        let len = rng.below(d.len() as u64 + 1) as usize;
                        d.truncate(len);
                    }
                    3 => {
                        // Damage the VHD footer at the end, where fixed disks keep it.
                        if d.len() > 512 {
                            let i = d.len() - 512 + rng.below(512) as usize;
                            d[i] ^= 1 << rng.below(8);
                        }
                    }
                    _ => {
                        let i = rng.below(d.len() as u64) as usize;
                        if let Some(b) = d.get_mut(i) {
                            *b ^= 0xff;
                        }
                    }
                }
                if d.is_empty() {
                    break;
                }
            }
            match format {
                Format::Qcow2 => qcow2(&d),
                _ => vhd(&d),
            }
        }
    }

    #[test]
    fn arbitrary_small_inputs_never_panic() {
        let mut rng = XorShift(7);
        for len in [0usize, 1, 72, 104, 511, 512, 513, 1024, 1536, 4096] {
            for _ in 0..20 {
                let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                qcow2(&d);
                vhd(&d);
                if d.len() >= 8 {
                    d[..4].copy_from_slice(&crate::qcow2::MAGIC);
                    qcow2(&d);
                    d[..8].copy_from_slice(vhd::COOKIE);
                    vhd(&d);
                }
            }
        }
    }
}
