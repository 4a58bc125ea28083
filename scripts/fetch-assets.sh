#!/usr/bin/env bash
# Fetch Terrarium's test assets from Debian packages and build the test images.
#
#   scripts/fetch-assets.sh            # fills $REPO/.cache/assets (or $TERRARIUM_ASSETS)
#
# Packages are fetched with `apt-get download` and unpacked with dpkg into
# <cache>/pkgs/<package>; nothing is installed into the system except the image
# tools (xorriso), which are installed with apt-get only when missing.
# The script is idempotent: outputs that exist and are newer than their inputs
# are kept, so a warm run only re-hashes the outputs for manifest.txt.
#
# Outputs in the cache folder:
#   bios.bin bios-256k.bin vgabios-stdvga.bin   SeaBIOS (package seabios)
#   vmlinuz                                     Debian 6.1 bzImage (linux-image-6.1.*-amd64)
#   linux-font-8x16.bin                         the kernel's console font (read back from screens)
#   initramfs.cpio.gz                           busybox-static; /init prints TERRARIUM-BOOT-OK, powers off
#   linux.iso                                   isolinux El Torito CD with vmlinuz + initramfs
#   demo.iso                                    the same, booting to a shell on the screen (demo VM)
#   linux-hdd.img                               32 MiB MBR disk: FAT16 partition, syslinux, same Linux
#   memtest-floppy.img                          1.44 MB FAT12 floppy: syslinux + memtest86+ (serial)
#   memtest86+x64.bin memtest86+x64.efi ...     memtest86+
#   manifest.txt                                file, source package(s) and version(s), sha256
#
# Environment:
#   TERRARIUM_ASSETS      cache folder (default $REPO/.cache/assets)
#   TERRARIUM_KERNEL_PKG  kernel package to use instead of linux-image-amd64's dependency
# The kernel package is chosen once and then kept; delete the cache folder to move to a newer one.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/scripts/fetch-assets.sh"
ASSETS=${TERRARIUM_ASSETS:-$REPO/.cache/assets}
PKGS="$ASSETS/pkgs"
MARKER="TERRARIUM-BOOT-OK"
# Fixed timestamp for the files inside the generated images, so they are reproducible.
export EPOCH=1700000000

LOG_PREFIX=fetch-assets
# shellcheck source=scripts/deb-lib.sh
. "$REPO/scripts/deb-lib.sh"
DEB_TMP=$ASSETS

# fetch_pkg PACKAGE [TAR-MEMBER...]: unpack PACKAGE into $PKGS/PACKAGE unless already there.
fetch_pkg() {
    local pkg=$1; shift
    deb_fetch "$pkg" "$PKGS/$pkg" "$PKGS/$pkg/.terrarium-pkg" "$@"
}

# "package version" of an unpacked package.
pkg_id() { stamp_id "$PKGS/$1/.terrarium-pkg"; }

# Which 6.1 kernel image package to use: the cached one, else linux-image-amd64's dependency.
kernel_pkg() {
    if [ -n "${TERRARIUM_KERNEL_PKG:-}" ]; then echo "$TERRARIUM_KERNEL_PKG"; return; fi
    local p cached=""
    for p in "$PKGS"/linux-image-6.1.*-amd64 "$PKGS"/linux-image-6.1.*-amd64-unsigned; do
        [ -f "$p/.terrarium-pkg" ] && cached=$(basename "$p")
    done
    if [ -n "$cached" ]; then echo "$cached"; return; fi
    local deps pkg=""
    while :; do
        deps=$(apt-cache depends linux-image-amd64 2>/dev/null || true)
        pkg=$(grep -oE 'Depends: linux-image-6\.1\.[^ ]*-amd64(-unsigned)?$' <<<"$deps" | head -n 1 | sed 's/^Depends: //' || true)
        [ -n "$pkg" ] && break
        apt_update_once || die "cannot resolve linux-image-amd64 to a linux-image-6.1.*-amd64 package:"$'\n'"$deps"
    done
    echo "$pkg"
}

# needs_build OUTPUT INPUT...: true if OUTPUT is missing or older than any input.
needs_build() {
    local out=$1; shift
    [ -e "$out" ] || return 0
    local in
    for in in "$@"; do [ "$out" -ot "$in" ] && return 0; done
    return 1
}

# copy_out SRC NAME: copy into the cache folder unless an up-to-date copy is there.
copy_out() {
    local src=$1 dst="$ASSETS/$2"
    [ -f "$src" ] || die "missing $src"
    if needs_build "$dst" "$src"; then
        cp "$src" "$dst.tmp" && chmod 0644 "$dst.tmp" && mv -f "$dst.tmp" "$dst"
    fi
}

ensure_tool() {
    command -v "$1" >/dev/null 2>&1 || apt_install "$2"
    command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

# --- the /init of the test initramfs ---------------------------------------------------------
# Without options /init prints the marker and powers off. `terrarium.test=MODE` on the kernel
# command line adds a storage check before the marker, printed as lines the tests read:
#   disks   every IDE disk (sd*): "DISK-READ <h:c:t:l> <md5 of its first MiB>", then writes
#           PATTERN_BYTES of "TERRARIUM-PATTERN\n" repeated at 1 MiB, drops the caches, reads it
#           back: "DISK-WROTE <h:c:t:l> <md5>" (the disk's SCSI address: IDE channel = host,
#           master/slave = target); the floppy fd0: "FLOPPY-READ fd0 <md5 of the disk>"
#   cdrom   "PCI-DEVICES <the PCI functions Linux registered>", then mounts the CD (sr0):
#           "CDROM-FILES <names under /boot>"
#   readbench  reads all of sda sequentially between "READBENCH-START" and "READBENCH-END"
#   desktop loads bochs-drm (framebuffer console on the standard VGA) and psmouse, prints
#           "MOUSE-READY" and then the first two packets read from /dev/input/mice as
#           "MOUSE <hex bytes>", prints the marker and "SHELL-READY", then runs a shell on the
#           console's keyboard (tty0) until something types `poweroff -f`
PATTERN_BYTES=4194304
write_init() {
    cat >"$1" <<EOF
#!/bin/sh
# Terrarium test initramfs: show that the kernel reached user space, then power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# say TEXT: to the console, and to the first serial port unless that is the console already
# (flag C in /proc/consoles), so each line appears there exactly once.
say() {
    echo "\$*" > /dev/console
    if [ -c /dev/ttyS0 ] && ! grep -q '^ttyS0 .*(.C' /proc/consoles 2>/dev/null; then
        echo "\$*" > /dev/ttyS0 2>/dev/null
    fi
}
load_modules() {
    for m in \$(cat /lib/modules/order); do insmod /lib/modules/\$m.ko 2>/dev/null; done
}
# wait_for PATH...: up to 60 s of guest time for the first of them to appear (drivers probe
# asynchronously, and a software CPU on a busy host may take many seconds for it).
wait_for() {
    i=0
    while [ \$i -lt 600 ]; do
        for p in "\$@"; do [ -e "\$p" ] && return 0; done
        sleep 0.1; i=\$((i + 1))
    done
    return 1
}
TEST=
for arg in \$(cat /proc/cmdline); do
    case "\$arg" in terrarium.test=*) TEST=\${arg#terrarium.test=} ;; esac
done
case "\$TEST" in
disks)
    load_modules
    wait_for /sys/block/sda
    sleep 1
    for d in /sys/block/sd*; do
        [ -e "\$d" ] || continue
        n=\${d##*/}
        # Name the disk by its SCSI address (host:channel:target:lun; libata makes each IDE
        # channel a host and master/slave targets 0/1): sdX names follow asynchronous probing.
        a=\$(basename "\$(readlink \$d/device)")
        say "DISK-READ \$a \$(dd if=/dev/\$n bs=64k count=16 2>/dev/null | md5sum | cut -d' ' -f1)"
        yes TERRARIUM-PATTERN | head -c $PATTERN_BYTES | dd of=/dev/\$n bs=64k seek=16 conv=fsync 2>/dev/null
        echo 3 > /proc/sys/vm/drop_caches
        say "DISK-WROTE \$a \$(dd if=/dev/\$n bs=64k skip=16 count=$((PATTERN_BYTES / 65536)) 2>/dev/null | md5sum | cut -d' ' -f1)"
    done
    if wait_for /dev/fd0; then
        say "FLOPPY-READ fd0 \$(dd if=/dev/fd0 bs=18432 count=80 2>/dev/null | md5sum | cut -d' ' -f1)"
    fi
    ;;
readbench)
    load_modules
    wait_for /sys/block/sda
    say READBENCH-START
    dd if=/dev/sda of=/dev/null bs=1M 2>/dev/null
    say READBENCH-END
    ;;
desktop)
    for m in \$(cat /lib/modules/display-order); do insmod /lib/modules/\$m.ko 2>/dev/null; done
    wait_for /dev/fb0
    if wait_for /dev/input/mouse0; then
        (
            exec 3</dev/input/mice
            say MOUSE-READY
            say "MOUSE \$(dd bs=3 count=2 <&3 2>/dev/null | od -An -tx1 | tr -s ' \n' '  ')"
        ) &
    fi
    say $MARKER
    say SHELL-READY
    exec sh </dev/tty0 >/dev/tty0 2>&1
    ;;
cdrom)
    say "PCI-DEVICES \$(ls /sys/bus/pci/devices | tr '\n' ' ')"
    load_modules
    wait_for /dev/sr0
    mount -t iso9660 -o ro /dev/sr0 /mnt && say "CDROM-FILES \$(ls /mnt/boot | tr '\n' ' ')"
    ;;
esac
say $MARKER
poweroff -f
while true; do sleep 1000; done
EOF
}

# --- a deterministic newc cpio (with device nodes, no root needed), gzip'd ---------------------
# usage: mkcpio OUT BUSYBOX INIT APPLETS [MODULES]  (APPLETS: a file with busybox's applet names,
# one a line; MODULES: a folder whose files go to /lib/modules)
mkcpio() {
    python3 - "$@" <<'PY'
import gzip, io, os, sys

out, busybox, init, applet_list = sys.argv[1:5]
modules = sys.argv[5] if len(sys.argv) > 5 else None
with open(applet_list) as f:
    applets = sorted({a.strip() for a in f if a.strip() and "/" not in a})
MTIME = int(os.environ["EPOCH"])
entries = []  # (name, mode, data, rdev_major, rdev_minor)
for d in ["bin", "dev", "etc", "mnt", "proc", "root", "run", "sbin", "sys", "tmp", "usr", "usr/bin", "usr/sbin"]:
    entries.append((d, 0o040755 if d != "tmp" else 0o041777, b"", 0, 0))
entries.append(("dev/console", 0o020600, b"", 5, 1))
entries.append(("dev/null", 0o020666, b"", 1, 3))
with open(busybox, "rb") as f:
    entries.append(("bin/busybox", 0o100755, f.read(), 0, 0))
for a in applets:
    if a != "busybox":
        entries.append(("bin/" + a, 0o120777, b"busybox", 0, 0))
with open(init, "rb") as f:
    entries.append(("init", 0o100755, f.read(), 0, 0))
if modules:
    entries.append(("lib", 0o040755, b"", 0, 0))
    entries.append(("lib/modules", 0o040755, b"", 0, 0))
    for name in sorted(os.listdir(modules)):
        with open(os.path.join(modules, name), "rb") as f:
            entries.append(("lib/modules/" + name, 0o100644, f.read(), 0, 0))

buf = io.BytesIO()
def pad4():
    buf.write(b"\0" * (-buf.tell() % 4))
for ino, (name, mode, data, rmaj, rmin) in enumerate(entries + [("TRAILER!!!", 0, b"", 0, 0)], 1):
    nameb = name.encode() + b"\0"
    nlink = 2 if mode & 0o170000 == 0o040000 else 1
    hdr = "070701" + "".join("%08X" % v for v in (
        ino if name != "TRAILER!!!" else 0, mode, 0, 0, nlink, MTIME if mode else 0,
        len(data), 0, 0, rmaj, rmin, len(nameb), 0))
    buf.write(hdr.encode()); buf.write(nameb); pad4()
    buf.write(data); pad4()
raw = buf.getvalue()
with open(out, "wb") as f:
    with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
PY
}

# =================================================================================================
mkdir -p "$ASSETS" "$PKGS"
exec 9>"$ASSETS/.lock"
flock 9

START=$(date +%s.%N)

# --- packages ---------------------------------------------------------------------------------
# Tools the tests use beside the assets: qemu-img checks and compares the disk images.
ensure_tool qemu-img qemu-utils
KPKG=$(kernel_pkg)
fetch_pkg seabios
fetch_pkg busybox-static
fetch_pkg isolinux
fetch_pkg syslinux-common ./usr/lib/syslinux/modules/bios
fetch_pkg memtest86+
fetch_pkg "$KPKG" ./boot   # the image; of the ~400 MB of modules only the storage ones below
# Storage drivers for the initramfs's terrarium.test modes, in load order (each after what it needs).
MODULES=(scsi_common scsi_mod libata ata_piix crc64 crc64_rocksoft_generic crc64-rocksoft
    crct10dif_common crct10dif_generic crc-t10dif t10-pi sd_mod cdrom sr_mod isofs floppy)
# Display and mouse drivers for terrarium.test=desktop, in load order.
DISPLAY_MODULES=(drm drm_kms_helper ttm drm_ttm_helper drm_vram_helper bochs psmouse)
KMODS="$PKGS/$KPKG-test-modules"
# (tar's wildcards match "/" too, so ./lib/modules/*/NAME.ko finds NAME.ko at any depth.)
KMOD_MEMBERS=()
for m in "${MODULES[@]}" "${DISPLAY_MODULES[@]}"; do KMOD_MEMBERS+=("./lib/modules/*/$m.ko"); done
deb_fetch "$KPKG" "$KMODS" "$KMODS/.terrarium-pkg" --wildcards "${KMOD_MEMBERS[@]}"

# --- SeaBIOS ----------------------------------------------------------------------------------
SB="$PKGS/seabios/usr/share/seabios"
copy_out "$SB/bios.bin" bios.bin
copy_out "$SB/bios-256k.bin" bios-256k.bin
copy_out "$SB/vgabios-stdvga.bin" vgabios-stdvga.bin

# --- kernel -----------------------------------------------------------------------------------
KBOOT="$PKGS/$KPKG/boot"
KIMG=$(find "$KBOOT" -maxdepth 1 -name 'vmlinuz-6.1.*' | sort -V | tail -n 1)
KCONFIG=$(find "$KBOOT" -maxdepth 1 -name 'config-6.1.*' | sort -V | tail -n 1)
if [ -z "$KIMG" ] || [ -z "$KCONFIG" ]; then die "no vmlinuz-6.1.*/config-6.1.* in $KPKG"; fi
# The initramfs has no modules, so everything it relies on must be built in.
for opt in BLK_DEV_INITRD RD_GZIP DEVTMPFS PROC_FS SYSFS BINFMT_SCRIPT TTY VT_CONSOLE \
    SERIAL_8250 SERIAL_8250_CONSOLE; do
    grep -qx "CONFIG_$opt=y" "$KCONFIG" || die "$KPKG: CONFIG_$opt is not built in (=y)"
done
copy_out "$KIMG" vmlinuz
# The 8×16 font Linux's framebuffer console draws with (font_vga_8x16, 256 glyphs of 16 bytes),
# taken from the kernel image, so that tests can read the console back from a screenshot.
if needs_build "$ASSETS/linux-font-8x16.bin" "$ASSETS/vmlinuz" "$SELF"; then
    python3 - "$ASSETS/vmlinuz" "$ASSETS/linux-font-8x16.bin.tmp" <<'PY' || die "no 8x16 font in $KIMG"
import lzma, struct, sys
image = open(sys.argv[1], "rb").read()
start = image.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit("vmlinuz: no xz payload")
kernel = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(image[start:])
# struct font_data: {0, 0, FONTDATAMAX = 4096, 0}, then glyph 0 (blank) and glyph 1 (smiley).
header = struct.pack("<iiii", 0, 0, 4096, 0) + bytes(16) + bytes.fromhex("00007e81a58181bd9981817e")
at = kernel.find(header)
if at < 0:
    sys.exit("vmlinux: font_vga_8x16 not found")
open(sys.argv[2], "wb").write(kernel[at + 16:at + 16 + 4096])
PY
    mv -f "$ASSETS/linux-font-8x16.bin.tmp" "$ASSETS/linux-font-8x16.bin"
fi

# --- memtest86+ -------------------------------------------------------------------------------
MEMTEST=()
for f in "$PKGS/memtest86+/boot"/memtest86+*; do
    [ -f "$f" ] || continue
    copy_out "$f" "$(basename "$f")"
    MEMTEST+=("$(basename "$f")")
done
[ -f "$ASSETS/memtest86+x64.bin" ] || die "memtest86+ has no memtest86+x64.bin"

# --- initramfs --------------------------------------------------------------------------------
BUSYBOX="$PKGS/busybox-static/bin/busybox"
if needs_build "$ASSETS/initramfs.cpio.gz" "$BUSYBOX" "$KMODS/.terrarium-pkg" "$SELF"; then
    log "building initramfs.cpio.gz"
    tmp=$(mktemp -d "$ASSETS/.initramfs.XXXXXX")
    CLEANUP+=("$tmp")
    write_init "$tmp/init"
    "$BUSYBOX" --list >"$tmp/applets" || die "cannot run $BUSYBOX --list"
    for a in sh mount echo poweroff sleep cat dd; do
        grep -qx "$a" "$tmp/applets" || die "busybox lacks applet $a"
    done
    for a in insmod md5sum yes head cut tr ls grep readlink basename od; do
        grep -qx "$a" "$tmp/applets" || die "busybox lacks applet $a"
    done
    mkdir "$tmp/modules"
    for m in "${MODULES[@]}" "${DISPLAY_MODULES[@]}"; do
        ko=$(find "$KMODS/lib/modules" -name "$m.ko" | head -n 1)
        [ -n "$ko" ] || die "$KPKG has no $m.ko"
        cp "$ko" "$tmp/modules/"
    done
    printf '%s\n' "${MODULES[@]}" >"$tmp/modules/order"
    printf '%s\n' "${DISPLAY_MODULES[@]}" >"$tmp/modules/display-order"
    mkcpio "$tmp/initramfs.cpio.gz" "$BUSYBOX" "$tmp/init" "$tmp/applets" "$tmp/modules"
    mv -f "$tmp/initramfs.cpio.gz" "$ASSETS/initramfs.cpio.gz"
    rm -rf "$tmp"
fi

# --- isolinux CD ------------------------------------------------------------------------------
ISOLINUX_BIN="$PKGS/isolinux/usr/lib/ISOLINUX/isolinux.bin"
ISOHDPFX="$PKGS/isolinux/usr/lib/ISOLINUX/isohdpfx.bin"
LDLINUX="$PKGS/syslinux-common/usr/lib/syslinux/modules/bios/ldlinux.c32"
# build_iso OUT VOLUME_ID SAY APPEND: an isolinux El Torito CD (also bootable as a disk) with
# the kernel and initramfs, booting APPEND after a one-second prompt.
build_iso() {
    local out=$1 volid=$2 say=$3 append=$4
    ensure_tool xorriso xorriso
    log "building $(basename "$out")"
    tmp=$(mktemp -d "$ASSETS/.iso.XXXXXX")
    CLEANUP+=("$tmp")
    mkdir -p "$tmp/root/isolinux" "$tmp/root/boot"
    cp "$ISOLINUX_BIN" "$LDLINUX" "$tmp/root/isolinux/"
    cp "$ASSETS/vmlinuz" "$tmp/root/boot/vmlinuz"
    cp "$ASSETS/initramfs.cpio.gz" "$tmp/root/boot/initrd.gz"
    cat >"$tmp/root/isolinux/isolinux.cfg" <<EOF
serial 0 115200
# isolinux shows "say" lines on the screen only; serial gets the banner and the boot: prompt.
say $say
prompt 1
timeout 10
default linux

label linux
  kernel /boot/vmlinuz
  append initrd=/boot/initrd.gz $append
EOF
    find "$tmp/root" -exec touch -h -d "@$EPOCH" {} +
    out_log=$(SOURCE_DATE_EPOCH=$EPOCH xorriso -as mkisofs -quiet -o "$tmp/image.iso" \
        -V "$volid" -r -J \
        -isohybrid-mbr "$ISOHDPFX" \
        -b isolinux/isolinux.bin -c isolinux/boot.cat \
        -no-emul-boot -boot-load-size 4 -boot-info-table \
        "$tmp/root" 2>&1) || die "xorriso failed:"$'\n'"$out_log"
    mv -f "$tmp/image.iso" "$out"
    rm -rf "$tmp"
}
ISO_INPUTS=("$ASSETS/vmlinuz" "$ASSETS/initramfs.cpio.gz" "$ISOLINUX_BIN" "$LDLINUX" "$SELF")
if needs_build "$ASSETS/linux.iso" "${ISO_INPUTS[@]}"; then
    build_iso "$ASSETS/linux.iso" TERRARIUM_TEST "Terrarium test CD: boots Linux in 1 s" \
        "console=ttyS0 console=tty0 cryptomgr.notests terrarium.test=cdrom"
fi
# The desktop app's demo VM: Linux with a shell on the VGA console, keyboard and mouse.
if needs_build "$ASSETS/demo.iso" "${ISO_INPUTS[@]}"; then
    build_iso "$ASSETS/demo.iso" TERRARIUM_DEMO "Terrarium demo: Linux with a busybox shell" \
        "console=ttyS0 console=tty0 cryptomgr.notests terrarium.test=desktop"
fi

# --- syslinux hard disk and floppy ------------------------------------------------------------
# Built without root: a FAT file system made with mkfs.fat, filled with mtools, syslinux installed
# by its mtools-based installer; the disk gets syslinux's MBR and an sfdisk partition table.
MBR_BIN=/usr/lib/SYSLINUX/mbr.bin
HDD_MIB=32
PART_START=2048   # sectors: the partition begins at 1 MiB
if needs_build "$ASSETS/linux-hdd.img" "$ASSETS/vmlinuz" "$ASSETS/initramfs.cpio.gz" "$LDLINUX" \
    "$SELF"; then
    ensure_tool syslinux syslinux
    ensure_tool mcopy mtools
    ensure_tool mkfs.fat dosfstools
    ensure_tool sfdisk fdisk
    [ -f "$MBR_BIN" ] || die "syslinux installed no $MBR_BIN"
    log "building linux-hdd.img"
    tmp=$(mktemp -d "$ASSETS/.hdd.XXXXXX")
    CLEANUP+=("$tmp")
    part_sectors=$((HDD_MIB * 2048 - PART_START))
    mkfs.fat -F 16 -n TERRARIUM -i 7e5a1100 -h "$PART_START" -C "$tmp/part.img" \
        $((part_sectors / 2)) >/dev/null || die "mkfs.fat failed"
    cat >"$tmp/syslinux.cfg" <<'EOF'
serial 0 115200
say Terrarium test disk: boots Linux in 1 s
prompt 1
timeout 10
default linux

label linux
  kernel /vmlinuz
  append initrd=/initrd.gz console=ttyS0 cryptomgr.notests
EOF
    export MTOOLS_SKIP_CHECK=1
    mcopy -i "$tmp/part.img" "$ASSETS/vmlinuz" ::/vmlinuz
    mcopy -i "$tmp/part.img" "$ASSETS/initramfs.cpio.gz" ::/initrd.gz
    mcopy -i "$tmp/part.img" "$LDLINUX" "$tmp/syslinux.cfg" ::/
    syslinux --install "$tmp/part.img" || die "syslinux --install failed"
    truncate -s $((HDD_MIB * 1024 * 1024)) "$tmp/disk.img"
    echo "label: dos
label-id: 0x7e5a1100
start=$PART_START, type=6, bootable" | sfdisk -q "$tmp/disk.img" || die "sfdisk failed"
    dd if="$MBR_BIN" of="$tmp/disk.img" bs=440 count=1 conv=notrunc status=none
    dd if="$tmp/part.img" of="$tmp/disk.img" bs=512 seek="$PART_START" conv=notrunc status=none
    mv -f "$tmp/disk.img" "$ASSETS/linux-hdd.img"
    rm -rf "$tmp"
fi

MEMTEST_BIN="$ASSETS/memtest86+x64.bin"
if needs_build "$ASSETS/memtest-floppy.img" "$MEMTEST_BIN" "$LDLINUX" "$SELF"; then
    ensure_tool syslinux syslinux
    ensure_tool mcopy mtools
    ensure_tool mkfs.fat dosfstools
    log "building memtest-floppy.img"
    tmp=$(mktemp -d "$ASSETS/.floppy.XXXXXX")
    CLEANUP+=("$tmp")
    mkfs.fat -F 12 -n MEMTEST -i 7e5a1200 -C "$tmp/floppy.img" 1440 >/dev/null ||
        die "mkfs.fat failed"
    cat >"$tmp/syslinux.cfg" <<'EOF'
serial 0 115200
default memtest
timeout 1

label memtest
  linux /memtest.bin
  append console=ttyS0,115200
EOF
    export MTOOLS_SKIP_CHECK=1
    mcopy -i "$tmp/floppy.img" "$MEMTEST_BIN" ::/memtest.bin
    mcopy -i "$tmp/floppy.img" "$LDLINUX" "$tmp/syslinux.cfg" ::/
    syslinux --install "$tmp/floppy.img" || die "syslinux --install failed"
    mv -f "$tmp/floppy.img" "$ASSETS/memtest-floppy.img"
    rm -rf "$tmp"
fi

# --- manifest ---------------------------------------------------------------------------------
SEABIOS_ID=$(pkg_id seabios)
KERNEL_ID=$(pkg_id "$KPKG")
BUSYBOX_ID=$(pkg_id busybox-static)
MEMTEST_ID=$(pkg_id memtest86+)
{
    echo "# Terrarium test assets: file, sha256, size, source package(s) and version(s)"
    entry() {
        local f=$1; shift
        local IFS=,
        printf '%s\t%s\t%s\t%s\n' "$f" "$(sha256sum "$ASSETS/$f" | cut -d' ' -f1)" \
            "$(stat -c %s "$ASSETS/$f")" "$*"
    }
    entry bios.bin "$SEABIOS_ID"
    entry bios-256k.bin "$SEABIOS_ID"
    entry vgabios-stdvga.bin "$SEABIOS_ID"
    entry vmlinuz "$KERNEL_ID"
    entry linux-font-8x16.bin "$KERNEL_ID"
    entry initramfs.cpio.gz "$BUSYBOX_ID"
    entry linux.iso "$KERNEL_ID" "$BUSYBOX_ID" "$(pkg_id isolinux)" "$(pkg_id syslinux-common)"
    entry demo.iso "$KERNEL_ID" "$BUSYBOX_ID" "$(pkg_id isolinux)" "$(pkg_id syslinux-common)"
    for f in "${MEMTEST[@]}"; do entry "$f" "$MEMTEST_ID"; done
    entry linux-hdd.img "$KERNEL_ID" "$BUSYBOX_ID" "$(pkg_id syslinux-common)"
    entry memtest-floppy.img "$MEMTEST_ID" "$(pkg_id syslinux-common)"
} >"$ASSETS/manifest.txt.tmp"
CLEANUP+=("$ASSETS/manifest.txt.tmp")
if cmp -s "$ASSETS/manifest.txt.tmp" "$ASSETS/manifest.txt" 2>/dev/null; then
    rm -f "$ASSETS/manifest.txt.tmp"
else
    mv -f "$ASSETS/manifest.txt.tmp" "$ASSETS/manifest.txt"
fi

log "assets ready in $ASSETS ($(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN{printf "%.2f", e-s}') s)"
