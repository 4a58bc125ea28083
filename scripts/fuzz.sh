#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target in fuzz/ (disk image parsers and device register sequences,
# and any others there) for SECONDS each (default 20). Installs cargo-fuzz from crates.io if it
# is missing.
#
# cargo-fuzz passes nightly-only compiler flags (-Z sanitizer=address, coverage passes); the
# project builds on the stable toolchain, so the run sets RUSTC_BOOTSTRAP=1, which lets stable
# rustc accept them.
#
# Usage: scripts/fuzz.sh [SECONDS]
# Crashes are saved in fuzz/artifacts/<target>/; rerun one with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>)
set -euo pipefail

secs="${1:-20}"
case "$secs" in
  ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, not '$secs'" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
cd "$root/fuzz"

# Small valid images as seeds, when qemu-img is there to make them.
seed() {
  local dir="corpus/$1"; shift
  mkdir -p "$dir"
  if command -v qemu-img >/dev/null 2>&1; then
    qemu-img create -q "$@" >/dev/null 2>&1 || true
  fi
}
seed qcow2 -f qcow2 -o cluster_size=512 corpus/qcow2/seed-v3.qcow2 1M
seed qcow2 -f qcow2 -o cluster_size=512,compat=0.10 corpus/qcow2/seed-v2.qcow2 1M
seed qcow2 -f qcow2 -o cluster_size=512 -b base.raw -F raw -u corpus/qcow2/seed-backing.qcow2 1M
seed vhd -f vpc corpus/vhd/seed-dynamic.vhd 1M
seed vhd -f vpc -o subformat=fixed corpus/vhd/seed-fixed.vhd 64K

status=0
targets=$(cargo fuzz list)
[ -n "$targets" ] || { echo "fuzz.sh: cargo fuzz list found no targets" >&2; exit 1; }
for target in $targets; do
  mkdir -p "corpus/$target"
  echo "fuzz.sh: $target for ${secs}s" >&2
  if ! cargo fuzz run "$target" "corpus/$target" -- \
      -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10; then
    echo "fuzz.sh: $target FAILED; see fuzz/artifacts/$target/" >&2
    status=1
  fi
done
exit "$status"
