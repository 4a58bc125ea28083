# A floppy boot sector that switches the standard VGA to 1024x768x32 through the Bochs VBE
# registers (banked window at 0xA0000) and fills the whole screen with a new colour, forever
# (or once and then halts when assembled with --defsym ONCE=1). The GUI benchmark's guest.
#
#   as --32 [--defsym ONCE=1] -o fbfill.o fbfill.S && ld -m elf_i386 -Ttext 0x7c00 \
#       --oformat binary -o fbfill.bin fbfill.o
    .code16
    .globl _start
_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw $0x7c00, %sp
    cld
    # DISPI: disable, 1024x768, 32 bpp, enable (banked, no LFB).
    movw $4, %ax
    xorw %bx, %bx
    call dispi
    movw $1, %ax
    movw $1024, %bx
    call dispi
    movw $2, %ax
    movw $768, %bx
    call dispi
    movw $3, %ax
    movw $32, %bx
    call dispi
    movw $4, %ax
    movw $1, %bx
    call dispi
    movl $0x00204060, %eax
    movl %eax, %ebp
frame:
    xorw %si, %si              # bank 0..47 (3 MiB in 64 KiB banks)
bank:
    movw $5, %ax
    movw %si, %bx
    call dispi
    movw $0xa000, %ax
    movw %ax, %es
    xorw %di, %di
    movl %ebp, %eax
    movw $16384, %cx
    rep stosl
    incw %si
    cmpw $48, %si
    jb bank
    addl $0x00030507, %ebp     # next frame, next colour
.ifdef ONCE
halt:
    hlt
    jmp halt
.else
    jmp frame
.endif

# dispi: register %ax := %bx
dispi:
    movw $0x1ce, %dx
    outw %ax, %dx
    movw $0x1cf, %dx
    movw %bx, %ax
    outw %ax, %dx
    ret

    .org 510
    .byte 0x55, 0xaa
