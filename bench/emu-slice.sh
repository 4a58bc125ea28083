#!/usr/bin/env bash
# Host instructions per guest instruction of the software CPU on a slice of a Linux boot,
# counted with valgrind's callgrind (repeatable, unlike wall-clock time on a shared machine).
#
#   bench/emu-slice.sh [GUEST_INSTRUCTIONS]     (default 20,000,000)
#
# Runs x86emu's `linux_slice` example (the 6.1 bzImage's 32-bit boot-protocol entry in flat
# protected mode, no devices; the decompressor relocates itself and runs its XZ decoder in
# long mode) twice under callgrind, for N and 2N guest instructions, and prints the difference
# of the two totals divided by N: start-up and RAM set-up cancel out. This is an engine metric
# with no QEMU column; `linux-boot.sh` is the side-by-side one.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-20000000}
command -v valgrind >/dev/null || { echo "emu-slice: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
"$REPO/scripts/fetch-assets.sh" >/dev/null
ASSETS=${TERRARIUM_ASSETS:-$REPO/.cache/assets}
(cd "$REPO" && cargo build --release -q -p x86emu --example linux_slice)
EXAMPLE="$REPO/target/release/examples/linux_slice"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
count() {
    valgrind --tool=callgrind --callgrind-out-file="$WORK/out" "$EXAMPLE" "$ASSETS/vmlinuz" "$1" \
        2>"$WORK/log" >"$WORK/guest"
    sed -n 's/.*I *refs: *//p' "$WORK/log" | tr -d ,
}
one=$(count "$N")
two=$(count $((2 * N)))
echo "guest: $(cat "$WORK/guest")"
python3 -c "print(f'host instructions per guest instruction: {($two - $one) / $N:.1f}')"
