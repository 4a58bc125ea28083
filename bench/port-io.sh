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
TERRARIUM="$REPO/target/release/terrarium"
[ -x "$TERRARIUM" ] || (cd "$REPO" && cargo build --release -p app)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

export TERRARIUM QEMU_BIN QEMU_DATA QEMU_SEABIOS QEMU_IPXE QEMU_MODULE_DIR WORK ROUNDS EXITS
python3 - <<'PY'
import os, statistics, subprocess, time

work, exits, rounds = os.environ["WORK"], int(os.environ["EXITS"]), int(os.environ["ROUNDS"])
fw = os.path.join(work, "port-io.bin")
rom = bytearray([0xF4]) * (64 << 10)
code = bytes([0xBA, 0x02, 0x04, 0xB0, ord("S"), 0xEE,              # mov dx,0x402; mov al,'S'; out
              0x66, 0xB9]) + exits.to_bytes(4, "little") + bytes([  # mov ecx, EXITS
              0xBA, 0x80, 0x00,                                     # mov dx, 0x80
              0xEE, 0x66, 0x49, 0x75, 0xFB,                         # 1: out dx,al; dec ecx; jnz 1b
              0xBA, 0x02, 0x04, 0xB0, ord("D"), 0xEE, 0xFA, 0xF4])  # 'D'; cli; hlt
rom[0:len(code)] = code
rom[0xFFF0:0xFFF3] = bytes([0xE9]) + ((0 - 0xFFF3) & 0xFFFF).to_bytes(2, "little")  # jmp 0
open(fw, "wb").write(rom)

def terrarium(log):
    return [os.environ["TERRARIUM"], "run", "--backend", "kvm", "--memory", "128",
            "--firmware", fw, "--debugcon", log, "--timeout", "120"]

def qemu(log):
    e = os.environ
    return [e["QEMU_BIN"], "-M", "pc", "-accel", "kvm", "-m", "128", "-nic", "none",
            "-display", "none", "-L", e["QEMU_DATA"], "-L", e["QEMU_SEABIOS"], "-L", e["QEMU_IPXE"],
            "-bios", fw, "-chardev", f"file,id=dbg,path={log}",
            "-device", "isa-debugcon,iobase=0x402,chardev=dbg", "-no-reboot"]

def measure(cmd_for, name):
    log = os.path.join(work, f"{name}.log")
    open(log, "w").close()
    p = subprocess.Popen(cmd_for(log), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            data = open(log, "rb").read()
            now = time.monotonic()
            if start is None and b"S" in data:
                start = now
            if b"D" in data:
                return (now - start) / exits * 1e6
            time.sleep(0.0005)
        raise SystemExit(f"{name}: no 'D' on the debug port within 120 s")
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
    print(f"round {r + 1}: terrarium {results['terrarium'][-1]:.2f} us/exit, qemu {results['qemu'][-1]:.2f} us/exit")
t, q = statistics.median(results["terrarium"]), statistics.median(results["qemu"])
print(f"median: terrarium {t:.2f} us/exit, qemu {q:.2f} us/exit, ratio terrarium/qemu {t / q:.2f}")
PY
