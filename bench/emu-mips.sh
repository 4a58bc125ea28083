#!/usr/bin/env bash
# Guest instructions per second on a fixed loop: Terrarium's software CPU vs QEMU 7.2 TCG.
#
#   bench/emu-mips.sh [ROUNDS] [ITERATIONS]     (defaults: 5 rounds, 20,000,000 iterations)
#
# Both peers boot the same 64 KiB firmware: its reset vector writes 'S' to the debug port,
# runs ITERATIONS of `dec ecx; jnz` (2 instructions each) in real mode, writes 'D' and halts.
# The time between the two markers gives guest MIPS. Rounds alternate which peer goes first;
# medians and the ratio Terrarium/QEMU (of MIPS: above 1 means Terrarium is faster) are printed.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-5}
ITER=${2:-20000000}
"$REPO/scripts/fetch-qemu.sh" >/dev/null
# shellcheck source=scripts/qemu-env.sh
. "$REPO/scripts/qemu-env.sh"
TERRARIUM="${TERRARIUM:-$REPO/target/release/terrarium}"
[ -x "$TERRARIUM" ] || (cd "$REPO" && cargo build --release -p app)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export TERRARIUM QEMU_BIN QEMU_DATA QEMU_SEABIOS QEMU_IPXE QEMU_MODULE_DIR WORK ROUNDS ITER
PYTHONPATH="$REPO/bench" python3 - <<'PY'
import os
from peers import alternate, between_markers, marker_firmware, qemu, qemu_debugcon, wait_for

work, n, rounds = os.environ["WORK"], int(os.environ["ITER"]), int(os.environ["ROUNDS"])
fw = os.path.join(work, "loop.bin")
marker_firmware(fw, bytes([0x66, 0xB9]) + n.to_bytes(4, "little") + bytes([  # mov ecx, ITER
    0x66, 0x49, 0x75, 0xFC]))                                                # 1: dec ecx; jnz 1b

def peer(name, cmd_for):
    log = os.path.join(work, f"{name}.log")
    return lambda: 2 * n / wait_for(cmd_for(log), log, between_markers()) / 1e6

alternate(rounds, {
    "terrarium-emu": peer("terrarium", lambda log: [os.environ["TERRARIUM"], "run", "--backend", "emu",
        "--memory", "128", "--firmware", fw, "--debugcon", log, "--timeout", "300"]),
    "qemu-tcg": peer("qemu", lambda log: qemu("tcg", "-m", "128", "-bios", fw, *qemu_debugcon(log), "-no-reboot")),
}, "MIPS")
PY
