//! Probes arbitrary bytes as a dropped file: ISO 9660 / El Torito, FAT, MBR/GPT and boot
//! loader configuration parsing, under a few file names (the extension steers floppy and
//! blank-disk decisions).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let name = ["drop.iso", "drop.img", "drop.vhd", "drop.bin"][usize::from(sel) % 4];
    let _ = media_detect::probe_bytes(name, rest);
});
