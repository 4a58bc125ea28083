#!/usr/bin/env bash
# Take and revert of a running VM's whole state, Terrarium against QEMU 7.2's savevm/loadvm,
# on the same guest: conformance::firmware::random_fill fills MIB of RAM with random data (so
# nothing compresses and every page is touched), then keeps running. Both on the software CPU
# (Terrarium emu, QEMU TCG).
#
#   bench/snapshot.sh [MIB] [ROUNDS]        (defaults 512 and 5)
#
# Terrarium (machine/examples/snapshot_bench.rs): take = the time the guest is stopped: pause,
# capture vCPUs and devices, start writing RAM from a copy-on-write snapshot, resume; complete =
# from the pause until state.bin and ram.bin are synced and in place (the guest runs meanwhile);
# revert = power the running machine off and start one restored from the saved state (RAM
# mapped privately from ram.bin).
# QEMU: `savevm` and `loadvm` through QMP's human-monitor-command into a qcow2 disk (where QEMU
# keeps internal snapshots), timed from the request to the reply.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=${1:-512}
ROUNDS=${2:-5}
"$REPO/scripts/fetch-qemu.sh" >/dev/null
# shellcheck source=/dev/null
. "$REPO/scripts/qemu-env.sh"
cargo build -q --release -p machine --example snapshot_bench --manifest-path "$REPO/Cargo.toml"
BENCH="$REPO/target/release/examples/snapshot_bench"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/terrarium-snapshot.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "Terrarium (software CPU), $MIB MiB:"
"$BENCH" "$MIB" "$ROUNDS" "$WORK/terrarium" | tee "$WORK/terrarium.txt"

"$BENCH" --firmware "$MIB" "$WORK/fill.bin"
qemu-img create -q -f qcow2 "$WORK/disk.qcow2" 64M
echo "QEMU 7.2 (TCG), $MIB MiB:"
python3 - "$WORK" "$MIB" "$ROUNDS" <<'PYEOF' | tee "$WORK/qemu.txt"
import json, os, socket, statistics, subprocess, sys, time

work, mib, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
e = os.environ
sock = f"{work}/qmp.sock"
serial = f"{work}/serial.txt"
qemu = subprocess.Popen([
    e["QEMU_BIN"], "-M", "pc", "-accel", "tcg", "-m", mib, "-nic", "none", "-display", "none",
    "-L", e["QEMU_DATA"], "-L", e["QEMU_SEABIOS"], "-L", e["QEMU_IPXE"],
    "-bios", f"{work}/fill.bin", "-serial", f"file:{serial}",
    "-drive", f"if=ide,format=qcow2,file={work}/disk.qcow2",
    "-qmp", f"unix:{sock},server=on,wait=off"])
try:
    deadline = time.time() + 600
    while not (os.path.exists(serial) and b"FILLED" in open(serial, "rb").read()):
        if time.time() > deadline or qemu.poll() is not None:
            sys.exit("QEMU's guest did not fill its RAM")
        time.sleep(0.05)
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    f = s.makefile("rw")
    f.readline()

    def command(cmd, **args):
        f.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
        f.flush()
        while True:
            reply = json.loads(f.readline())
            if "return" in reply or "error" in reply:
                return reply

    command("qmp_capabilities")
    takes, reverts = [], []
    for r in range(1, rounds + 1):
        t = time.perf_counter()
        out = command("human-monitor-command", **{"command-line": "savevm s"})
        take = (time.perf_counter() - t) * 1e3
        if out.get("return"):
            sys.exit(f"savevm: {out}")
        time.sleep(0.2)
        t = time.perf_counter()
        out = command("human-monitor-command", **{"command-line": "loadvm s"})
        revert = (time.perf_counter() - t) * 1e3
        if out.get("return"):
            sys.exit(f"loadvm: {out}")
        print(f"round {r}: take {take:.1f} ms, revert {revert:.1f} ms")
        takes.append(take)
        reverts.append(revert)
    print(f"median: take {statistics.median(takes):.1f} ms, "
          f"revert {statistics.median(reverts):.1f} ms")
finally:
    qemu.kill()
PYEOF

python3 - "$WORK/terrarium.txt" "$WORK/qemu.txt" <<'PYEOF'
import re, sys
def medians(path):
    m = re.search(r"median: take ([\d.]+) ms, revert ([\d.]+) ms", open(path).read())
    return float(m.group(1)), float(m.group(2))
(tt, tr), (qt, qr) = medians(sys.argv[1]), medians(sys.argv[2])
tc = float(re.search(r"complete ([\d.]+) ms", open(sys.argv[1]).read().split("median:")[1]).group(1))
print(f"ratio Terrarium/QEMU: take {tt / qt:.3f}, revert {tr / qr:.3f} "
      f"(Terrarium's take complete on disk / QEMU's savevm: {tc / qt:.3f})")
PYEOF
