//! Tiny firmware images for whole-machine tests and benchmarks, assembled with iced-x86. Each is
//! a 64 KiB image for `--firmware`/`-bios`: the reset vector F000:FFF0 jumps to offset 0, which
//! runs from the low alias at 0xF0000.

use iced_x86::code_asm::*;

/// Size of every image here.
const ROM_SIZE: usize = 64 << 10;
/// Where the image's low alias starts in guest-physical memory.
const ALIAS: u64 = 0xf_0000;

/// The image with `code` at offset 0 and the reset vector jumping there.
fn rom_with(code: &[u8]) -> Vec<u8> {
    let mut rom = vec![0xf4u8; ROM_SIZE];
    rom[..code.len()].copy_from_slice(code);
    // `jmp near 0x0000` at F000:FFF0 (rel16 wraps within the segment).
    rom[0xfff0..0xfff3].copy_from_slice(&[0xe9, 0x0d, 0x00]);
    rom
}

/// Prints the 16-bit value in SI as four hex digits and a newline on COM1 (real mode).
fn print_hex16(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut digit = a.create_label();
    let mut decimal = a.create_label();
    a.mov(cx, 4u32)?;
    a.mov(dx, 0x3f8u32)?;
    a.set_label(&mut digit)?;
    a.rol(si, 4u32)?;
    a.mov(ax, si)?;
    a.and(al, 0x0fu32)?;
    a.add(al, 0x30u32)?;
    a.cmp(al, 0x39u32)?;
    a.jbe(decimal)?;
    a.add(al, 7u32)?;
    a.set_label(&mut decimal)?;
    a.out(dx, al)?;
    a.loop_(digit)?;
    a.mov(al, 0x0au32)?;
    a.out(dx, al)
}

fn serial_counter_code() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(16)?;
    let mut main = a.create_label();
    let mut outer = a.create_label();
    let mut inner = a.create_label();
    a.xor(ax, ax)?;
    a.mov(ds, ax)?;
    a.mov(ss, ax)?;
    a.mov(sp, 0x7000u32)?;
    a.set_label(&mut main)?;
    a.inc(word_ptr(0x600))?;
    a.mov(si, word_ptr(0x600))?;
    print_hex16(&mut a)?;
    a.mov(bx, 0x20u32)?;
    a.set_label(&mut outer)?;
    a.mov(cx, 0xffffu32)?;
    a.set_label(&mut inner)?;
    a.loop_(inner)?;
    a.dec(bx)?;
    a.jnz(outer)?;
    a.jmp(main)?;
    a.assemble(ALIAS)
}

/// Forever: increment the word at 0x600 and print it as four hex digits and a newline on COM1,
/// then spin a while (about 25 lines a second on the software CPU). The count lives in RAM and
/// registers, so a machine restored from a saved state continues it exactly.
pub fn serial_counter() -> Vec<u8> {
    rom_with(&serial_counter_code().expect("the counter firmware assembles"))
}

fn disk_counter_code() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(16)?;
    let mut main = a.create_label();
    let mut drq = a.create_label();
    let mut idle = a.create_label();
    let mut outer = a.create_label();
    let mut inner = a.create_label();
    a.xor(ax, ax)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(ss, ax)?;
    a.mov(sp, 0x7000u32)?;
    a.cld()?;
    a.set_label(&mut main)?;
    a.inc(word_ptr(0x600))?;
    a.mov(ax, word_ptr(0x600))?;
    a.mov(word_ptr(0x800), ax)?;
    // ATA WRITE SECTORS (LBA 0, one sector) on the primary master, by PIO.
    for (port, value) in [
        (0x1f6u32, 0xe0u32),
        (0x1f2, 1),
        (0x1f3, 0),
        (0x1f4, 0),
        (0x1f5, 0),
    ] {
        a.mov(dx, port)?;
        a.mov(al, value)?;
        a.out(dx, al)?;
    }
    a.mov(dx, 0x1f7u32)?;
    a.mov(al, 0x30u32)?;
    a.out(dx, al)?;
    a.set_label(&mut drq)?;
    a.in_(al, dx)?;
    a.test(al, 0x08u32)?;
    a.jz(drq)?;
    a.mov(si, 0x800u32)?;
    a.mov(cx, 256u32)?;
    a.mov(dx, 0x1f0u32)?;
    a.rep().outsw()?;
    a.mov(dx, 0x1f7u32)?;
    a.set_label(&mut idle)?;
    a.in_(al, dx)?;
    a.test(al, 0x80u32)?;
    a.jnz(idle)?;
    a.mov(si, word_ptr(0x600))?;
    print_hex16(&mut a)?;
    a.mov(bx, 0x20u32)?;
    a.set_label(&mut outer)?;
    a.mov(cx, 0xffffu32)?;
    a.set_label(&mut inner)?;
    a.loop_(inner)?;
    a.dec(bx)?;
    a.jnz(outer)?;
    a.jmp(main)?;
    a.assemble(ALIAS)
}

/// Like [`serial_counter`], but each new count is first written, as the first word of sector
/// 0, to the hard disk on the primary master (ATA PIO), then printed; the machine needs that
/// disk. A test can tell from the disk which counts the guest wrote.
pub fn disk_counter() -> Vec<u8> {
    rom_with(&disk_counter_code().expect("the disk counter firmware assembles"))
}

/// Offset of the 32-bit part of [`random_fill`] in the image.
const FILL_PM_OFFSET: u64 = 0x200;
/// Offset of the GDT (null, flat code 0x08, flat data 0x10) and its descriptor.
const FILL_GDT_OFFSET: usize = 0x100;

fn random_fill_code(mib: u32) -> Result<(Vec<u8>, Vec<u8>), IcedError> {
    // Real mode: load the GDT, enter protected mode, far-jump to the 32-bit part.
    let mut r = CodeAssembler::new(16)?;
    r.cli()?;
    r.mov(ax, 0xf000u32)?;
    r.mov(ds, ax)?;
    r.lgdt(ptr(FILL_GDT_OFFSET as u32 + 24))?;
    r.mov(eax, cr0)?;
    r.or(eax, 1u32)?;
    r.mov(cr0, eax)?;
    let mut real = r.assemble(ALIAS)?;
    // jmp far dword 0x08:ALIAS+FILL_PM_OFFSET
    real.extend_from_slice(&[0x66, 0xea]);
    real.extend_from_slice(&((ALIAS + FILL_PM_OFFSET) as u32).to_le_bytes());
    real.extend_from_slice(&0x08u16.to_le_bytes());

    // Protected mode: fill RAM from 1 MiB to the top with xorshift32, say FILLED, then print a
    // dot now and then forever.
    let mut p = CodeAssembler::new(32)?;
    let mut fill = p.create_label();
    let mut text = p.create_label();
    let mut tick = p.create_label();
    let mut spin = p.create_label();
    p.mov(ax, 0x10u32)?;
    p.mov(ds, ax)?;
    p.mov(es, ax)?;
    p.mov(ss, ax)?;
    p.mov(esp, 0x7000u32)?;
    p.cld()?;
    p.mov(edi, 0x10_0000u32)?;
    p.mov(ecx, ((u64::from(mib) << 20) - 0x10_0000) as u32 / 4)?;
    p.mov(eax, 0x1234_5678u32)?;
    p.set_label(&mut fill)?;
    p.mov(edx, eax)?;
    p.shl(edx, 13u32)?;
    p.xor(eax, edx)?;
    p.mov(edx, eax)?;
    p.shr(edx, 17u32)?;
    p.xor(eax, edx)?;
    p.mov(edx, eax)?;
    p.shl(edx, 5u32)?;
    p.xor(eax, edx)?;
    p.stosd()?;
    p.dec(ecx)?;
    p.jnz(fill)?;
    p.mov(esi, ALIAS as u32 + 0x180)?;
    p.mov(dx, 0x3f8u32)?;
    p.set_label(&mut text)?;
    p.lodsb()?;
    p.test(al, al)?;
    p.jz(tick)?;
    p.out(dx, al)?;
    p.jmp(text)?;
    p.set_label(&mut tick)?;
    p.mov(ecx, 0x0100_0000u32)?;
    p.set_label(&mut spin)?;
    p.dec(ecx)?;
    p.jnz(spin)?;
    p.mov(al, b'.' as u32)?;
    p.out(dx, al)?;
    p.jmp(tick)?;
    let protected = p.assemble(ALIAS + FILL_PM_OFFSET)?;
    Ok((real, protected))
}

/// Fills guest RAM from 1 MiB up to `mib` MiB (below the PCI hole) with pseudo-random data
/// (xorshift32), prints `FILLED` and a newline on COM1, then a dot every so often. The guest of
/// the snapshot benchmark: its RAM does not compress and every page is touched.
pub fn random_fill(mib: u32) -> Vec<u8> {
    let (real, protected) = random_fill_code(mib).expect("the fill firmware assembles");
    let mut code = vec![0xf4u8; FILL_PM_OFFSET as usize + protected.len()];
    code[..real.len()].copy_from_slice(&real);
    let gdt: [u64; 3] = [0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    for (i, d) in gdt.iter().enumerate() {
        let at = FILL_GDT_OFFSET + 8 * i;
        code[at..at + 8].copy_from_slice(&d.to_le_bytes());
    }
    // The GDT descriptor: limit, then base (the GDT in the low alias).
    let desc = FILL_GDT_OFFSET + 24;
    code[desc..desc + 2].copy_from_slice(&23u16.to_le_bytes());
    code[desc + 2..desc + 6]
        .copy_from_slice(&(ALIAS as u32 + FILL_GDT_OFFSET as u32).to_le_bytes());
    code[0x180..0x188].copy_from_slice(b"FILLED\n\0");
    code[FILL_PM_OFFSET as usize..].copy_from_slice(&protected);
    rom_with(&code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn images_are_64k_with_a_reset_vector() {
        for rom in [
            super::serial_counter(),
            super::disk_counter(),
            super::random_fill(64),
        ] {
            assert_eq!(rom.len(), 64 << 10);
            assert_eq!(&rom[0xfff0..0xfff3], &[0xe9, 0x0d, 0x00]);
        }
    }
}
