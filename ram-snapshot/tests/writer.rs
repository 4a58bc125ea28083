//! The file holds guest RAM as it was when the write started, whatever the guest does after.

use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress};

fn regions(sizes: &[usize], seed: u8) -> Vec<Arc<GuestRegionMmap>> {
    let mut start = 0u64;
    sizes
        .iter()
        .map(|&size| {
            let r = GuestRegionMmap::from_range(GuestAddress(start), size, None).unwrap();
            start += size as u64 + 0x10_0000;
            let bytes: Vec<u8> = (0..size)
                .map(|i| (i as u8) ^ seed ^ (i >> 12) as u8)
                .collect();
            r.write_slice(&bytes, MemoryRegionAddress(0)).unwrap();
            Arc::new(r)
        })
        .collect()
}

fn contents(regions: &[Arc<GuestRegionMmap>]) -> Vec<u8> {
    let mut all = Vec::new();
    for r in regions {
        let mut b = vec![0u8; r.len() as usize];
        r.read_slice(&mut b, MemoryRegionAddress(0)).unwrap();
        all.extend_from_slice(&b);
    }
    all
}

#[test]
fn file_holds_memory_as_it_was_at_start() {
    let dir = std::env::temp_dir().join(format!("ram-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ram.bin");
    let ram = regions(&[640 << 10, 3 << 20, 1 << 20], 0x5a);
    let before = contents(&ram);

    let writer = ram_snapshot::start(&ram, std::fs::File::create(&path).unwrap()).unwrap();
    assert_eq!(writer.total(), before.len() as u64);
    // The guest runs on and rewrites all of its memory.
    for r in &ram {
        let junk = vec![0xeeu8; r.len() as usize];
        r.write_slice(&junk, MemoryRegionAddress(0)).unwrap();
    }
    writer.wait().unwrap();

    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(contents(&ram).iter().all(|&b| b == 0xee));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn progress_reaches_total() {
    let path = std::env::temp_dir().join(format!("ram-snapshot-p-{}", std::process::id()));
    let ram = regions(&[2 << 20], 1);
    let mut writer = ram_snapshot::start(&ram, std::fs::File::create(&path).unwrap()).unwrap();
    while !writer.is_finished() {
        assert!(writer.written() <= writer.total());
        std::thread::yield_now();
    }
    assert_eq!(writer.written(), 2 << 20);
    writer.wait().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn full_disk_is_reported() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(full) = full else {
        return; // No /dev/full on this host.
    };
    let ram = regions(&[1 << 20], 2);
    let err = ram_snapshot::start(&ram, full).unwrap().wait().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
}
