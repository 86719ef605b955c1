#!/usr/bin/env bash
# The README's test command: `bash tests/run.sh [pytest args]`.  On a fresh Debian 12 with only
# Python and git, as root, it installs what the tests need when it is missing (Docker's engine
# and CLI, a C compiler, make, binutils, python3-venv, an aarch64 cross compiler and qemu-user;
# tox into a venv of its own; a newer Docker engine with CDI into a cache of its own,
# tests/e2e/fetch_cdi_engine.sh), then runs
# `tox -e test`.  Not root: it installs nothing and names what is missing.  .ci/run calls it.
# GPUMEM_TOX_VENV: where tox goes when it is not on PATH (default ${TMPDIR:-/tmp}/gpumem-tox).
# The exit code is the tests' own; "no tests collected" (pytest's 5) is reported as a failure.
set -euo pipefail

cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
exec </dev/null

log() { printf 'tests/run.sh: %s\n' "$*" >&2; }

apt_updated=
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        log "missing $*: install them (as root: apt-get install $*), or run this as root"
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
command -v zsh >/dev/null 2>&1 || need+=(zsh)               # the completion scripts' tests
command -v fish >/dev/null 2>&1 || need+=(fish)
command -v git >/dev/null 2>&1 || need+=(git)               # pre-commit try-repo
# the aarch64 wheel: cross-built, its library run under qemu-user (tests/unit/test_wheel.py)
if [ "$(uname -m)" = x86_64 ]; then
    command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
    [ -e /usr/aarch64-linux-gnu/include/stdio.h ] || need+=(libc6-dev-arm64-cross)
    command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
fi
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    apt_install "${need[@]}"
fi

# --- a Docker engine with CDI for the driver path's e2e (Debian 12's 20.10 has none) ----------------
# Debian 13's dockerd and docker, unpacked into a cache of their own, fetched once (about 30 MB)
if [ "$(id -u)" -eq 0 ]; then
    bash tests/e2e/fetch_cdi_engine.sh >/dev/null ||
        log "no Docker engine with CDI fetched: the driver path's e2e will say why"
fi

# --- tox, in a venv of its own (Debian's Python refuses a system-wide pip install) ---------------
if ! command -v tox >/dev/null 2>&1; then
    venv="${GPUMEM_TOX_VENV:-${TMPDIR:-/tmp}/gpumem-tox}"
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
rc=0
tox -e test -- "${@:-tests}" || rc=$?
case "$rc" in
    0) log "tests passed" ;;
    5) log "FAILED: pytest collected no tests (exit 5)" ;;
    *) log "FAILED: tests exited $rc" ;;
esac
exit "$rc"
