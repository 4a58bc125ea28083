#!/usr/bin/env bash
# Display-side CPU cost of the desktop app, side by side with QEMU 7.2's SDL window, under Xvfb
# with Mesa's software OpenGL (llvmpipe), both on the software CPU (Terrarium emu, QEMU TCG).
#
#   bench/gui-frame.sh [SECONDS]      (default 20 s per run after 5 s of warm-up)
#
# The guest is bench/guests/fbfill.S on a floppy: it sets 1024x768x32 through the Bochs VBE
# registers and repaints the whole screen in a new colour as fast as it can ("full"), or once and
# then halts ("idle"). Measured: CPU time of the display side — the UI thread, Mesa's llvmpipe
# threads, and for Terrarium also the "timers" thread, where the VGA renders into the
# framebuffer (QEMU renders in its main thread); not the vCPU threads — per second of wall time,
# and for
# Terrarium also per frame drawn and the texture uploads it made. QEMU redraws at its own 30 Hz
# display refresh; Terrarium follows the guest at up to 60 Hz and draws nothing when the screen
# is unchanged.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${1:-20}
WARM=5
ASSETS=${TERRARIUM_ASSETS:-$REPO/.cache/assets}
log() { echo "gui-frame: $*" >&2; }
die() { log "$*"; exit 1; }

command -v Xvfb >/dev/null || die "Xvfb is missing: run scripts/gui-screenshot.sh once (it installs it)"
"$REPO/scripts/fetch-assets.sh" >/dev/null
"$REPO/scripts/fetch-qemu.sh" >/dev/null
# shellcheck source=/dev/null
. "$REPO/scripts/qemu-env.sh"
# QEMU's SDL display module comes with qemu-system-gui, at the same version as the emulator.
if [ ! -e "$QEMU_MODULE_DIR/ui-sdl.so" ]; then
    LOG_PREFIX=gui-frame
    # shellcheck source=/dev/null
    . "$REPO/scripts/deb-lib.sh"
    # Same source version as the emulator (binNMU suffixes may differ between the two).
    ver=$(cut -f2 "$QEMU_ROOT/.terrarium-pkgs/qemu-system-x86")
    gui_ver=$(apt-cache madison qemu-system-gui | awk -F'|' '{gsub(/ /, "", $2); print $2}' |
        grep -F -x -e "$ver" -e "${ver%+b*}" | head -n 1)
    [ -n "$gui_ver" ] || die "apt knows no qemu-system-gui $ver"
    deb_fetch "qemu-system-gui=$gui_ver" "$QEMU_ROOT" "$QEMU_ROOT/.terrarium-pkgs/qemu-system-gui"
fi
if ldd "$QEMU_MODULE_DIR/ui-sdl.so" "$QEMU_MODULE_DIR/ui-opengl.so" | grep -q "not found"; then
    log "installing libsdl2-2.0-0 and libepoxy0 for QEMU's SDL window"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libsdl2-2.0-0 libepoxy0 >/dev/null
fi
cargo build -q --release -p app --manifest-path "$REPO/Cargo.toml"
BIN="$REPO/target/release/terrarium"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for kind in full idle; do
    defsym=()
    [ "$kind" = idle ] && defsym=(--defsym ONCE=1)
    as --32 "${defsym[@]}" -o "$WORK/$kind.o" "$REPO/bench/guests/fbfill.S"
    ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o "$WORK/$kind.bin" "$WORK/$kind.o"
    truncate -s 1474560 "$WORK/$kind.bin"
    mv "$WORK/$kind.bin" "$WORK/$kind.img"
done

DISPLAY_NUM=:$((80 + RANDOM % 9))
Xvfb "$DISPLAY_NUM" -screen 0 1600x1200x24 -nolisten tcp >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    [ -e "/tmp/.X11-unix/X${DISPLAY_NUM#:}" ] && break
    sleep 0.1
done
export DISPLAY=$DISPLAY_NUM LIBGL_ALWAYS_SOFTWARE=1

# display_cpu PID [EXTRA_THREAD]: CPU seconds of the main (UI) thread, llvmpipe's threads and
# the thread named EXTRA_THREAD.
display_cpu() {
    local pid=$1 extra=${2:-} tck total=0
    tck=$(getconf CLK_TCK)
    for t in /proc/"$pid"/task/*; do
        local tid=${t##*/} comm stat
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        if [ "$tid" = "$pid" ] || [[ "$comm" == llvmpipe* ]] || [ "$comm" = "$extra" ]; then
            stat=$(cat "$t/stat" 2>/dev/null) || continue
            stat=${stat##*) }
            # utime and stime are fields 14 and 15 of stat, 12 and 13 after "pid (comm) ".
            total=$((total + $(awk '{print $12 + $13}' <<<"$stat")))
        fi
    done
    awk -v t="$total" -v h="$tck" 'BEGIN { printf "%.3f", t / h }'
}

stat_value() { awk -v k="$2" '$1 == k { print $2 }' "$1" 2>/dev/null || echo 0; }
# Frames drawn in all windows: the library's and the consoles'.
all_frames() { echo $(($(stat_value "$1" frames) + $(stat_value "$1" console_frames))); }

terrarium_run() {
    local kind=$1 home="$WORK/home-$kind"
    mkdir -p "$home/vms/fbfill"
    touch "$home/vms/.demo-offered"
    cat >"$home/vms/fbfill/vm.toml" <<EOF
format_version = 1
name = "fbfill"
os = "other"
memory_mib = 32
cpus = 1
backend = "emu"
boot = "floppy"
floppy = "$WORK/$kind.img"
EOF
    TERRARIUM_HOME="$home" TERRARIUM_FIRMWARE="$ASSETS/bios.bin" \
        "$BIN" gui --start fbfill --stats "$WORK/stats-$kind" >"$WORK/app-$kind.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    sleep "$WARM"
    local c0 f0 u0 p0 c1 f1 u1 p1
    c0=$(display_cpu "$pid" timers); f0=$(all_frames "$WORK/stats-$kind")
    u0=$(stat_value "$WORK/stats-$kind" uploads); p0=$(stat_value "$WORK/stats-$kind" uploaded_pixels)
    sleep "$SECS"
    c1=$(display_cpu "$pid" timers); f1=$(all_frames "$WORK/stats-$kind")
    u1=$(stat_value "$WORK/stats-$kind" uploads); p1=$(stat_value "$WORK/stats-$kind" uploaded_pixels)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk -v c="$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" -v f=$((f1 - f0)) \
        -v u=$((u1 - u0)) -v p=$((p1 - p0)) -v s="$SECS" -v k="$kind" 'BEGIN {
        printf "terrarium %-4s  display CPU %5.1f %%  frames/s %5.1f  CPU/frame %6.2f ms  uploads/s %6.1f  Mpixel/s %6.1f\n",
            k, 100 * c / s, f / s, (f > 0 ? 1000 * c / f : 0), u / s, p / s / 1e6 }'
    echo "$(awk -v a="$c0" -v b="$c1" -v s="$SECS" 'BEGIN{print (b-a)/s}')"
}

qemu_run() {
    local kind=$1
    "$QEMU_BIN" -M pc -accel tcg -m 32 -nic none -L "$QEMU_SEABIOS" -L "$QEMU_DATA" \
        -vga std -display sdl -drive "if=floppy,format=raw,file=$WORK/$kind.img" -boot a \
        >"$WORK/qemu-$kind.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    sleep "$WARM"
    local c0 c1
    c0=$(display_cpu "$pid")
    sleep "$SECS"
    c1=$(display_cpu "$pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk -v a="$c0" -v b="$c1" -v s="$SECS" -v k="$kind" 'BEGIN {
        printf "qemu      %-4s  display CPU %5.1f %%  (UI/main-loop thread + llvmpipe)\n", k, 100 * (b - a) / s }'
    echo "$(awk -v a="$c0" -v b="$c1" -v s="$SECS" 'BEGIN{print (b-a)/s}')"
}

for kind in full idle; do
    t_out=$(terrarium_run "$kind")
    q_out=$(qemu_run "$kind")
    head -n 1 <<<"$t_out"
    head -n 1 <<<"$q_out"
    t=$(tail -n 1 <<<"$t_out"); q=$(tail -n 1 <<<"$q_out")
    awk -v t="$t" -v q="$q" -v k="$kind" 'BEGIN {
        if (q > 0) printf "ratio     %-4s  display CPU Terrarium/QEMU = %.2f\n", k, t / q }'
done
