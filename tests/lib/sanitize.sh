#!/usr/bin/env bash
# The C library's tests against ASan and UBSan builds of libgpumem.so (tox -e sanitize).
#   bash tests/lib/sanitize.sh [pytest args]
# ASan's runtime must come first in the process: it is preloaded before the library.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(mktemp -d)"
chmod 755 "$out"   # a test runs the library as another user
trap 'rm -rf "$out"' EXIT
make -s -C libinterpose BUILD="$out/ubsan" READER_LDFLAGS= CFLAGS="-O1 -g -fsanitize=undefined -fno-sanitize-recover=all"
make -s -C libinterpose BUILD="$out/asan" READER_LDFLAGS= CFLAGS="-O1 -g -fsanitize=address"
echo "== UBSan"
GPUMEM_TEST_LIB="$out/ubsan/libgpumem.so" python -m pytest -q tests/lib "$@"
echo "== ASan"
GPUMEM_TEST_LIB="$out/asan/libgpumem.so" GPUMEM_TEST_PRELOAD="$(${CC:-cc} -print-file-name=libasan.so)" \
    ASAN_OPTIONS=detect_leaks=0 python -m pytest -q tests/lib "$@"
