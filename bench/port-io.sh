#!/usr/bin/env bash
# Port-I/O exit round trip, Terrarium vs QEMU 7.2, both on KVM.
#
#   bench/port-io.sh [ROUNDS] [EXITS]      (defaults: 5 rounds, 20000 exits)
#
# Both peers boot the same 64 KiB firmware image: its reset vector writes 'S' to the debug port
# 0x402, executes EXITS `out dx, al` to port 0x80 in a loop, writes 'D' and halts. The time from
# 'S' to 'D' in the debug-port file, divided by EXITS, is the cost of one port-I/O exit handled
# in user space (plus the two loop instructions, identical for both). Rounds alternate which peer
# goes first; medians and the median ratio Terrarium/QEMU are printed. Nothing asserts on time.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-5}
EXITS=${2:-20000}
"$REPO/scripts/fetch-qemu.sh" >/dev/null
# shellcheck source=scripts/qemu-env.sh
. "$REPO/scripts/qemu-env.sh"
TERRARIUM="${TERRARIUM:-$REPO/target/release/terrarium}"
[ -x "$TERRARIUM" ] || (cd "$REPO" && cargo build --release -p app)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

export TERRARIUM QEMU_BIN QEMU_DATA QEMU_SEABIOS QEMU_IPXE QEMU_MODULE_DIR WORK ROUNDS EXITS
PYTHONPATH="$REPO/bench" python3 - <<'PY'
import os
from peers import alternate, between_markers, marker_firmware, qemu, qemu_debugcon, wait_for

work, exits, rounds = os.environ["WORK"], int(os.environ["EXITS"]), int(os.environ["ROUNDS"])
fw = os.path.join(work, "port-io.bin")
marker_firmware(fw, bytes([0x66, 0xB9]) + exits.to_bytes(4, "little") + bytes([  # mov ecx, EXITS
    0xBA, 0x80, 0x00,                                                         # mov dx, 0x80
    0xEE, 0x66, 0x49, 0x75, 0xFB]))                                           # 1: out; dec ecx; jnz 1b

def peer(name, cmd_for):
    log = os.path.join(work, f"{name}.log")
    return lambda: wait_for(cmd_for(log), log, between_markers(), limit=120) / exits * 1e6

alternate(rounds, {
    "terrarium": peer("terrarium", lambda log: [os.environ["TERRARIUM"], "run", "--backend", "kvm",
        "--memory", "128", "--firmware", fw, "--debugcon", log, "--timeout", "120"]),
    "qemu": peer("qemu", lambda log: qemu("kvm", "-m", "128", "-bios", fw, *qemu_debugcon(log), "-no-reboot")),
}, "us/exit")
PY
