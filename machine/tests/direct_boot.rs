//! Direct Linux boot: the Debian 6.1 bzImage and busybox initramfs land where the 32-bit boot
//! protocol says, with a valid zero page and e820 map.

mod common;

use machine::linux::{self, LinuxBoot, CMDLINE_ADDRESS, KERNEL_ADDRESS, ZERO_PAGE};
use machine::memory::MemoryMap;

fn u32_at(m: &MemoryMap, addr: u64) -> u32 {
    u32::from_le_bytes(m.read(addr, 4).unwrap().try_into().unwrap())
}

#[test]
fn bzimage_initrd_and_zero_page() {
    let assets = common::assets();
    let kernel = assets.join("vmlinuz");
    let initrd = assets.join("initramfs.cpio.gz");
    assert!(
        kernel.is_file(),
        "{} missing: run scripts/fetch-assets.sh",
        kernel.display()
    );
    let memory = MemoryMap::new(128 << 20).unwrap();
    let boot = LinuxBoot {
        kernel,
        initrd: Some(initrd.clone()),
        cmdline: "console=ttyS0 quiet".into(),
    };
    let loaded = linux::load(&memory, &boot, 1).unwrap();
    assert_eq!(loaded.entry, KERNEL_ADDRESS);
    let zp = ZERO_PAGE;
    // Setup header: boot flag, "HdrS", loader type, command line pointer.
    assert_eq!(memory.read(zp + 0x1fe, 2).unwrap(), vec![0x55, 0xaa]);
    assert_eq!(memory.read(zp + 0x202, 4).unwrap(), b"HdrS");
    assert_eq!(memory.read(zp + 0x210, 1).unwrap(), vec![0xff]);
    assert_eq!(u32_at(&memory, zp + 0x228), CMDLINE_ADDRESS as u32);
    assert_eq!(
        memory.read(CMDLINE_ADDRESS, 20).unwrap(),
        b"console=ttyS0 quiet\0"
    );
    // Initrd: page-aligned, below RAM's end, same bytes as the file.
    let image = u64::from(u32_at(&memory, zp + 0x218));
    let size = u64::from(u32_at(&memory, zp + 0x21c));
    let file = std::fs::read(&initrd).unwrap();
    assert_eq!(size, file.len() as u64);
    assert_eq!(image % 4096, 0);
    assert!(image + size <= 128 << 20);
    assert_eq!(memory.read(image, file.len()).unwrap(), file);
    // e820: four entries, the last is RAM from 1 MiB to the end of RAM.
    assert_eq!(memory.read(zp + 0x1e8, 1).unwrap(), vec![4]);
    let last = zp + 0x2d0 + 3 * 20;
    assert_eq!(memory.read(last, 8).unwrap(), 0x10_0000u64.to_le_bytes());
    assert_eq!(
        memory.read(last + 8, 8).unwrap(),
        ((128u64 << 20) - 0x10_0000).to_le_bytes()
    );
    assert_eq!(u32_at(&memory, last + 16), 1);
    // The protected-mode kernel starts at 1 MiB.
    assert_ne!(memory.read(KERNEL_ADDRESS, 16).unwrap(), vec![0; 16]);
}

#[test]
fn initrd_too_large_for_memory_is_refused() {
    let assets = common::assets();
    let memory = MemoryMap::new(16 << 20).unwrap();
    let big = std::env::temp_dir().join(format!("terrarium-big-initrd-{}", std::process::id()));
    std::fs::write(&big, vec![0u8; 32 << 20]).unwrap();
    let boot = LinuxBoot {
        kernel: assets.join("vmlinuz"),
        initrd: Some(big.clone()),
        cmdline: String::new(),
    };
    let e = linux::load(&memory, &boot, 1).unwrap_err().to_string();
    std::fs::remove_file(&big).unwrap();
    assert!(e.contains("does not fit") && e.contains("--memory"), "{e}");
}
