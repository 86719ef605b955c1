"""Host-wide admission: no GPU is promised more than it holds, across every project on the host.

Before ``up``, ``run``, ``start``, ``restart``, ``create`` (Compose) and ``run`` / ``create``
(``gpumem-docker``) start anything, the caps of the engine's running capped containers (any
project, and ``gpumem-docker`` ones; :mod:`compose_gpumem.containers` reads their labels) are
added per GPU to those of the containers about to start.  Past a GPU's memory the start is
refused with one line naming who holds it; ``--allow-overcommit`` lets it through with a
warning.  Running GPU containers with no cap on the same GPU get a warning: they can take it.

:func:`tally` is the sum (pure: unit-tested).  A GPU is named by UUID where NVML knows it, so a
container labelled by index and one labelled by UUID meet on the same GPU.  A fraction counts
``fraction x total``; a size counts as itself (at most the GPU: the library clamps it).  Where
NVML cannot tell a GPU's memory, fractions are added alone and sizes are named in a warning:
they cannot be compared with fractions there.

Two starts at once must not both pass: :func:`host_lock` is one ``flock`` per host, taken
before the check and held until the started containers are running (or the command that
starts them has exited, or :data:`HOLD_LIMIT_S` has passed), by a small watcher process, so
that ``gpumem-docker run`` can still ``exec`` Docker and ``up`` stay attached.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import containers
from .containers import ALL, Capped, GpuNames, Uncapped
from .errors import GpumemError, Overcommit
from .validate import Limit

if TYPE_CHECKING:
    from . import compose
    from .project import Project
    from .starting import Start

ENV_LOCK = "GPUMEM_ADMISSION_LOCK"
LOCK_DIRS = ("/run/lock", "/var/lock", "/tmp")
LOCK_NAME = "gpumem-admission.lock"
WAIT_LIMIT_S = 300.0
#: how long the lock may be held for containers that do not show up running
HOLD_LIMIT_S = 60.0
POLL_S = 0.2


@dataclass(frozen=True)
class Holder:
    """One container's promise: GPU (UUID, index, or ``all``) -> cap."""

    name: str
    promise: Mapping[str, Limit]
    note: str = ""  # why it starts, when not named: "a dependency of trainer"


@dataclass
class Verdict:
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _amount(limit: Limit, total: int | None) -> float | None:
    """What a cap takes of a GPU, as a fraction of it; ``None`` for a size on a GPU of unknown
    memory."""
    if limit.fraction is not None:
        return limit.fraction
    if total and limit.size is not None:
        return min(limit.size, total) / total
    return None


def tally(
    holding: Sequence[Holder], starting: Sequence[Holder], names: GpuNames, uncapped: Sequence[Uncapped] = ()
) -> Verdict:
    """Refusals for every GPU that ``starting`` would take past its memory, with warnings."""
    verdict = Verdict()

    def keyed(holders: Sequence[Holder]) -> list[tuple[Holder, dict[str, Limit]]]:
        return [(h, {names.key(gpu): limit for gpu, limit in h.promise.items()}) for h in holders]

    held, new = keyed(holding), keyed(starting)
    touched = {gpu for _, promise in new for gpu in promise}
    if ALL in touched:
        touched |= set(names.every()) or {gpu for _, p in held for gpu in p}
    gpus = sorted(touched - {ALL}) or sorted(touched)
    for gpu in gpus:

        def on(group: list[tuple[Holder, dict[str, Limit]]], gpu: str = gpu) -> list[tuple[Holder, Limit]]:
            return [(h, p.get(gpu) or p[ALL]) for h, p in group if gpu in p or ALL in p]

        holders, comers = on(held), on(new)
        if not comers:
            continue
        total = names.totals.get(gpu)
        parts = [(h, limit, _amount(limit, total)) for h, limit in holders + comers]
        known = sum(amount for _, _, amount in parts if amount is not None)
        where = _gpu_text(gpu, names)
        unsized = [_shown(h, limit) for h, limit, amount in parts if amount is None]
        if unsized:
            verdict.warnings.append(
                f"{where}: its memory is unknown (NVML cannot tell), so sizes cannot be compared with "
                f"fractions there: {', '.join(unsized)} not counted"
            )
        if known > 1 + 1e-9:

            def listing(group: list[tuple[Holder, Limit]]) -> str:
                return ", ".join(_shown(h, limit) for h, limit in group) or "none"

            verdict.refusals.append(
                f"{where} would be promised {_pct(known)} of its memory "
                f"(held by {listing(holders)}; starting {listing(comers)})"
            )
    for user in uncapped:
        shared = [g for g in gpus if g in {names.key(u) for u in user.gpus} or ALL in user.gpus or g == ALL]
        if shared:
            verdict.warnings.append(
                f"container {user.name} uses {_gpu_text(shared[0], names)} with no cap: it can take the "
                "memory promised to the others"
            )
    return verdict


def _shown(holder: Holder, limit: Limit) -> str:
    """A holder and its cap in a message: ``proj-db-1=0.6 (a dependency of trainer)``."""
    return f"{holder.name}={limit.text}" + (f" ({holder.note})" if holder.note else "")


def _gpu_text(gpu: str, names: GpuNames) -> str:
    if gpu == ALL:
        return "every GPU"
    index = next((i for i, uuid in names.uuids.items() if uuid == gpu), None)
    return f"GPU {index} ({gpu})" if index is not None else f"GPU {gpu}"


# --------------------------------------------------------------------------------- the engine


def holders(found: Iterable[Capped], leave_out: Iterable[str] = ()) -> list[Holder]:
    """The running capped containers as holders, but for the ids in ``leave_out`` (those the
    start replaces)."""
    skipped = set(leave_out)
    return [Holder(c.name, c.promise) for c in found if c.running and c.id not in skipped and not c.problem]


def decide(
    starting: Sequence[Holder],
    *,
    replaced: Iterable[str] = (),
    allow_overcommit: bool = False,
    names: GpuNames | None = None,
    found: containers.Inventory | None = None,
    docker: str = "docker",
    prog: str = "gpumem-compose",
) -> None:
    """Refuse (:class:`Overcommit`) or pass, with warnings on stderr.

    ``replaced``: container ids that the start stops or recreates (the project's own);
    ``found``: the engine's containers, when already read."""
    names = names if names is not None else containers.gpu_names()
    found = found if found is not None else containers.inventory(docker=docker)
    unreadable = [c for c in found.capped if c.problem and c.running]
    verdict = tally(
        holders(found.capped, replaced), starting, names, [u for u in found.uncapped if u.running]
    )
    for capped in unreadable:
        verdict.warnings.append(f"container {capped.name}: {capped.problem}; its promise is not counted")
    for line in verdict.warnings:
        print(f"{prog}: warning: {line}", file=sys.stderr)
    if verdict.refusals:
        if not allow_overcommit:
            raise Overcommit(
                "; ".join(verdict.refusals) + "; stop one of them, lower the caps or pass --allow-overcommit"
            )
        for line in verdict.refusals:
            print(f"{prog}: warning: --allow-overcommit: {line}", file=sys.stderr)


# --------------------------------------------------------------------------------- the lock


def lock_path() -> str:
    """``$GPUMEM_ADMISSION_LOCK``, else the first writable lock directory's file."""
    given = os.environ.get(ENV_LOCK)
    if given:
        return given
    for directory in LOCK_DIRS:
        if os.access(directory, os.W_OK | os.X_OK):
            return os.path.join(directory, LOCK_NAME)
    return os.path.join(LOCK_DIRS[-1], LOCK_NAME)


def host_lock(*, prog: str = "gpumem-compose") -> int:
    """Take the host's admission lock; its descriptor (close it, or :func:`hand_over` it)."""
    path = lock_path()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as error:
        raise GpumemError(f"cannot open the admission lock {path}: {error.strerror}") from error
    try:
        os.fchmod(fd, 0o666)  # other users start containers too; fails harmlessly when not ours
    except OSError:
        pass
    deadline = time.monotonic() + WAIT_LIMIT_S
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not said:
                print(f"{prog}: waiting for another start on this host to finish ({path})", file=sys.stderr)
                said = True
            if time.monotonic() > deadline:
                os.close(fd)
                raise GpumemError(
                    f"another start held the admission lock {path} for {WAIT_LIMIT_S:.0f}s"
                ) from None
            time.sleep(POLL_S)


def hand_over(fd: int, before: Iterable[str], expected: int, *, docker: str = "docker") -> None:
    """Keep the lock held, in a watcher process, until ``expected`` capped containers not in
    ``before`` (ids) are running, this process has ended (Docker ``exec``'d in its place
    included), or :data:`HOLD_LIMIT_S` has passed; this process's descriptor is closed."""
    parent = os.getpid()
    seen = set(before)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        os.close(fd)
        return
    try:  # the watcher: no terminal, no pipes of the caller held open
        null = os.open(os.devnull, os.O_RDWR)
        for stream in (0, 1, 2):
            os.dup2(null, stream)
        os.setsid()
        deadline = time.monotonic() + HOLD_LIMIT_S
        while time.monotonic() < deadline and os.getppid() == parent:
            try:
                running = containers.inventory(docker=docker).capped
            except GpumemError:
                running = ()
            if sum(1 for c in running if c.running and c.id not in seen) >= expected:
                break
            time.sleep(POLL_S)
    finally:
        os._exit(0)


# ------------------------------------------------------------------------------ the commands


def _read_engine(docker: str, prog: str) -> containers.Inventory:
    """The engine's containers; when it does not answer, nothing (the start that follows fails
    with Docker's own message), and a warning."""
    try:
        return containers.inventory(docker=docker)
    except GpumemError as error:
        print(f"{prog}: warning: host-wide admission skipped: {error}", file=sys.stderr)
        return containers.Inventory()


def enabled() -> bool:
    """Off with ``GPUMEM_HOST_CHECKS=0``, as the other host checks (:mod:`prereq`)."""
    return os.environ.get("GPUMEM_HOST_CHECKS", "1") != "0"


def project_name(project: Project, options: compose.Options) -> str:
    """The project's name: ``-p``, ``COMPOSE_PROJECT_NAME``, else the ``name:`` Compose resolved."""
    given = options.project_name or os.environ.get("COMPOSE_PROJECT_NAME")
    if given:
        return given
    for line in project.text.splitlines():
        if line.startswith("name:"):
            return line[5:].strip().strip("'\"")
        if line.startswith("services:"):
            break
    return ""


def compose_start(
    project: Project, chosen: Sequence[Start], *, options: compose.Options, allow: bool
) -> None:
    """Admit ``chosen`` (what a Compose start of ``project`` starts, :func:`starting.starts`) or
    raise; on success the lock is held by a watcher until the containers run or Compose ends
    (see :func:`hand_over`).  The labels of the injection then name GPUs by UUID where NVML
    knows them."""
    names = containers.gpu_names()
    project.names = names
    if not enabled():
        return
    name = project_name(project, options)
    starting: list[Holder] = []
    for start in chosen:
        plan = project.plans.get(start.service)
        if plan is None:
            continue
        promise = containers.promise([(s.gpu, s.limit) for s in plan.shares(start.service)], names)
        numbers = ["run"] if start.oneoff else [str(n) for n in range(1, plan.replicas + 1)]
        note = f"a dependency of {start.because}" if start.because else ""
        starting += [Holder(f"{name}-{start.service}-{n}", promise, note) for n in numbers]
    if not starting:
        return
    services = {start.service for start in chosen if not start.oneoff}
    fd = host_lock()
    try:
        found = _read_engine("docker", "gpumem-compose")
        replaced = [
            c.id for c in found.capped if c.project == name and c.service in services and not c.oneoff
        ]
        decide(starting, replaced=replaced, allow_overcommit=allow, names=names, found=found)
    except BaseException:
        os.close(fd)
        raise
    hand_over(fd, [c.id for c in found.capped if c.running], len(starting))


def docker_start(
    promise: Mapping[str, Limit], *, name: str, allow_overcommit: bool, docker: str, names: GpuNames
) -> None:
    """Admit ``gpumem-docker run|create`` of one capped container, or raise."""
    if not enabled():
        return
    fd = host_lock(prog="gpumem-docker")
    try:
        found = _read_engine(docker, "gpumem-docker")
        decide(
            [Holder(name or "the new container", promise)],
            allow_overcommit=allow_overcommit,
            names=names,
            found=found,
            prog="gpumem-docker",
        )
    except BaseException:
        os.close(fd)
        raise
    hand_over(fd, [c.id for c in found.capped if c.running], 1, docker=docker)
