#!/bin/bash
# Quick look at libgpumem.so on a real NVIDIA GPU (not run by CI): every path through the real
# driver with the test clients, NVML, nvidia-smi and PyTorch's three allocators.
#   bash tests/lib/gpu_smoke.sh [limit]      (default limit 8GiB; output on stdout)
set -u
LIMIT=${1:-8GiB}
B=${TMPDIR:-/tmp}/gpumem-smoke
rm -rf "$B" && mkdir -p "$B"
make -s -C libinterpose BUILD="$B/lib" || exit 1
LIBCUDA=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
cc -O2 -o "$B/cuclient" tests/lib/cuclient.c "$LIBCUDA" -ldl -lpthread || exit 1
cc -O2 -o "$B/nvclient" tests/lib/nvclient.c -ldl || exit 1
export GPUMEM_STATE_DIR="$B/state" GPUMEM_LOG=${GPUMEM_LOG:-info}
P="$B/lib/libgpumem.so"
run() { echo "### $*"; env LD_PRELOAD="$P" GPUMEM_LIMIT="$LIMIT" "$@" 2>&1; echo "### rc=$?"; }
for mode in link dlsym gpa1 gpa2; do
  run "$B/cuclient" mode=$mode init dev=0 primary info totalmem alloc=7G alloc=1G free alloc=512M info
done
run "$B/cuclient" mode=gpa2 flags=2 init dev=0 primary async=7G pool=1G freeasync info
run "$B/cuclient" mode=gpa2 init dev=0 primary vmm=4G vmm=4G vmmfree info ctx alloc=1G info destroy primary info
echo "### no preload"; GPUMEM_LIMIT= "$B/nvclient"; nvidia-smi --query-gpu=memory.total,memory.used --format=csv
run "$B/nvclient"
run nvidia-smi --query-gpu=memory.total,memory.used,memory.free --format=csv
# holder + nvidia-smi: used follows another process's allocation
env LD_PRELOAD="$P" GPUMEM_LIMIT="$LIMIT" "$B/cuclient" init dev=0 primary alloc=3G hold >/dev/null 2>&1 &
H=$!; sleep 3
run nvidia-smi --query-gpu=memory.total,memory.used --format=csv
run "$B/cuclient" init dev=0 primary info alloc=5G alloc=4G
kill -9 $H; wait $H 2>/dev/null
run "$B/cuclient" init dev=0 primary info alloc=7G
cat > "$B/fill.py" <<'PY'
import os, sys, torch
f, t = torch.cuda.mem_get_info()
print("mem_get_info total", t, "free", f, "conf", os.environ.get("PYTORCH_CUDA_ALLOC_CONF"))
xs = []
side = torch.cuda.Stream() if os.environ.get("SIDE_STREAM") else None
try:
    while True:
        if side is not None:
            with torch.cuda.stream(side):
                xs.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
        else:
            xs.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
except torch.OutOfMemoryError as e:
    print("OutOfMemoryError after", len(xs) * 256, "MiB:", str(e).splitlines()[0][:160])
except Exception as e:
    print("OTHER", type(e).__name__, str(e)[:300])
PY
for conf in "" "expandable_segments:True" "backend:cudaMallocAsync"; do
  run env PYTORCH_CUDA_ALLOC_CONF="$conf" python3 "$B/fill.py"
done
run env PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync SIDE_STREAM=1 python3 "$B/fill.py"
