use super::*;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

/// The Intel-syntax text of the code `f` assembles (one instruction per line).
fn text(f: impl FnOnce(&mut Asm) -> Res) -> String {
    let mut a = Asm::new();
    f(&mut a).expect("encodable");
    let code = a.finish().expect("labels bound");
    let mut d = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE);
    let mut fmt = IntelFormatter::new();
    let mut out = Vec::new();
    while d.can_decode() {
        let i = d.decode();
        assert!(!i.is_invalid(), "invalid encoding {code:02x?}");
        let mut s = String::new();
        fmt.format(&i, &mut s);
        out.push(s);
    }
    out.join("; ")
}

/// Code to assemble.
type Emit = Box<dyn Fn(&mut Asm) -> Res>;

/// Every form the generator uses (and the addressing corner cases: RBP/R13 and RSP/R12 as
/// base, no base) decodes as the instruction asked for.
#[test]
fn each_form_encodes_as_written() {
    let cases: Vec<(&str, &str, Emit)> = vec![
        (
            "mov r,m",
            "mov rax,[rdi+8]",
            Box::new(|a| a.mov(rax, qword_ptr(rdi + 8))),
        ),
        (
            "mov r,m r8",
            "mov r8,[rdi+100h]",
            Box::new(|a| a.mov(r8, qword_ptr(rdi + 0x100))),
        ),
        (
            "mov m,r",
            "mov [rsi+20h],r11",
            Box::new(|a| a.mov(qword_ptr(rsi + 4 * 8), r11)),
        ),
        (
            "mov m,r32",
            "mov [rax],ecx",
            Box::new(|a| a.mov(dword_ptr(rax), ecx)),
        ),
        (
            "mov m,r16",
            "mov [rax],cx",
            Box::new(|a| a.mov(word_ptr(rax), cx)),
        ),
        (
            "mov m,r8",
            "mov [rax],cl",
            Box::new(|a| a.mov(byte_ptr(rax), cl)),
        ),
        (
            "mov m,ax",
            "mov [rdi+10h],ax",
            Box::new(|a| a.mov(word_ptr(rdi + 16), ax)),
        ),
        (
            "mov r32,m",
            "mov ecx,[rsi+7Ch]",
            Box::new(|a| a.mov(ecx, dword_ptr(rsi + 0x7c))),
        ),
        (
            "movzx r32,m16",
            "movzx eax,word ptr [rsi+2]",
            Box::new(|a| a.movzx(eax, word_ptr(rsi + 2))),
        ),
        (
            "movzx r32,m8",
            "movzx ecx,byte ptr [rsi+8]",
            Box::new(|a| a.movzx(ecx, byte_ptr(rsi + 8))),
        ),
        (
            "movzx ecx,ah",
            "movzx ecx,ah",
            Box::new(|a| a.movzx(ecx, ah)),
        ),
        (
            "movzx r10d,r10b",
            "movzx r10d,r10b",
            Box::new(|a| a.movzx(r10d, r10b)),
        ),
        (
            "movzx eax,ax",
            "movzx eax,ax",
            Box::new(|a| a.movzx(eax, ax)),
        ),
        (
            "movsx rax,ax",
            "movsx rax,ax",
            Box::new(|a| a.movsx(rax, ax)),
        ),
        (
            "movsx rax,al",
            "movsx rax,al",
            Box::new(|a| a.movsx(rax, al)),
        ),
        ("movsxd", "movsxd rax,eax", Box::new(|a| a.movsxd(rax, eax))),
        ("mov r,r", "mov rax,rcx", Box::new(|a| a.mov(rax, rcx))),
        ("mov r32,r32", "mov eax,eax", Box::new(|a| a.mov(eax, eax))),
        ("mov al,r10b", "mov al,r10b", Box::new(|a| a.mov(al, r10b))),
        (
            "mov imm64",
            "mov rax,123456789ABCDEF0h",
            Box::new(|a| a.mov(rax, 0x1234_5678_9abc_def0u64)),
        ),
        (
            "mov imm u32",
            "mov eax,80000000h",
            Box::new(|a| a.mov(rax, 0x8000_0000u64)),
        ),
        (
            "mov imm neg",
            "mov rax,0FFFFFFFFFFFFFFF0h",
            Box::new(|a| a.mov(rax, 0xffff_ffff_ffff_fff0u64)),
        ),
        (
            "mov r32 imm",
            "mov edx,1234h",
            Box::new(|a| a.mov(edx, 0x1234u32)),
        ),
        (
            "mov m imm",
            "mov qword ptr [rdi+28h],3",
            Box::new(|a| a.mov(qword_ptr(rdi + 0x28), 3i32)),
        ),
        (
            "mov r64 i64",
            "mov rcx,0FFFFFFFFFFFFFFFBh",
            Box::new(|a| a.mov(rcx, -5i64)),
        ),
        (
            "lea sib",
            "lea rax,[rax+rcx*4+10h]",
            Box::new(|a| a.lea(rax, qword_ptr(rax + rcx * 4 + 0x10))),
        ),
        (
            "lea idx",
            "lea rax,[rcx*8-4]",
            Box::new(|a| a.lea(rax, qword_ptr(rcx * 8 + -4))),
        ),
        (
            "lea base",
            "lea rax,[rax-8]",
            Box::new(|a| a.lea(rax, qword_ptr(rax - 8))),
        ),
        (
            "lea r11",
            "lea r11,[rax+8]",
            Box::new(|a| a.lea(r11, qword_ptr(rax + 8))),
        ),
        (
            "lea rdx+rdx",
            "lea r10,[rdx+rdx]",
            Box::new(|a| a.lea(r10, qword_ptr(rdx + rdx))),
        ),
        (
            "lea rax+rcx",
            "lea rax,[rax+rcx]",
            Box::new(|a| a.lea(rax, qword_ptr(rax + rcx))),
        ),
        ("add rax,rdx", "add rax,rdx", Box::new(|a| a.add(rax, rdx))),
        ("add rdx,r8", "add rdx,r8", Box::new(|a| a.add(rdx, r8))),
        ("add al imm", "add al,7Fh", Box::new(|a| a.add(al, 0x7f))),
        (
            "add m imm",
            "add qword ptr [rdi+40h],5",
            Box::new(|a| a.add(qword_ptr(rdi + 0x40), 5)),
        ),
        (
            "sub m imm32",
            "sub qword ptr [rdi+40h],3E8h",
            Box::new(|a| a.sub(qword_ptr(rdi + 0x40), 1000)),
        ),
        ("and edx", "and edx,1FC0h", Box::new(|a| a.and(edx, 0x1fc0))),
        (
            "and rcx -8",
            "and rcx,0FFFFFFFFFFFFFFF8h",
            Box::new(|a| a.and(rcx, -8)),
        ),
        ("and ah", "and ah,0EFh", Box::new(|a| a.and(ah, 0xef))),
        ("or rcx key", "or rcx,5", Box::new(|a| a.or(rcx, 0x5))),
        (
            "cmp r m",
            "cmp rcx,[rdx+8]",
            Box::new(|a| a.cmp(rcx, qword_ptr(rdx + 8))),
        ),
        (
            "add r m",
            "add rax,[rdx+10h]",
            Box::new(|a| a.add(rax, qword_ptr(rdx + 16))),
        ),
        (
            "adc m r",
            "adc [rax],rcx",
            Box::new(|a| a.adc(qword_ptr(rax), rcx)),
        ),
        (
            "sbb m8 r8",
            "sbb [rax],cl",
            Box::new(|a| a.sbb(byte_ptr(rax), cl)),
        ),
        ("xor w", "xor ax,cx", Box::new(|a| a.xor(ax, cx))),
        ("test", "test eax,eax", Box::new(|a| a.test(eax, eax))),
        (
            "test m r",
            "test [rax],ecx",
            Box::new(|a| a.test(dword_ptr(rax), ecx)),
        ),
        ("or ecx r10d", "or ecx,r10d", Box::new(|a| a.or(ecx, r10d))),
        ("shl", "shl rax,10h", Box::new(|a| a.shl(rax, 16))),
        ("shr edx", "shr edx,6", Box::new(|a| a.shr(edx, 6))),
        ("sar", "sar rax,10h", Box::new(|a| a.sar(rax, 16))),
        ("shl cl", "shl eax,cl", Box::new(|a| a.shl(eax, cl))),
        ("rol al", "rol al,3", Box::new(|a| a.rol(al, 3u32))),
        ("ror ax", "ror ax,1", Box::new(|a| a.ror(ax, 1u32))),
        ("shr r10", "shr r10,3Fh", Box::new(|a| a.shr(r10, 63u32))),
        (
            "inc m",
            "inc dword ptr [rax]",
            Box::new(|a| a.inc(dword_ptr(rax))),
        ),
        ("dec r", "dec r11", Box::new(|a| a.dec(r11))),
        ("neg", "neg ax", Box::new(|a| a.neg(ax))),
        ("not", "not al", Box::new(|a| a.not(al))),
        ("mul", "mul rcx", Box::new(|a| a.mul(rcx))),
        ("div", "div ecx", Box::new(|a| a.div(ecx))),
        ("imul", "imul rax,rcx", Box::new(|a| a.imul_2(rax, rcx))),
        ("imul w", "imul ax,cx", Box::new(|a| a.imul_2(ax, cx))),
        ("bt", "bt r9,r10", Box::new(|a| a.bt(r9, r10))),
        ("bswap", "bswap eax", Box::new(|a| a.bswap(eax))),
        ("bswap64", "bswap rax", Box::new(|a| a.bswap(rax))),
        ("seto r10b", "seto r10b", Box::new(|a| a.seto(r10b))),
        ("setg al", "setg al", Box::new(|a| a.setg(al))),
        ("cmovne", "cmovne rax,rcx", Box::new(|a| a.cmovne(rax, rcx))),
        (
            "lahf sahf ret",
            "lahf; sahf; ret",
            Box::new(|a| {
                a.lahf()?;
                a.sahf()?;
                a.ret()
            }),
        ),
        (
            "jmp m",
            "jmp qword ptr [rax+18h]",
            Box::new(|a| a.jmp(qword_ptr(rax + 24))),
        ),
        (
            "abs",
            "mov rax,[1000h]",
            Box::new(|a| {
                a.mov(
                    rax,
                    qword_ptr(Mem {
                        base: None,
                        index: None,
                        disp: 0x1000,
                    }),
                )
            }),
        ),
        (
            "rbp base",
            "mov rax,[rbp]",
            Box::new(|a| a.mov(rax, qword_ptr(R64(5) + 0))),
        ),
        (
            "r13 base",
            "mov rax,[r13]",
            Box::new(|a| a.mov(rax, qword_ptr(R64(13) + 0))),
        ),
        (
            "rsp base",
            "mov rax,[rsp+8]",
            Box::new(|a| a.mov(rax, qword_ptr(R64(4) + 8))),
        ),
        (
            "r12 base",
            "mov rax,[r12+80h]",
            Box::new(|a| a.mov(rax, qword_ptr(R64(12) + 0x80))),
        ),
        (
            "r9 index",
            "mov rax,[r12+r9*2+1]",
            Box::new(|a| a.mov(rax, qword_ptr(R64(12) + r9 * 2 + 1))),
        ),
        (
            "labels",
            "jne 000000000000000Bh; jmp 0; ret",
            Box::new(|a| {
                let mut top = a.create_label();
                let out = a.create_label();
                a.set_label(&mut top)?;
                a.jne(out)?;
                a.jmp(top)?;
                let mut out2 = out;
                a.set_label(&mut out2)?;
                a.ret()
            }),
        ),
    ];
    for (name, want, f) in cases {
        assert_eq!(text(|a| f(a)), want, "{name}");
    }
}

#[test]
fn unencodable_operands_and_unbound_labels_are_errors() {
    let mut a = Asm::new();
    // AH..BH cannot go with a REX prefix.
    assert_eq!(a.movzx(r10d, ah), Err(AsmError));
    assert_eq!(a.mov(qword_ptr(rax), 1u64 << 40), Err(AsmError));
    let l = a.create_label();
    a.jmp(l).expect("a label");
    assert_eq!(a.finish(), Err(AsmError));
}
