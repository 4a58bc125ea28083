//! Tiny firmware images for whole-machine tests, assembled with iced-x86.

use iced_x86::code_asm::*;

/// A 64 KiB real-mode firmware for `--firmware`: forever, increment the word at 0x600 and
/// print it as four hex digits and a newline on COM1, then spin a while (about 25 lines a
/// second on the software CPU). The count lives in RAM and registers, so a machine restored
/// from a saved state continues it exactly.
pub fn serial_counter() -> Vec<u8> {
    let mut a = CodeAssembler::new(16).expect("assembles");
    let mut main = a.create_label();
    let mut digit = a.create_label();
    let mut decimal = a.create_label();
    let mut outer = a.create_label();
    let mut inner = a.create_label();
    a.xor(ax, ax).expect("assembles");
    a.mov(ds, ax).expect("assembles");
    a.mov(ss, ax).expect("assembles");
    a.mov(sp, 0x7000u32).expect("assembles");
    a.set_label(&mut main).expect("assembles");
    a.inc(word_ptr(0x600)).expect("assembles");
    a.mov(si, word_ptr(0x600)).expect("assembles");
    a.mov(cx, 4u32).expect("assembles");
    a.mov(dx, 0x3f8u32).expect("assembles");
    a.set_label(&mut digit).expect("assembles");
    a.rol(si, 4u32).expect("assembles");
    a.mov(ax, si).expect("assembles");
    a.and(al, 0x0fu32).expect("assembles");
    a.add(al, 0x30u32).expect("assembles");
    a.cmp(al, 0x39u32).expect("assembles");
    a.jbe(decimal).expect("assembles");
    a.add(al, 7u32).expect("assembles");
    a.set_label(&mut decimal).expect("assembles");
    a.out(dx, al).expect("assembles");
    a.loop_(digit).expect("assembles");
    a.mov(al, 0x0au32).expect("assembles");
    a.out(dx, al).expect("assembles");
    a.mov(bx, 0x20u32).expect("assembles");
    a.set_label(&mut outer).expect("assembles");
    a.mov(cx, 0xffffu32).expect("assembles");
    a.set_label(&mut inner).expect("assembles");
    a.loop_(inner).expect("assembles");
    a.dec(bx).expect("assembles");
    a.jnz(outer).expect("assembles");
    a.jmp(main).expect("assembles");
    let code = a.assemble(0xf_0000).expect("assembles");
    let mut rom = vec![0xf4u8; 64 << 10];
    rom[..code.len()].copy_from_slice(&code);
    // The reset vector F000:FFF0: `jmp near 0x0000` (rel16 wraps within the segment).
    rom[0xfff0..0xfff3].copy_from_slice(&[0xe9, 0x0d, 0x00]);
    rom
}
