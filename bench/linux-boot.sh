#!/usr/bin/env bash
# Linux direct boot to the initramfs marker: Terrarium's software CPU vs QEMU 7.2 TCG.
#
#   bench/linux-boot.sh [ROUNDS]      (default 5)
#
# Both peers boot Debian's 6.1 bzImage with the project's busybox initramfs, 256 MiB, one CPU,
# `console=ttyS0`; the time from process start until the serial output shows
# TERRARIUM-BOOT-OK is measured (the guest then powers off). Rounds alternate which peer goes
# first; medians and the ratio Terrarium/QEMU (below 1: Terrarium is faster) are printed.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-5}
"$REPO/scripts/fetch-assets.sh" >/dev/null
"$REPO/scripts/fetch-qemu.sh" >/dev/null
# shellcheck source=scripts/qemu-env.sh
. "$REPO/scripts/qemu-env.sh"
ASSETS=${TERRARIUM_ASSETS:-$REPO/.cache/assets}
TERRARIUM="${TERRARIUM:-$REPO/target/release/terrarium}"
[ -x "$TERRARIUM" ] || (cd "$REPO" && cargo build --release -p app)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export TERRARIUM QEMU_BIN QEMU_DATA QEMU_SEABIOS QEMU_IPXE QEMU_MODULE_DIR WORK ROUNDS ASSETS
python3 - <<'PY'
import os, statistics, subprocess, time

work, rounds, assets = os.environ["WORK"], int(os.environ["ROUNDS"]), os.environ["ASSETS"]
kernel, initrd = os.path.join(assets, "vmlinuz"), os.path.join(assets, "initramfs.cpio.gz")
append = "console=ttyS0"
MARK = b"TERRARIUM-BOOT-OK"

def terrarium(log):
    return [os.environ["TERRARIUM"], "run", "--backend", "emu", "--memory", "256",
            "--kernel", kernel, "--initrd", initrd, "--append", append,
            "--serial", log, "--timeout", "300"]

def qemu(log):
    e = os.environ
    return [e["QEMU_BIN"], "-M", "pc", "-accel", "tcg", "-m", "256", "-nic", "none",
            "-display", "none", "-L", e["QEMU_DATA"], "-L", e["QEMU_SEABIOS"], "-L", e["QEMU_IPXE"],
            "-kernel", kernel, "-initrd", initrd, "-append", append,
            "-serial", f"file:{log}", "-no-reboot"]

def measure(cmd_for, name):
    log = os.path.join(work, f"{name}.log")
    open(log, "w").close()
    start = time.monotonic()
    p = subprocess.Popen(cmd_for(log), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < 300:
            if MARK in open(log, "rb").read():
                return time.monotonic() - start
            if p.poll() is not None:
                raise SystemExit(f"{name} exited ({p.returncode}) before the marker; log in {log}")
            time.sleep(0.005)
        raise SystemExit(f"{name}: no marker within 300 s")
    finally:
        p.kill()
        p.wait()

results = {"terrarium": [], "qemu": []}
for r in range(rounds):
    order = [("terrarium", terrarium), ("qemu", qemu)]
    if r % 2:
        order.reverse()
    for name, cmd in order:
        results[name].append(measure(cmd, name))
    print(f"round {r + 1}: terrarium {results['terrarium'][-1]:.2f} s, qemu tcg {results['qemu'][-1]:.2f} s")
t, q = statistics.median(results["terrarium"]), statistics.median(results["qemu"])
print(f"median: terrarium emu {t:.2f} s, qemu tcg {q:.2f} s, ratio terrarium/qemu {t / q:.2f}")
PY
