#!/usr/bin/env bash
# Fetch QEMU 7.2 from Debian bookworm as the side-by-side peer for Terrarium's benchmarks.
#
#   scripts/fetch-qemu.sh          # unpacks into $REPO/.cache/qemu (or $TERRARIUM_QEMU)
#   . scripts/qemu-env.sh          # then: $QEMU_BIN -L "$QEMU_DATA" -L "$QEMU_SEABIOS" ...
#
# The packages (qemu-system-x86, qemu-system-common, qemu-system-data 1:7.2+dfsg-7+deb12u*, plus the
# firmware packages Debian's QEMU looks in: seabios and ipxe-qemu) are downloaded with
# `apt-get download` and unpacked with `dpkg -x`, never installed: installing them would clash with
# the machine's newer qemu-utils. Only the shared libraries that the unpacked qemu-system-x86_64
# lacks (by ldd) are installed with apt-get.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QROOT=${TERRARIUM_QEMU:-$REPO/.cache/qemu}
STAMPS="$QROOT/.terrarium-pkgs"
SERIES='1:7.2+dfsg-7+deb12u'   # QEMU 7.2 as bookworm and its security/point updates ship it

LOG_PREFIX=fetch-qemu
# shellcheck source=scripts/deb-lib.sh
. "$REPO/scripts/deb-lib.sh"

# newest_version PACKAGE PREFIX: the newest version apt knows for PACKAGE that starts with PREFIX.
newest_version() {
    local pkg=$1 prefix=$2 v best="" list
    while :; do
        list=$(apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' || true)
        [ -n "$list" ] && break
        apt_update_once || die "apt knows no package $pkg"
    done
    while read -r v; do
        [[ "$v" == "$prefix"* ]] || continue
        if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
    done <<<"$list"
    [ -n "$best" ] || die "no $pkg version $prefix* is known to apt (have: ${list//$'\n'/ })"
    echo "$best"
}

# get PACKAGE [VERSION-PREFIX]: unpack the package into $QROOT unless done before.
get() {
    local pkg=$1 prefix=${2:-} spec=$1
    [ -f "$STAMPS/$pkg" ] && return 0
    [ -n "$prefix" ] && spec="$pkg=$(newest_version "$pkg" "$prefix")"
    deb_fetch "$spec" "$QROOT" "$STAMPS/$pkg"
}

# Debian's name for the package of a shared library, from its soname (policy 8.1):
# libfoo.so.3 -> libfoo3, libfoo-1.0.so.0 -> libfoo-1.0-0, libfoo2.so.1 -> libfoo2-1.
soname_pkg() {
    local so=$1 name ver
    name=${so%%.so.*}; ver=${so#*.so.}; ver=${ver%%.*}
    name=$(tr 'A-Z_' 'a-z-' <<<"$name")
    if [[ "$name" =~ [0-9]$ ]]; then echo "$name-$ver"; else echo "$name$ver"; fi
}

missing_libs() { { ldd "$QBIN" 2>/dev/null || true; } | awk '/not found/ {print $1}' | sort -u; }

mkdir -p "$QROOT"
exec 9>"$QROOT/.lock"
flock 9

get qemu-system-x86 "$SERIES"
get qemu-system-common "$SERIES"
get qemu-system-data "$SERIES"
get seabios
get ipxe-qemu

QBIN="$QROOT/usr/bin/qemu-system-x86_64"
[ -x "$QBIN" ] || die "$QBIN missing after unpacking"

MISSING=$(missing_libs)
if [ -n "$MISSING" ]; then
    log "qemu-system-x86_64 lacks: ${MISSING//$'\n'/ }"
    # The libraries qemu-system-x86 was linked against are its lib* dependencies: install those not
    # installed yet. Version constraints are left to apt; alternatives take the first.
    want=()
    while read -r dep; do
        dep=${dep%%|*}; dep=${dep%%(*}; dep=${dep// /}
        [[ "$dep" == lib* || "$dep" == zlib* ]] || continue
        dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'install ok installed' && continue
        want+=("$dep")
    done < <(tr ',' '\n' <"$STAMPS/qemu-system-x86.depends")
    [ ${#want[@]} -eq 0 ] || apt_install "${want[@]}"
    # Anything still missing: guess the package from the soname.
    MISSING=$(missing_libs)
    if [ -n "$MISSING" ]; then
        want=()
        for so in $MISSING; do want+=("$(soname_pkg "$so")"); done
        apt_install "${want[@]}"
    fi
    MISSING=$(missing_libs)
    [ -z "$MISSING" ] || die "still missing after installing libraries: ${MISSING//$'\n'/ }"
fi

VERSION=$(env QEMU_MODULE_DIR="$QROOT/usr/lib/x86_64-linux-gnu/qemu" "$QBIN" --version | head -n 1)
[[ "$VERSION" == *"version 7.2"* ]] || die "unexpected: $VERSION"

{
    echo "# QEMU peer for Terrarium benchmarks: package, version"
    for s in "$STAMPS"/*; do
        case "$s" in *.depends) continue ;; esac
        stamp_id "$s"
    done
} >"$QROOT/manifest.txt"

cat <<EOF
$VERSION
QEMU_BIN=$QBIN
firmware dirs (-L): $QROOT/usr/share/qemu $QROOT/usr/share/seabios $QROOT/usr/lib/ipxe/qemu
for the environment: . scripts/qemu-env.sh
EOF
