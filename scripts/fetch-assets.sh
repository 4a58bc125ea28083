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
#   initramfs.cpio.gz                           busybox-static; /init prints TERRARIUM-BOOT-OK, powers off
#   linux.iso                                   isolinux El Torito CD with vmlinuz + initramfs
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
write_init() {
    cat >"$1" <<EOF
#!/bin/sh
# Terrarium test initramfs: show that the kernel reached user space, then power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo $MARKER > /dev/console
# /dev/console is the last console= device. Tell the first serial port too, unless it is that
# device already (flag C in /proc/consoles), so the marker appears there exactly once.
if [ -c /dev/ttyS0 ] && ! grep -q '^ttyS0 .*(.C' /proc/consoles 2>/dev/null; then
    echo $MARKER > /dev/ttyS0 2>/dev/null
fi
poweroff -f
while true; do sleep 1000; done
EOF
}

# --- a deterministic newc cpio (with device nodes, no root needed), gzip'd ---------------------
# usage: mkcpio OUT BUSYBOX INIT APPLETS  (APPLETS: a file with busybox's applet names, one a line)
mkcpio() {
    python3 - "$@" <<'PY'
import gzip, io, os, sys

out, busybox, init, applet_list = sys.argv[1:5]
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
KPKG=$(kernel_pkg)
fetch_pkg seabios
fetch_pkg busybox-static
fetch_pkg isolinux
fetch_pkg syslinux-common ./usr/lib/syslinux/modules/bios
fetch_pkg memtest86+
fetch_pkg "$KPKG" ./boot   # the image only: the modules are not needed and are ~400 MB unpacked

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
if needs_build "$ASSETS/initramfs.cpio.gz" "$BUSYBOX" "$SELF"; then
    log "building initramfs.cpio.gz"
    tmp=$(mktemp -d "$ASSETS/.initramfs.XXXXXX")
    CLEANUP+=("$tmp")
    write_init "$tmp/init"
    "$BUSYBOX" --list >"$tmp/applets" || die "cannot run $BUSYBOX --list"
    for a in sh mount echo poweroff sleep cat dd; do
        grep -qx "$a" "$tmp/applets" || die "busybox lacks applet $a"
    done
    mkcpio "$tmp/initramfs.cpio.gz" "$BUSYBOX" "$tmp/init" "$tmp/applets"
    mv -f "$tmp/initramfs.cpio.gz" "$ASSETS/initramfs.cpio.gz"
    rm -rf "$tmp"
fi

# --- isolinux CD ------------------------------------------------------------------------------
ISOLINUX_BIN="$PKGS/isolinux/usr/lib/ISOLINUX/isolinux.bin"
ISOHDPFX="$PKGS/isolinux/usr/lib/ISOLINUX/isohdpfx.bin"
LDLINUX="$PKGS/syslinux-common/usr/lib/syslinux/modules/bios/ldlinux.c32"
if needs_build "$ASSETS/linux.iso" "$ASSETS/vmlinuz" "$ASSETS/initramfs.cpio.gz" "$ISOLINUX_BIN" \
    "$LDLINUX" "$SELF"; then
    ensure_tool xorriso xorriso
    log "building linux.iso"
    tmp=$(mktemp -d "$ASSETS/.iso.XXXXXX")
    CLEANUP+=("$tmp")
    mkdir -p "$tmp/root/isolinux" "$tmp/root/boot"
    cp "$ISOLINUX_BIN" "$LDLINUX" "$tmp/root/isolinux/"
    cp "$ASSETS/vmlinuz" "$tmp/root/boot/vmlinuz"
    cp "$ASSETS/initramfs.cpio.gz" "$tmp/root/boot/initrd.gz"
    cat >"$tmp/root/isolinux/isolinux.cfg" <<'EOF'
serial 0 115200
# isolinux shows "say" lines on the screen only; serial gets the banner and the boot: prompt.
say Terrarium test CD: boots Linux in 1 s
prompt 1
timeout 10
default linux

label linux
  kernel /boot/vmlinuz
  append initrd=/boot/initrd.gz console=ttyS0 console=tty0
EOF
    find "$tmp/root" -exec touch -h -d "@$EPOCH" {} +
    out=$(SOURCE_DATE_EPOCH=$EPOCH xorriso -as mkisofs -quiet -o "$tmp/linux.iso" \
        -V TERRARIUM_TEST -r -J \
        -isohybrid-mbr "$ISOHDPFX" \
        -b isolinux/isolinux.bin -c isolinux/boot.cat \
        -no-emul-boot -boot-load-size 4 -boot-info-table \
        "$tmp/root" 2>&1) || die "xorriso failed:"$'\n'"$out"
    mv -f "$tmp/linux.iso" "$ASSETS/linux.iso"
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
    entry initramfs.cpio.gz "$BUSYBOX_ID"
    entry linux.iso "$KERNEL_ID" "$BUSYBOX_ID" "$(pkg_id isolinux)" "$(pkg_id syslinux-common)"
    for f in "${MEMTEST[@]}"; do entry "$f" "$MEMTEST_ID"; done
} >"$ASSETS/manifest.txt.tmp"
CLEANUP+=("$ASSETS/manifest.txt.tmp")
if cmp -s "$ASSETS/manifest.txt.tmp" "$ASSETS/manifest.txt" 2>/dev/null; then
    rm -f "$ASSETS/manifest.txt.tmp"
else
    mv -f "$ASSETS/manifest.txt.tmp" "$ASSETS/manifest.txt"
fi

log "assets ready in $ASSETS ($(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN{printf "%.2f", e-s}') s)"
