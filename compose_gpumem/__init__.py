"""gpumem-compose: a hard GPU-memory cap per container, declared in Compose files.

A service asks for its share with ``x-gpu-memory`` (a fraction ``0.3``, a percent ``"30%"``,
a size ``"12GiB"`` or a per-device mapping ``{"0": 0.5, "1": "8GiB"}``); a top-level
``x-gpu-memory`` is the default for every service that requests a GPU.  ``gpumem-compose``
resolves the files with the real Docker Compose, validates the values, and injects what the
cap needs (a read-only mount of ``libgpumem.so``, ``LD_PRELOAD`` and ``GPUMEM_*`` variables)
before handing the result back to Compose.  ``gpumem-docker run --gpu-memory V`` does the same
for one container.

Install and use::

    pip install '.[compose]'               # builds libinterpose; the extra brings Compose v2
    gpumem-compose install-lib             # once per host, as root: /usr/local/lib/gpumem/libgpumem.so
    gpumem-compose up -d                   # any Compose command; the caps are injected
    gpumem-compose config                  # what Compose is given (--format yaml|json)
    gpumem-docker run --gpus all --gpu-memory 0.3 IMAGE CMD

``GPUMEM_LIB_DIR`` moves the host directory (``install-lib --dir DIR`` fills it).  Before any
command that starts containers the tool checks the library is there: a bind mount of a
missing directory would silently give an empty one and no cap.

Committed overrides, for people and CI that run plain ``docker compose``::

    gpumem-compose -f compose.yaml override -o gpumem.override.yaml          # write, commit
    docker compose -f compose.yaml -f gpumem.override.yaml up -d             # same containers
    gpumem-compose -f compose.yaml override --check -o gpumem.override.yaml  # CI, pre-commit

The override holds only the additions; its mount source is written
``${GPUMEM_LIB_DIR:-/usr/local/lib/gpumem}`` so the file is the same on every host.

Modules, one job each: :mod:`errors`, :mod:`compose` (find and run the real Compose),
:mod:`yamlio` (load and emit), :mod:`validate` (values, schema, overcommit, NVML),
:mod:`inject` (pure: resolved services -> new services), :mod:`project` (one resolved
project, parsed as little as needed), :mod:`override`, :mod:`library` (where the shared
library lives on the host), :mod:`options` (Compose's global options, declared once), and the
two CLIs, :mod:`cli` (started by :mod:`launch`) and :mod:`docker_cli`.
"""

__version__ = "0.1.0"
