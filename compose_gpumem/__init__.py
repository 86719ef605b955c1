"""gpumem-compose: a hard GPU-memory cap per container, declared in Compose files.

A service asks for its share with ``x-gpu-memory`` (a fraction ``0.3``, a percent ``"30%"``,
a size ``"12GiB"`` or a per-device mapping ``{"0": 0.5, "1": "8GiB"}``); a top-level
``x-gpu-memory`` is the default for every service that requests a GPU.  ``gpumem-compose``
resolves the files with the real Docker Compose, validates the values, and injects what the
cap needs (a read-only mount of ``libgpumem.so``, ``LD_PRELOAD`` and ``GPUMEM_*`` variables)
before handing the result back to Compose.  ``gpumem-docker run --gpu-memory V`` does the same
for one container.

Modules, one job each: :mod:`errors`, :mod:`compose` (find and run the real Compose),
:mod:`yamlio` (load and emit), :mod:`validate` (values, schema, overcommit, NVML),
:mod:`inject` (pure: resolved services -> new services), :mod:`override`, :mod:`library`
(where the shared library lives on the host) and the two CLIs, :mod:`cli` and :mod:`docker_cli`.
"""

__version__ = "0.1.0"
