//! Opens arbitrary bytes as a qcow2 image and reads and writes a few sectors.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    disk::fuzz::qcow2(data);
});
