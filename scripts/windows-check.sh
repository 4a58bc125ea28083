#!/usr/bin/env bash
# Type-checks crates for Windows (x86_64-pc-windows-gnu) on a Linux host.
#
#   scripts/windows-check.sh [PACKAGE...]        (default: backend-whp)
#
# No Rust toolchain with a Windows standard library can be downloaded here, so the script uses
# Debian bookworm-security's rustc-web/cargo-web packages, unpacked (never installed) under
# .cache/rust-web, and builds the standard library for the target from rust-web-src
# (-Zbuild-std, allowed on a stable compiler by RUSTC_BOOTSTRAP=1). The MinGW-w64 GCC is
# installed with apt-get when missing (needed to link; `cargo check` does not link).
# Output goes to target/windows: it is a different compiler from the workspace's usual one.
#
# Environment:
#   WINDOWS_CHECK_CMD       cargo subcommand (default: check; e.g. build, clippy)
#   WINDOWS_CHECK_RUSTFLAGS RUSTFLAGS for the checked crates (default: -D warnings)
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
CACHE="$ROOT_DIR/.cache/rust-web"
UNPACKED="$CACHE/root"
TARGET=x86_64-pc-windows-gnu
# cargo-web links libgit2, which needs mbed TLS and http-parser (not on a minimal system).
PKGS=(rustc-web cargo-web libstd-rust-web-1.96 libstd-rust-web-dev rust-web-src libllvm22 libgit2-1.5
    libmbedtls14 libmbedx509-1 libmbedcrypto7 libhttp-parser2.9)

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

fetch_toolchain() {
    local stamp="$CACHE/.unpacked"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${PKGS[*]}" ] && [ -x "$UNPACKED/usr/bin/rustc" ]; then
        return
    fi
    echo "windows-check: fetching ${PKGS[*]}" >&2
    rm -rf "$CACHE/debs" "$UNPACKED" "$stamp"
    mkdir -p "$CACHE/debs" "$UNPACKED"
    # apt-get download writes into the current directory; as root it warns that the _apt
    # user cannot write there, which is harmless.
    if ! (cd "$CACHE/debs" && apt-get download "${PKGS[@]}" 2> >(grep -v 'unsandboxed' >&2)); then
        echo "windows-check: package lists look stale; running apt-get update" >&2
        as_root apt-get update -qq
        (cd "$CACHE/debs" && apt-get download "${PKGS[@]}" 2> >(grep -v 'unsandboxed' >&2))
    fi
    for deb in "$CACHE"/debs/*.deb; do
        dpkg -x "$deb" "$UNPACKED"
    done
    rm -rf "$CACHE/debs"
    echo "${PKGS[*]}" >"$stamp"
}

install_mingw() {
    if command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
        return
    fi
    echo "windows-check: installing gcc-mingw-w64-x86-64" >&2
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null
    fi
}

fetch_toolchain
install_mingw

packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
    packages=(backend-whp)
fi
pkg_args=()
for p in "${packages[@]}"; do
    pkg_args+=(-p "$p")
done

export LD_LIBRARY_PATH="$UNPACKED/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUSTC="$UNPACKED/usr/bin/rustc"
export RUSTDOC="$UNPACKED/usr/bin/rustdoc"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export RUSTFLAGS="${WINDOWS_CHECK_RUSTFLAGS--D warnings}"
# The unpacked compiler must not be redirected to rustup's toolchain.
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER

cd "$ROOT_DIR"
exec "$UNPACKED/usr/bin/cargo" "${WINDOWS_CHECK_CMD:-check}" "${pkg_args[@]}" \
    --target "$TARGET" -Zbuild-std=std,panic_abort \
    --target-dir "$ROOT_DIR/target/windows"
