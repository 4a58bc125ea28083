#!/usr/bin/env bash
# Runs the desktop app in a real window under Xvfb with the demo VM running on the software CPU,
# takes a screenshot of the whole screen, saves it as PNG and checks that it is not blank.
#
#   scripts/gui-screenshot.sh [OUT.png] [SECONDS]
#
# OUT defaults to target/tmp/screens/gui-desktop.png; SECONDS (default 45) is how long the VM
# runs before the screenshot. Installs Xvfb, xwd and Mesa's software OpenGL when missing.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$REPO/target/tmp/screens/gui-desktop.png}
WAIT=${2:-45}
ASSETS=${TERRARIUM_ASSETS:-$REPO/.cache/assets}
log() { echo "gui-screenshot: $*" >&2; }
die() { log "$*"; exit 1; }

need=()
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xwd >/dev/null || need+=(x11-apps)
command -v xdotool >/dev/null || need+=(xdotool)
[ -e /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so ] || need+=(libgl1-mesa-dri)
[ -e /usr/lib/x86_64-linux-gnu/libEGL.so.1 ] || need+=(libegl1)
[ -e /usr/lib/x86_64-linux-gnu/libxkbcommon-x11.so.0 ] || need+=(libxkbcommon-x11-0)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${need[@]}" >/dev/null; } ||
        die "cannot install ${need[*]}"
fi

"$REPO/scripts/fetch-assets.sh"
cargo build -q -p app --manifest-path "$REPO/Cargo.toml"
BIN="$REPO/target/debug/terrarium"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A library with one VM: the demo CD on the software CPU.
VM="$WORK/home/vms/Demo Linux"
mkdir -p "$VM"
touch "$WORK/home/vms/.demo-offered"
cat >"$VM/vm.toml" <<EOF
format_version = 1
name = "Demo Linux"
os = "linux"
os_name = "Linux with a busybox shell"
memory_mib = 256
cpus = 1
backend = "emu"
boot = "cd"
cdrom = "$ASSETS/demo.iso"
EOF

DISPLAY_NUM=:$((90 + RANDOM % 9))
Xvfb "$DISPLAY_NUM" -screen 0 1280x1024x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    [ -e "/tmp/.X11-unix/X${DISPLAY_NUM#:}" ] && break
    sleep 0.1
done

log "starting the app with the demo VM for $WAIT s"
DISPLAY=$DISPLAY_NUM TERRARIUM_HOME="$WORK/home" TERRARIUM_FIRMWARE="$ASSETS/bios.bin" \
    LIBGL_ALWAYS_SOFTWARE=1 "$BIN" gui --start "Demo Linux" >"$WORK/app.log" 2>&1 &
APP=$!
PIDS+=("$APP")
sleep "$WAIT"
kill -0 "$APP" 2>/dev/null || { cat "$WORK/app.log" >&2; die "the app exited early"; }

# Xvfb has no window manager: raise the console above the library as a click on it would.
DISPLAY=$DISPLAY_NUM xdotool search --name "Demo Linux" windowraise >/dev/null 2>&1 || true
sleep 0.5
xwd -root -silent -display "$DISPLAY_NUM" >"$WORK/screen.xwd"
mkdir -p "$(dirname "$OUT")"
python3 - "$WORK/screen.xwd" "$OUT" <<'PYEOF'
import struct, sys, zlib

src, out = sys.argv[1:3]
data = open(src, "rb").read()
h = struct.unpack(">25I", data[:100])
header_size, _, fmt, depth, width, height = h[:6]
byte_order, bpp, bytes_per_line = h[7], h[11], h[12]
red_mask, green_mask, blue_mask, ncolors = h[14], h[15], h[16], h[19]
if fmt != 2 or bpp not in (24, 32):
    sys.exit(f"unexpected XWD format {fmt} with {bpp} bits per pixel")
bpp_bytes = bpp // 8
pixels = data[header_size + 12 * ncolors:]

def shift(mask):
    return (mask & -mask).bit_length() - 1

rs, gs, bs = shift(red_mask), shift(green_mask), shift(blue_mask)
order = "little" if byte_order == 0 else "big"
rows, colours, lit = [], set(), 0
for y in range(height):
    line = pixels[y * bytes_per_line : y * bytes_per_line + width * bpp_bytes]
    vals = [int.from_bytes(line[i : i + bpp_bytes], order) for i in range(0, len(line), bpp_bytes)]
    row = bytearray(b"\0")
    for v in vals:
        r, g, b = (v >> rs) & 255, (v >> gs) & 255, (v >> bs) & 255
        row += bytes((r, g, b))
        if y % 4 == 0:
            colours.add((r, g, b))
            lit += (r, g, b) != (0, 0, 0)
    rows.append(bytes(row))

def chunk(kind, body):
    c = kind + body
    return struct.pack(">I", len(body)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)

png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) + chunk(b"IEND", b"")
open(out + ".tmp", "wb").write(png)
import os
os.replace(out + ".tmp", out)
sampled = width * ((height + 3) // 4)
print(f"{width}x{height}, {len(colours)} colours, {100 * lit / sampled:.1f}% not black")
if len(colours) < 16 or lit < sampled // 10:
    sys.exit("the screen is blank")
PYEOF
log "saved $OUT"
