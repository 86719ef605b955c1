#!/usr/bin/env bash
# The first device call of a session, under 10 minutes on one H100: does the library still hold
# on real CUDA (full acceptance), and the in-process A/B of the hooks with the async pair's split.
#   bash bench/gpu/first_call.sh        (results and logs under $OUT, else /tmp/gpumem-first-call)
# Every step has its own timeout; a step that fails or times out is reported and the next runs.
set -u
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/gpumem-first-call}"
mkdir -p "$out"
export PATH="/usr/local/nvidia/bin:$PATH"
status=()
failed=0

step() {   # step NAME SECONDS COMMAND...: run it, log to $out/NAME.log, remember how it ended
    local name=$1 secs=$2
    shift 2
    timeout --kill-after=10 "$secs" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    [ "$rc" = 0 ] || failed=1
    status+=("$(printf '%-12s rc=%-3s %s' "$name" "$rc" "$([ "$rc" = 124 ] && echo '(timed out)')")")
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/gpu.txt" 2>&1
step acceptance 260 python3 tests/gpu/acceptance.py --out "$out/acceptance"
step ab 150 python3 bench/gpu/run.py --ab --trials 5 --only none --skip-usable
step stats 60 python3 bench/gpu/run.py --trials 3 --only cudaMallocAsync --skip-usable --stats

echo "== $(date -u '+%Y-%m-%d %H:%M UTC') $(cat "$out/gpu.txt") library $(git rev-parse --short HEAD 2>/dev/null)"
grep -A14 '^check' "$out/acceptance.log" | cut -c1-120
grep -A5 '^in-process A/B' "$out/ab.log"
grep -E 'clock read|in gpumem' "$out/stats.log" | tail -4
printf '%s\n' "${status[@]}"
exit "$failed"
