#!/usr/bin/env bash
# Runs Terrarium's whole test suite: fetches the test assets (Debian packages, cached), then
# runs every crate's tests. Extra arguments go to `cargo test`.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
scripts/fetch-assets.sh
cargo test --workspace "$@"
