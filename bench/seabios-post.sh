#!/usr/bin/env bash
# SeaBIOS POST, side by side: Terrarium and QEMU 7.2 run the same bios.bin with no boot media, and
# each run is timed from process start until SeaBIOS reports on its debug port (0x402) that it found
# nothing to boot. Both peers are measured the same way: the debug port goes to a file, the file is
# polled, the process is killed when the marker appears.
#
#   bench/seabios-post.sh [ROUNDS]        # ROUNDS (or env ROUNDS), default 5
#
# Environment:
#   ROUNDS          rounds; each runs both peers, alternating which goes first (default 5)
#   BACKEND         terrarium --backend (default kvm)
#   QEMU_ACCEL      qemu -accel (default kvm; BACKEND=emu QEMU_ACCEL=tcg compares the software CPUs)
#   TERRARIUM_BIN   terrarium binary (default target/release/terrarium, built if missing)
#   RUN_TIMEOUT     seconds before a run counts as failed (default 60)
#   POLL_MS         polling interval of the debug-port file in ms (default 5)
#   KEEP_LOGS       folder to keep each run's debug-port log and stderr in (default: discarded)
#
# Markers (SeaBIOS 1.16.2): "Booting from " starts the first boot attempt (POST is done); the run
# ends at "No bootable device." which SeaBIOS prints as "No bootable device." when fw_cfg says not to
# retry (QEMU's default) and as "No bootable device.  Retrying in 60 seconds." otherwise.
# The table shows both times; the ratio is taken on the end marker.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-${ROUNDS:-5}}
BACKEND=${BACKEND:-kvm}
QEMU_ACCEL=${QEMU_ACCEL:-kvm}
TERRARIUM_BIN=${TERRARIUM_BIN:-$REPO/target/release/terrarium}

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "seabios-post: ROUNDS must be a positive number" >&2; exit 2; }

"$REPO/scripts/fetch-assets.sh"
"$REPO/scripts/fetch-qemu.sh" >/dev/null
# shellcheck source=scripts/qemu-env.sh
. "$REPO/scripts/qemu-env.sh"
ASSETS=${TERRARIUM_ASSETS:-$REPO/.cache/assets}
BIOS="$ASSETS/bios.bin"

if [ ! -x "$TERRARIUM_BIN" ]; then
    echo "seabios-post: building terrarium (cargo build --release -p app)" >&2
    (cd "$REPO" && cargo build --release -p app)
fi
if [ "$BACKEND" = kvm ] || [ "$QEMU_ACCEL" = kvm ]; then
    if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
        echo "seabios-post: /dev/kvm is not usable" >&2
        exit 1
    fi
fi

export ROUNDS BIOS TERRARIUM_BIN BACKEND QEMU_ACCEL
exec python3 - <<'PY'
import os, signal, statistics, subprocess, sys, tempfile, time

ROUNDS = int(os.environ["ROUNDS"])
BIOS = os.environ["BIOS"]
TIMEOUT = float(os.environ.get("RUN_TIMEOUT", "60"))
POLL = float(os.environ.get("POLL_MS", "5")) / 1000.0
KEEP = os.environ.get("KEEP_LOGS")
START_MARK = b"Booting from "
END_MARK = b"No bootable device."


def terrarium(dbg):
    return [os.environ["TERRARIUM_BIN"], "run", "--backend", os.environ["BACKEND"],
            "--memory", "128", "--firmware", BIOS, "--debugcon", dbg,
            "--timeout", str(int(TIMEOUT) + 5)]


def qemu(dbg):
    e = os.environ
    return [e["QEMU_BIN"], "-M", "pc", "-accel", e["QEMU_ACCEL"], "-m", "128", "-nic", "none",
            "-display", "none", "-L", e["QEMU_DATA"], "-L", e["QEMU_SEABIOS"], "-L", e["QEMU_IPXE"],
            "-bios", BIOS, "-chardev", "file,id=dbg,path=" + dbg,
            "-device", "isa-debugcon,iobase=0x402,chardev=dbg", "-no-reboot"]


PEERS = {"terrarium": terrarium, "qemu": qemu}


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_once(peer, rnd, workdir):
    """Returns (t_start_mark, t_end_mark) in seconds, or raises RuntimeError."""
    dbg = os.path.join(workdir, f"{peer}-{rnd}.debugcon")
    err = os.path.join(workdir, f"{peer}-{rnd}.stderr")
    open(dbg, "wb").close()
    with open(err, "wb") as errf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(PEERS[peer](dbg), stdin=subprocess.DEVNULL,
                                stdout=errf, stderr=subprocess.STDOUT)
        t_start = t_end = None
        buf = b""
        try:
            with open(dbg, "rb") as f:
                while True:
                    chunk = f.read()
                    now = time.perf_counter() - t0
                    if chunk:
                        buf += chunk
                        if t_start is None and START_MARK in buf:
                            t_start = now
                        if END_MARK in buf:
                            t_end = now
                            break
                    if proc.poll() is not None:
                        # Read what it wrote before it exited.
                        buf += f.read()
                        if END_MARK in buf:
                            t_end = time.perf_counter() - t0
                            break
                        raise RuntimeError(f"exited with {proc.returncode} before the marker")
                    if now > TIMEOUT:
                        raise RuntimeError(f"no marker after {TIMEOUT:.0f} s")
                    time.sleep(POLL)
        except RuntimeError as e:
            stop(proc)
            tail = b"\n".join(buf.splitlines()[-5:]).decode(errors="replace")
            with open(err, "rb") as ef:
                etail = b"\n".join(ef.read().splitlines()[-5:]).decode(errors="replace")
            raise RuntimeError(f"{e}\n    debug port tail:\n      {tail}\n    output tail:\n      {etail}")
        finally:
            stop(proc)
    return (t_start if t_start is not None else t_end), t_end


def cell(r, missing="failed"):
    """'end (start)' in ms, right-aligned in 20 columns."""
    if r is None:
        return missing.rjust(20)
    return f"{r[1] * 1000:9.1f} ({r[0] * 1000:7.1f})".rjust(20)


def main():
    workdir = KEEP or tempfile.mkdtemp(prefix="seabios-post.")
    os.makedirs(workdir, exist_ok=True)
    results = {p: [] for p in PEERS}  # peer -> list of (t_start, t_end) or None
    failures = 0
    print(f"SeaBIOS POST, {ROUNDS} rounds: terrarium --backend {os.environ['BACKEND']} vs "
          f"QEMU 7.2 -accel {os.environ['QEMU_ACCEL']}; bios {BIOS}", flush=True)
    print(f"times in ms from process start: to '{END_MARK.decode()}' (to '{START_MARK.decode().strip()}')",
          flush=True)
    print(f"{'round':>6}  {'terrarium':>20}  {'qemu':>20}", flush=True)
    for rnd in range(1, ROUNDS + 1):
        order = ["terrarium", "qemu"] if rnd % 2 else ["qemu", "terrarium"]
        row = {}
        for peer in order:
            try:
                row[peer] = run_once(peer, rnd, workdir)
            except (RuntimeError, OSError) as e:
                failures += 1
                row[peer] = None
                print(f"  round {rnd} {peer} failed: {e}", file=sys.stderr, flush=True)
            results[peer].append(row[peer])
        print(f"{rnd:>6}  {cell(row['terrarium'])}  {cell(row['qemu'])}", flush=True)

    med = {}
    for peer in PEERS:
        ok = [r for r in results[peer] if r is not None]
        if ok:
            med[peer] = (statistics.median(r[0] for r in ok), statistics.median(r[1] for r in ok))
    print(f"{'median':>6}  {cell(med.get('terrarium'), '-')}  {cell(med.get('qemu'), '-')}")
    if len(med) == 2:
        end_ratio = med["terrarium"][1] / med["qemu"][1]
        start_ratio = med["terrarium"][0] / med["qemu"][0]
        print(f"ratio terrarium/qemu (medians): {end_ratio:.2f} to '{END_MARK.decode()}', "
              f"{start_ratio:.2f} to '{START_MARK.decode().strip()}'")
    if KEEP:
        print(f"logs kept in {workdir}")
    else:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


sys.exit(main())
PY
