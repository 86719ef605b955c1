#!/usr/bin/env bash
# CI entry point: runs as root on a fresh clone (CI=true, no stdin), possibly on a bare Debian 12.
# Installs what the tests need when it is missing, then runs the README's test command.
# The exit code is the tests' own; "no tests collected" (pytest's 5) is reported as a failure.
set -euo pipefail

cd "$(dirname "$0")/.."
export CI="${CI:-true}"
export DEBIAN_FRONTEND=noninteractive
exec </dev/null

log() { printf '.ci/run: %s\n' "$*" >&2; }

apt_updated=
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        log "missing $* and not root: cannot install them"
        exit 2
    fi
    log "installing $*"
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- system packages, only those missing -------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)   # a compiler without libc headers builds nothing
command -v make >/dev/null 2>&1 || need+=(make)
command -v objdump >/dev/null 2>&1 || need+=(binutils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)          # the Swarm e2e's network namespaces
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    apt_install "${need[@]}"
fi

# --- tox, in a venv of its own (Debian's Python refuses a system-wide pip install) ---------------
if ! command -v tox >/dev/null 2>&1; then
    venv="${TMPDIR:-/tmp}/gpumem-ci-tox"
    if [ ! -x "$venv/bin/tox" ]; then
        rm -rf "$venv"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            apt_install python3-venv   # Debian splits venv/ensurepip off python3
            python3 -m venv "$venv"
        fi
        log "installing tox into $venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check tox
    fi
    export PATH="$venv/bin:$PATH"
fi

# --- the README's test command ------------------------------------------------------------------
log "tox -e test (tox $(tox --version | cut -d' ' -f1))"
# CI=true turns the e2e suite's skips into failures; make sure it reaches pytest whatever
# tox.ini passes (tox hands the test environment only the variables it is told to)
export TOX_OVERRIDE="${TOX_OVERRIDE:-testenv.pass_env+=CI}"
rc=0
tox -e test || rc=$?
case "$rc" in
    0) log "tests passed" ;;
    5) log "FAILED: pytest collected no tests (exit 5)" ;;
    *) log "FAILED: tests exited $rc" ;;
esac
exit "$rc"
