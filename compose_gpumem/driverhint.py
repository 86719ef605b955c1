"""Whether this host may have an NVIDIA driver, answered from its device nodes alone.

It is :func:`compose_gpumem.hostfacts.nvml`'s first check, kept in a module that imports nothing
heavy: a size in ``x-gpu-memory`` needs the GPU's total only where there is a driver, and on a
host without one a plain ``config`` then imports neither hostfacts nor containers (dataclasses,
json, ctypes), which would cost it more than the rest of its Python (bench/RESULTS.md).
"""

from __future__ import annotations

import os

#: names another ``libnvidia-ml.so.1`` to read (the tests' stand-in): a driver is then assumed
ENV_NVML = "GPUMEM_NVML_LIBRARY"
#: Device nodes of a loaded NVIDIA driver (``/dev/dxg``: WSL2); without one NVML is not tried.
DRIVER_NODES = ("/dev/nvidiactl", "/dev/dxg")


def driver_present() -> bool:
    """``GPUMEM_NVML_LIBRARY`` is set, or a driver's device node exists."""
    return bool(os.environ.get(ENV_NVML)) or any(os.path.exists(node) for node in DRIVER_NODES)
