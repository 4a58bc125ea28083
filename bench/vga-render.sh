#!/usr/bin/env bash
# Render cost per frame of the standard VGA (devices/examples/vga_render.rs, release build):
# a full 80×25 text frame, a 1024×768×32 VBE frame that changed completely, one where 1 % of
# it changed, and one where nothing changed (what an idle guest costs at 60 Hz).
#
#   bench/vga-render.sh
#
# QEMU has no way to time its display refresh from outside, so this prints Terrarium's numbers
# only (see docs/BENCHMARKS.md).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
cargo run --quiet --release -p devices --example vga_render
