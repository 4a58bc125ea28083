#!/usr/bin/env bash
# In-guest sequential read of an IDE disk: Terrarium's software CPU vs QEMU 7.2 TCG.
#
#   bench/ide-read.sh [ROUNDS] [MIB]      (defaults 3 rounds, a 128 MiB disk)
#
# Both peers direct-boot Debian's 6.1 bzImage with the project's initramfs in its
# `terrarium.test=readbench` mode and the same raw disk image as IDE primary master: the guest
# loads ata_piix, prints READBENCH-START, reads the whole disk with `dd bs=1M` and prints
# READBENCH-END. The time between the two markers on the serial console gives MB/s (boot time is
# not counted). Rounds alternate which peer goes first; medians and the ratio Terrarium/QEMU
# (above 1: Terrarium reads faster) are printed.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-3}
MIB=${2:-128}
"$REPO/scripts/fetch-assets.sh" >/dev/null
"$REPO/scripts/fetch-qemu.sh" >/dev/null
# shellcheck source=scripts/qemu-env.sh
. "$REPO/scripts/qemu-env.sh"
ASSETS=${TERRARIUM_ASSETS:-$REPO/.cache/assets}
TERRARIUM="${TERRARIUM:-$REPO/target/release/terrarium}"
[ -x "$TERRARIUM" ] || (cd "$REPO" && cargo build --release -p app)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
head -c "$((MIB << 20))" /dev/urandom >"$WORK/disk.raw"
export TERRARIUM QEMU_BIN QEMU_DATA QEMU_SEABIOS QEMU_IPXE QEMU_MODULE_DIR WORK ROUNDS ASSETS MIB
PYTHONPATH="$REPO/bench" python3 - <<'PY'
import os
from peers import alternate, qemu, wait_for

work, rounds, assets = os.environ["WORK"], int(os.environ["ROUNDS"]), os.environ["ASSETS"]
mib = int(os.environ["MIB"])
kernel, initrd = os.path.join(assets, "vmlinuz"), os.path.join(assets, "initramfs.cpio.gz")
disk = os.path.join(work, "disk.raw")
append = "console=ttyS0 cryptomgr.notests terrarium.test=readbench"

def throughput():
    seen = {}
    def ready(data, now):
        if "start" not in seen and b"READBENCH-START" in data:
            seen["start"] = now
        if b"READBENCH-END" in data and "start" in seen:
            return mib / (now - seen["start"])
        return None
    return ready

def peer(name, cmd_for):
    log = os.path.join(work, f"{name}.log")
    return lambda: wait_for(cmd_for(log), log, throughput(), limit=900, poll=0.005)

medians = alternate(rounds, {
    "terrarium-emu": peer("terrarium", lambda log: [os.environ["TERRARIUM"], "run", "--backend", "emu",
        "--memory", "256", "--kernel", kernel, "--initrd", initrd, "--append", append,
        "--disk", disk, "--serial", log, "--timeout", "900"]),
    "qemu-tcg": peer("qemu", lambda log: qemu("tcg", "-m", "256", "-kernel", kernel, "-initrd", initrd,
        "-append", append, "-drive", f"file={disk},format=raw,if=ide,cache=writeback",
        "-serial", f"file:{log}", "-no-reboot")),
}, "MB/s")
PY
