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
python3 - <<'PY'
import os, statistics, subprocess, time

work, n, rounds = os.environ["WORK"], int(os.environ["ITER"]), int(os.environ["ROUNDS"])
fw = os.path.join(work, "loop.bin")
rom = bytearray([0xF4]) * (64 << 10)
code = bytes([0xBA, 0x02, 0x04, 0xB0, ord("S"), 0xEE,              # mov dx,0x402; mov al,'S'; out
              0x66, 0xB9]) + n.to_bytes(4, "little") + bytes([      # mov ecx, ITER
              0x66, 0x49, 0x75, 0xFC,                               # 1: dec ecx; jnz 1b
              0xB0, ord("D"), 0xEE, 0xFA, 0xF4])                    # 'D'; cli; hlt
rom[0:len(code)] = code
rom[0xFFF0:0xFFF3] = bytes([0xE9]) + ((0 - 0xFFF3) & 0xFFFF).to_bytes(2, "little")
open(fw, "wb").write(rom)

def terrarium(log):
    return [os.environ["TERRARIUM"], "run", "--backend", "emu", "--memory", "128",
            "--firmware", fw, "--debugcon", log, "--timeout", "300"]

def qemu(log):
    e = os.environ
    return [e["QEMU_BIN"], "-M", "pc", "-accel", "tcg", "-m", "128", "-nic", "none",
            "-display", "none", "-L", e["QEMU_DATA"], "-L", e["QEMU_SEABIOS"], "-L", e["QEMU_IPXE"],
            "-bios", fw, "-chardev", f"file,id=dbg,path={log}",
            "-device", "isa-debugcon,iobase=0x402,chardev=dbg", "-no-reboot"]

def measure(cmd_for, name):
    log = os.path.join(work, f"{name}.log")
    open(log, "w").close()
    p = subprocess.Popen(cmd_for(log), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            data = open(log, "rb").read()
            now = time.monotonic()
            if start is None and b"S" in data:
                start = now
            if b"D" in data:
                return 2 * n / (now - start) / 1e6
            time.sleep(0.001)
        raise SystemExit(f"{name}: no 'D' on the debug port within 300 s")
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
    print(f"round {r + 1}: terrarium {results['terrarium'][-1]:.0f} MIPS, qemu tcg {results['qemu'][-1]:.0f} MIPS")
t, q = statistics.median(results["terrarium"]), statistics.median(results["qemu"])
print(f"median: terrarium emu {t:.0f} MIPS, qemu tcg {q:.0f} MIPS, ratio terrarium/qemu {t / q:.3f}")
PY
