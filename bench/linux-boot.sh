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
PYTHONPATH="$REPO/bench" python3 - <<'PY'
import os
from peers import alternate, qemu, wait_for

work, rounds, assets = os.environ["WORK"], int(os.environ["ROUNDS"]), os.environ["ASSETS"]
kernel, initrd = os.path.join(assets, "vmlinuz"), os.path.join(assets, "initramfs.cpio.gz")
append = "console=ttyS0"

def marker(data, now):
    return now if b"TERRARIUM-BOOT-OK" in data else None

def peer(name, cmd_for):
    log = os.path.join(work, f"{name}.log")
    return lambda: wait_for(cmd_for(log), log, marker, poll=0.005)

alternate(rounds, {
    "terrarium-emu": peer("terrarium", lambda log: [os.environ["TERRARIUM"], "run", "--backend", "emu",
        "--memory", "256", "--kernel", kernel, "--initrd", initrd, "--append", append,
        "--serial", log, "--timeout", "300"]),
    "qemu-tcg": peer("qemu", lambda log: qemu("tcg", "-m", "256", "-kernel", kernel, "-initrd", initrd,
        "-append", append, "-serial", f"file:{log}", "-no-reboot")),
}, "s")
PY
