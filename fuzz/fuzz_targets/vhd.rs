//! Opens arbitrary bytes as a VHD and reads and writes a few sectors.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    disk::fuzz::vhd(data);
});
