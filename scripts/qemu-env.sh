#!/usr/bin/env bash
# Environment for the QEMU 7.2 peer that scripts/fetch-qemu.sh unpacks.
#
#   . scripts/qemu-env.sh                 # in bash: exports the variables below
#   eval "$(scripts/qemu-env.sh)"         # from any POSIX shell: prints the export lines
#
#   QEMU_ROOT        the unpacked tree ($TERRARIUM_QEMU, default $REPO/.cache/qemu)
#   QEMU_BIN         $QEMU_ROOT/usr/bin/qemu-system-x86_64
#   QEMU_DATA        $QEMU_ROOT/usr/share/qemu          (pass as -L "$QEMU_DATA")
#   QEMU_SEABIOS     $QEMU_ROOT/usr/share/seabios       (-L: vgabios-stdvga.bin, bios-256k.bin)
#   QEMU_IPXE        $QEMU_ROOT/usr/lib/ipxe/qemu       (-L: NIC option ROMs, unused with -nic none)
#   QEMU_MODULE_DIR  $QEMU_ROOT/usr/lib/x86_64-linux-gnu/qemu (read by QEMU itself, so it never
#                    loads modules of another QEMU version)
# Debian builds QEMU to look for firmware in /usr/share/qemu, /usr/share/seabios and
# /usr/lib/ipxe/qemu; the unpacked copy needs all three as -L options.

_terrarium_qemu_env() {
    local repo root
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    root=${TERRARIUM_QEMU:-$repo/.cache/qemu}
    if [ ! -x "$root/usr/bin/qemu-system-x86_64" ]; then
        echo "qemu-env: no QEMU in $root; run scripts/fetch-qemu.sh first" >&2
        return 1
    fi
    export QEMU_ROOT="$root"
    export QEMU_BIN="$root/usr/bin/qemu-system-x86_64"
    export QEMU_DATA="$root/usr/share/qemu"
    export QEMU_SEABIOS="$root/usr/share/seabios"
    export QEMU_IPXE="$root/usr/lib/ipxe/qemu"
    export QEMU_MODULE_DIR="$root/usr/lib/x86_64-linux-gnu/qemu"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Run, not sourced: print the exports.
    _terrarium_qemu_env || exit 1
    for _v in QEMU_ROOT QEMU_BIN QEMU_DATA QEMU_SEABIOS QEMU_IPXE QEMU_MODULE_DIR; do
        printf 'export %s=%q\n' "$_v" "${!_v}"
    done
    unset -f _terrarium_qemu_env
else
    _terrarium_qemu_env_rc=0
    _terrarium_qemu_env || _terrarium_qemu_env_rc=$?
    unset -f _terrarium_qemu_env
    return "$_terrarium_qemu_env_rc"
fi
