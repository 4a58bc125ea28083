"""Shared pieces of the side-by-side benchmarks: the QEMU 7.2 peer's command line, the marker
firmware, marker timing and alternating rounds with medians. Imported by the bench scripts
(which export the QEMU_* variables of scripts/qemu-env.sh and TERRARIUM)."""

import os
import statistics
import subprocess
import time


def qemu(accel, *extra):
    """QEMU 7.2 `-M pc` with no NIC or display and the unpacked firmware folders."""
    e = os.environ
    return [e["QEMU_BIN"], "-M", "pc", "-accel", accel, "-nic", "none", "-display", "none",
            "-L", e["QEMU_DATA"], "-L", e["QEMU_SEABIOS"], "-L", e["QEMU_IPXE"], *extra]


def qemu_debugcon(log):
    """QEMU arguments sending the debug port 0x402 to `log`."""
    return ["-chardev", f"file,id=dbg,path={log}", "-device", "isa-debugcon,iobase=0x402,chardev=dbg"]


def marker_firmware(path, body):
    """A 64 KiB firmware: writes 'S' to port 0x402, runs `body` (real mode), writes 'D', halts."""
    rom = bytearray([0xF4]) * (64 << 10)
    code = bytes([0xBA, 0x02, 0x04, 0xB0, ord("S"), 0xEE]) + body + bytes(
        [0xBA, 0x02, 0x04, 0xB0, ord("D"), 0xEE, 0xFA, 0xF4])
    rom[0:len(code)] = code
    rom[0xFFF0:0xFFF3] = bytes([0xE9]) + ((0 - 0xFFF3) & 0xFFFF).to_bytes(2, "little")  # jmp 0
    with open(path, "wb") as f:
        f.write(rom)


def wait_for(cmd, log, ready, limit=300.0, poll=0.001):
    """Starts `cmd`, polls `log` until `ready(bytes, now)` returns a number, kills the process."""
    open(log, "w").close()
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < limit:
            with open(log, "rb") as f:
                value = ready(f.read(), time.monotonic() - start)
            if value is not None:
                return value
            if p.poll() is not None:
                raise SystemExit(f"{cmd[0]} exited ({p.returncode}) early; log in {log}")
            time.sleep(poll)
        raise SystemExit(f"{cmd[0]}: nothing within {limit:.0f} s; log in {log}")
    finally:
        p.kill()
        p.wait()


def between_markers():
    """A `ready` function returning the seconds from 'S' to 'D' on the debug port."""
    seen = {}

    def ready(data, now):
        if "S" not in seen and b"S" in data:
            seen["S"] = now
        if b"D" in data:
            return now - seen.get("S", now)
        return None

    return ready


def alternate(rounds, peers, unit):
    """Runs every peer once per round, alternating which goes first; prints each round and the
    medians, and returns {name: median}. `peers` maps a name to a function returning a number."""
    names = list(peers)
    results = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for n in order:
            results[n].append(peers[n]())
        print(f"round {r + 1}: " + ", ".join(f"{n} {results[n][-1]:.2f} {unit}" for n in names))
    medians = {n: statistics.median(v) for n, v in results.items()}
    a, b = names
    print(f"median: {a} {medians[a]:.2f} {unit}, {b} {medians[b]:.2f} {unit}, "
          f"ratio {a}/{b} {medians[a] / medians[b]:.3f}")
    return medians
