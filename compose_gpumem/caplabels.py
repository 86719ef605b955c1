"""The labels every capped container carries: what :mod:`compose_gpumem.containers` reads back
for admission, ``top`` and ``doctor``, written here for ``config``, ``override`` and ``up``
without the rest of that module (whose imports would slow every ``config`` down).

Every container the tools cap carries these labels (``gpumem-compose`` writes them into the
service, ``gpumem-docker run`` passes them with ``--label``):

================================  ===========================================================
``io.gpumem.version``             ``1``: the layout of the labels below
``io.gpumem.limit``               the cap's form, as the library gets it: container device
                                  index (``all``: every device) ``=`` the value as written,
                                  comma-separated: ``all=0.3``, ``0=0.5,1=8GiB``
``io.gpumem.promise``             what the container was promised per host GPU: the GPU's
                                  UUID (where NVML could tell when it was created), else its
                                  index as the host numbers it, else ``all`` (every GPU of the
                                  host), ``=`` the cap: ``GPU-8f...=0.3,GPU-1c...=0.3``
``io.gpumem.enforce``             how the cap is enforced: ``library`` (libgpumem.so)
``io.gpumem.state-dir``           where its ledger lives inside the container (``/run/gpumem``,
                                  a tmpfs of its own; see :mod:`compose_gpumem.inject`)
================================  ===========================================================

Plain ``key=value`` lists rather than JSON: a value never holds ``,`` or ``=``, ``docker ps
--filter label=...`` and ``docker inspect`` show them as they are, and Compose prints them
without quotes.
"""

from __future__ import annotations

from .records import Record

TYPE_CHECKING = False  # `typing` stays off the path of `config` (see options.py)
if TYPE_CHECKING:
    from typing import Iterable, Mapping

    from .validate import Limit

PREFIX = "io.gpumem."
VERSION = PREFIX + "version"
LIMIT = PREFIX + "limit"
PROMISE = PREFIX + "promise"
ENFORCE = PREFIX + "enforce"
STATE_DIR = PREFIX + "state-dir"
LABELS_VERSION = "1"
#: Every GPU of the host (a container given ``all``, where NVML could not list them).
ALL = "all"


def labels(
    limits: Mapping[int | None, Limit],
    promise: Mapping[str, Limit],
    *,
    state_dir: str,
    enforce: str = "library",
) -> dict[str, str]:
    """The labels of one capped container (sorted: stable text)."""
    form = {ALL if index is None else str(index): limit.text for index, limit in limits.items()}
    return {
        ENFORCE: enforce,
        LIMIT: _compact(form),
        PROMISE: _compact({gpu: limit.text for gpu, limit in promise.items()}),
        STATE_DIR: state_dir,
        VERSION: LABELS_VERSION,
    }


def _compact(data: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(data.items()))


class GpuNames(Record):
    """The host's GPUs as NVML numbers them: index -> UUID, and each GPU's memory in bytes.
    Empty where NVML cannot tell (no driver): GPUs then keep the names they were given."""

    FIELDS = ("uuids", "totals")
    __slots__ = FIELDS

    def __init__(
        self, uuids: Mapping[str, str] | None = None, totals: Mapping[str, int] | None = None
    ) -> None:
        self.uuids: Mapping[str, str] = uuids if uuids is not None else {}
        self.totals: Mapping[str, int] = totals if totals is not None else {}  # by UUID

    def key(self, gpu: str) -> str:
        """``gpu`` (an index, a UUID or ``all``) as sums compare it: the UUID where known."""
        return self.uuids.get(gpu, gpu)

    def every(self) -> list[str]:
        """Every GPU of the host by UUID, in NVML's order; empty when NVML cannot tell."""
        return list(self.uuids.values())

    def total(self, gpu: str) -> int | None:
        return self.totals.get(self.key(gpu))


def promise(shares: Iterable[tuple[str, Limit]], names: GpuNames) -> dict[str, Limit]:
    """Host GPU -> cap for labels: by UUID where ``names`` knows the GPU, ``all`` spread over
    every GPU NVML lists (kept as ``all`` when it lists none)."""
    out: dict[str, Limit] = {}
    for gpu, limit in shares:
        if gpu in (ALL, "*") and names.every():
            for uuid in names.every():
                out[uuid] = limit
        else:
            out[ALL if gpu == "*" else names.key(gpu)] = limit
    return out
