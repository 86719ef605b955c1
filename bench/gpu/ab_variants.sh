#!/usr/bin/env bash
# abhook.c's in-process A/B for several builds of the hooks on one machine, their processes
# interleaved, so the hooks' cost can be split: the extra call alone (nullhook.c), the library
# with no limit set (pass-through), with a limit, and any other build given as NAME=PATH.
#   bash bench/gpu/ab_variants.sh [TRIALS] [NAME=LIBPATH ...]      (table last)
# AB_MODES="launch async" runs those modes alone (default: async alloc info nvml launch).
set -u
cd "$(dirname "$0")/../.."
trials=${1:-5}
shift || true
tmp=$(mktemp -d)
libdirs=""
for d in /usr/local/nvidia/lib64 /usr/local/cuda/lib64/stubs; do [ -d "$d" ] && libdirs="$libdirs -L$d"; done
timeout 120 make -s -C libinterpose || exit 1
# shellcheck disable=SC2086
timeout 120 cc -O2 -o "$tmp/abhook" bench/gpu/abhook.c -ldl $libdirs -lcuda || exit 1
timeout 60 cc -O2 -shared -fPIC -o "$tmp/libnullhook.so" bench/gpu/nullhook.c -ldl || exit 1
lib=libinterpose/build/libgpumem.so
variants=("nullhook=$tmp/libnullhook.so" "gpumem-nolimit=$lib" "gpumem-limit=$lib" "$@")
for t in $(seq "$trials"); do
    for v in "${variants[@]}"; do
        name=${v%%=*} path=${v#*=}
        for mode in ${AB_MODES:-async alloc info nvml launch}; do
            case $mode in
                async) args=(1048576 21 20000) ;;
                launch) args=(0 21 20000) ;;
                alloc) args=(1048576 21 300) ;;
                *) args=(0 21 3000) ;;
            esac
            if [ "$name" = gpumem-nolimit ]; then
                line=$(env -u GPUMEM_LIMIT GPUMEM_STATE_DIR="$tmp/state" timeout 60 "$tmp/abhook" "$path" "$mode" "${args[@]}")
            else
                line=$(GPUMEM_LIMIT=0.95 GPUMEM_STATE_DIR="$tmp/state" timeout 60 "$tmp/abhook" "$path" "$mode" "${args[@]}")
            fi
            echo "$t $name $mode $line" | tee -a "$tmp/runs.txt"
        done
    done
done
echo
printf '%-18s %-6s %9s %9s %9s %s\n' variant mode plain_us hooked_us +ns/pair 'ratio med (min-max)'
python3 - "$tmp/runs.txt" <<'PY'
import statistics, sys
rows = {}
for ln in open(sys.argv[1]):
    t, name, mode, *kv = ln.split()
    d = dict(x.split("=") for x in kv)
    rows.setdefault((name, mode), []).append({k: float(v) for k, v in d.items()})
for (name, mode), runs in rows.items():
    a = statistics.median(r["a_us"] for r in runs)
    b = statistics.median(r["b_us"] for r in runs)
    rs = [r["ratio"] for r in runs]
    print(f"{name:<18} {mode:<6} {a:9.3f} {b:9.3f} {1000 * (b - a):9.1f} {statistics.median(rs):.3f} ({min(rs):.3f}-{max(rs):.3f})")
PY
rm -rf "$tmp"
