#!/usr/bin/env bash
# Host-side qcow2 throughput: Terrarium's disk crate against `qemu-img bench`, same image, same
# access pattern, 4 KiB requests one at a time (queue depth 1), both through the host page cache.
#
#   bench/qcow2-throughput.sh [ROUNDS] [IMAGE_MIB]      (defaults: 3 rounds, 256 MiB)
#
# Each round, each peer gets a fresh qcow2 image made by `qemu-img create` (64 KiB clusters) and
# runs, timed one by one:
#   seq write   4 KiB requests from offset 0 over the whole image (allocates every cluster)
#   seq read    the same, reading
#   rand read   4 KiB requests with a stride of 7919 * 4 KiB, wrapping around the image: a
#               permutation that visits every 4 KiB block once, scattered over all L2 tables
#               (qemu-img bench has no random mode; both peers use this stride)
#   rand write  the same stride, overwriting allocated clusters
# Terrarium runs `disk/examples/bench.rs` (built with `cargo build --release -p disk --example
# bench`), one request after another. QEMU runs `qemu-img bench -t writeback` twice: at queue
# depth 1 with its default thread-pool AIO (the same one-at-a-time pattern), and at depth 64 with
# io_uring (QEMU's best case; requests overlap). Rounds rotate which peer goes first. Prints
# MiB/s per test and peer (medians) and the median time ratios Terrarium/QEMU (below 1:
# Terrarium is faster). Nothing asserts on time.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-3}
MIB=${2:-256}
QEMU_IMG=${QEMU_IMG:-/usr/bin/qemu-img}
[ -x "$QEMU_IMG" ] || { echo "qcow2-throughput.sh: $QEMU_IMG is missing (apt-get install qemu-utils)" >&2; exit 1; }
(cd "$REPO" && cargo build --release -q -p disk --example bench)
BENCH="$REPO/target/release/examples/bench"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

export QEMU_IMG BENCH WORK ROUNDS MIB
python3 - <<'PY'
import os, re, statistics, subprocess, time

qemu_img, bench, work = os.environ["QEMU_IMG"], os.environ["BENCH"], os.environ["WORK"]
rounds, mib = int(os.environ["ROUNDS"]), int(os.environ["MIB"])
bs = 4096
count = mib * (1 << 20) // bs
stride = 7919 * bs
tests = [("seq write", True, bs), ("seq read", False, bs),
         ("rand read", False, stride), ("rand write", True, stride)]

def fresh(path):
    if os.path.exists(path):
        os.remove(path)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", path, f"{mib}M"], check=True)

def terrarium(img, write, step):
    out = subprocess.run([bench, img, "write" if write else "read", str(count), str(bs), str(step)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[0])

def qemu(extra):
    def run(img, write, step):
        cmd = [qemu_img, "bench", "-f", "qcow2", "-t", "writeback", "-c", str(count),
               "-s", str(bs), "-S", str(step)] + extra + (["-w"] if write else []) + [img]
        p = subprocess.run(cmd, capture_output=True, text=True)
        m = re.search(r"Run completed in ([0-9.]+) seconds", p.stdout)
        if p.returncode != 0 or not m:
            raise SystemExit(f"qemu-img bench failed: {' '.join(cmd)}: {p.stdout}{p.stderr}")
        return float(m.group(1))
    return run

Q1, QBEST = "qemu-img d1", "qemu-img d64 io_uring"
peers = {"terrarium": terrarium, Q1: qemu(["-d", "1"]), QBEST: qemu(["-d", "64", "-i", "io_uring"])}
times = {(p, t[0]): [] for p in peers for t in tests}
for r in range(rounds):
    names = list(peers)
    order = names[r % len(names):] + names[:r % len(names)]
    for p in order:
        img = os.path.join(work, f"{p}.qcow2")
        fresh(img)
        subprocess.run(["sync"])
        for name, write, step in tests:
            times[(p, name)].append(peers[p](img, write, step))
    print(f"round {r + 1}: " + "; ".join(
        f"{name}: " + ", ".join(f"{p} {times[(p, name)][-1]:.3f}s" for p in peers)
        for name, _, _ in tests))

size_mib = count * bs / (1 << 20)
print(f"\n{size_mib:.0f} MiB in 4 KiB requests, median of {rounds} rounds (MiB/s; ratio = time "
      "Terrarium / time QEMU)")
print(f"{'test':<11}{'terrarium':>11}{'qemu d1':>10}{'qemu d64':>10}{'ratio d1':>10}{'ratio d64':>11}")
for name, _, _ in tests:
    t = statistics.median(times[("terrarium", name)])
    q1 = statistics.median(times[(Q1, name)])
    qb = statistics.median(times[(QBEST, name)])
    print(f"{name:<11}{size_mib / t:>11.1f}{size_mib / q1:>10.1f}{size_mib / qb:>10.1f}"
          f"{t / q1:>10.2f}{t / qb:>11.2f}")
PY
