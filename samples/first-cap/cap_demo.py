"""What a capped container sees: the GPU's total per nvidia-smi and per CUDA, then allocations
of 256 MiB until CUDA refuses one with its own out-of-memory error.

CUDA is reached through ctypes, so the image needs Python and nothing else (the NVIDIA runtime
mounts libcuda.so.1 and nvidia-smi into the container).  With PyTorch, CuPy or JAX the same
refusal surfaces as their own out-of-memory error (see the `torch` service).
"""

import ctypes
import shutil
import subprocess
import sys

MiB = 1 << 20
CHUNK = 256 * MiB
CUDA_ERROR_OUT_OF_MEMORY = 2


def main() -> int:
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,memory.total,memory.used", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in (smi.stdout or smi.stderr).strip().splitlines():
            print(f"nvidia-smi: GPU {line.strip()}")
    else:
        print("nvidia-smi: not in this container")
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as error:
        print(f"cannot load libcuda.so.1 ({error}): the container got no NVIDIA GPU", file=sys.stderr)
        return 1

    def call(name: str, *args: object) -> int:
        return int(getattr(cuda, name)(*args))

    device, context = ctypes.c_int(), ctypes.c_void_p()
    for name, args in (
        ("cuInit", (0,)),
        ("cuDeviceGet", (ctypes.byref(device), 0)),
        ("cuDevicePrimaryCtxRetain", (ctypes.byref(context), device)),
        ("cuCtxSetCurrent", (context,)),
    ):
        code = call(name, *args)
        if code:
            print(f"{name} failed: CUDA error {code}", file=sys.stderr)
            return 1
    total, free = ctypes.c_size_t(), ctypes.c_size_t()
    call("cuDeviceTotalMem_v2", ctypes.byref(total), device)
    call("cuMemGetInfo_v2", ctypes.byref(free), ctypes.byref(ctypes.c_size_t()))
    print(f"CUDA: total {total.value / MiB:.0f} MiB, free {free.value / MiB:.0f} MiB")
    held = []
    while True:
        pointer = ctypes.c_uint64()
        code = call("cuMemAlloc_v2", ctypes.byref(pointer), ctypes.c_size_t(CHUNK))
        if code:
            name = "CUDA_ERROR_OUT_OF_MEMORY" if code == CUDA_ERROR_OUT_OF_MEMORY else f"CUDA error {code}"
            print(f"allocated {len(held) * CHUNK / MiB:.0f} MiB, then cuMemAlloc({CHUNK // MiB} MiB): {name}")
            return 0 if code == CUDA_ERROR_OUT_OF_MEMORY else 1
        held.append(pointer.value)


if __name__ == "__main__":
    sys.exit(main())
