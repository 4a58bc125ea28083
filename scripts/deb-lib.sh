# shellcheck shell=bash
# Helpers shared by fetch-assets.sh and fetch-qemu.sh: fetch Debian packages with `apt-get download`
# and unpack them with dpkg, without installing them. Source this file; set LOG_PREFIX first.

log() { printf '%s: %s\n' "${LOG_PREFIX:-deb}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Paths to delete when the script exits, however it exits.
CLEANUP=()
cleanup() { [ ${#CLEANUP[@]} -eq 0 ] || rm -rf "${CLEANUP[@]}"; }
trap cleanup EXIT

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as root: directly when we are root, else through passwordless sudo.
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "needs root (or passwordless sudo) to run: $*"
    fi
}

APT_OPTS=(-q)
# As root, apt drops to user _apt for downloads and warns when that user cannot write the folder.
if is_root; then APT_OPTS+=(-o APT::Sandbox::User=root); fi

APT_UPDATED=0
# apt-get update, at most once per run. Returns 1 if it already ran (so callers stop retrying).
apt_update_once() {
    [ "$APT_UPDATED" -eq 0 ] || return 1
    APT_UPDATED=1
    log "package lists missing or stale: running apt-get update"
    as_root apt-get update -q >&2
}

# apt_install PACKAGE...: install packages (tools or libraries, never the assets themselves).
# Refuses to remove anything, so it cannot disturb what the machine already has.
apt_install() {
    local out
    log "apt-get install $*"
    until out=$(as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends --no-remove "$@" 2>&1); do
        apt_update_once || die "apt-get install $* failed:"$'\n'"$out"
    done
}

# deb_fetch PACKAGE[=VERSION] DEST STAMP [TAR-MEMBER...]
# Downloads the package's .deb and unpacks it into DEST (only the given members, if any), then writes
# STAMP ("package<TAB>version<TAB>arch") and STAMP.depends (its Depends field). Does nothing if STAMP exists. A run interrupted before the
# stamp is written unpacks again over the partial tree.
deb_fetch() {
    local spec=$1 dest=$2 stamp=$3; shift 3
    [ -f "$stamp" ] && return 0
    local dir out deb
    dir=$(mktemp -d "${DEB_TMP:-${TMPDIR:-/tmp}}/.download.XXXXXX")
    CLEANUP+=("$dir")
    log "downloading $spec"
    until out=$(cd "$dir" && apt-get "${APT_OPTS[@]}" download "$spec" 2>&1); do
        apt_update_once || die "apt-get download $spec failed:"$'\n'"$out"
    done
    deb=$(find "$dir" -maxdepth 1 -name '*.deb' | head -n 1)
    [ -n "$deb" ] || die "apt-get download $spec produced no .deb"
    mkdir -p "$dest"
    if [ $# -gt 0 ]; then
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dest" "$@"
    else
        dpkg -x "$deb" "$dest"
    fi
    mkdir -p "$(dirname "$stamp")"
    printf '%s\t%s\t%s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" \
        "$(dpkg-deb -f "$deb" Architecture)" >"$stamp.tmp"
    dpkg-deb -f "$deb" Depends >"$stamp.depends"
    mv -f "$stamp.tmp" "$stamp"
    rm -rf "$dir"
}

# stamp_id STAMP: "package version" from a stamp written by deb_fetch.
stamp_id() { cut -f1,2 --output-delimiter=' ' "$1"; }
