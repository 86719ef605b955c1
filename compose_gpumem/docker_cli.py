"""``gpumem-docker``: ``docker`` with ``run --gpu-memory V`` turned into a hard GPU-memory cap.

Usage::

    gpumem-docker run [docker run options] --gpu-memory V IMAGE [COMMAND [ARG...]]

``--gpu-memory`` (``--gpu-memory=V`` too) takes what ``x-gpu-memory`` takes: ``0.3``,
``30%``, ``12GiB`` or a per-device mapping as JSON (``'{"0": 0.5, "1": "8GiB"}'``).  It is
removed and replaced by a read-only bind ``--mount`` of ``<lib dir>/libgpumem.so`` at
``/opt/gpumem/libgpumem.so`` (the file, see :func:`library_mount`), a tmpfs of the container's own at
``/run/gpumem`` for its ledger, ``-e`` for ``LD_PRELOAD`` and ``GPUMEM_*``, and the labels of
:mod:`compose_gpumem.containers`; every other argument reaches ``docker run`` untouched, in
order, and ``docker`` replaces this process, so signals, the terminal and the exit code are Docker's own.  An
``LD_PRELOAD`` given with ``-e`` or in an ``--env-file`` is kept behind ours.  Other subcommands (and
``run`` without ``--gpu-memory``) go to ``docker`` as they are.  ``GPUMEM_DOCKER_BIN`` names
another docker binary.

``--enforce MODE`` and ``--gpu-memory-request V`` are ``x-gpu-memory-enforce`` and
``x-gpu-memory-request`` of a compose file, decided by :func:`enforce.decide` with the same
rules; on the driver path the GPUs asked for become ``--device nvidia.com/gpu=<UUID>`` with the
two ``NVIDIA_GPU_MEMORY_*`` variables, as :func:`enforce.apply` does for a service.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import NamedTuple, Sequence

from . import containers, enforce, inject, library
from .errors import GpumemError, NoGpuRequest, UsageError
from .validate import parse_value

PROG = "gpumem-docker"
OPTION = "--gpu-memory"
#: ours too: start even when the host's GPUs would be promised more than they hold
ALLOW = "--allow-overcommit"
#: ours too, as ``x-gpu-memory-enforce`` and ``x-gpu-memory-request`` in a compose file
ENFORCE = "--enforce"
REQUEST = "--gpu-memory-request"
#: our options that take a value, taken out before docker sees them
OURS_WITH_VALUE = (OPTION, ENFORCE, REQUEST)
#: ``docker run`` / ``docker create`` options that take no value; every other option does.
RUN_FLAGS = frozenset(
    "-d --detach -i --interactive -t --tty --rm --privileged --init --read-only -P --publish-all "
    "--no-healthcheck --oom-kill-disable --sig-proxy --disable-content-trust -q --quiet --help "
    "--use-api-socket".split()
)
SHORT_FLAGS = frozenset("ditPq")
#: docker's global options that take a value (before the subcommand).
GLOBAL_WITH_VALUE = frozenset(
    "-c --context --config -H --host -l --log-level --tlscacert --tlscert --tlskey".split()
)
STARTS = {("run",), ("container", "run"), ("create",), ("container", "create")}


def _subcommand(args: list[str]) -> tuple[int, int]:
    """Where the subcommand starts and where its own arguments start."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in GLOBAL_WITH_VALUE else 1
    if i < len(args) and args[i] == "container" and i + 1 < len(args):
        return i, i + 2
    return i, i + 1


def _takes_value(arg: str) -> bool:
    if arg.startswith("--"):
        return "=" not in arg and arg not in RUN_FLAGS
    letters = arg[1:]
    for position, letter in enumerate(letters):
        if letter not in SHORT_FLAGS:
            return position == len(letters) - 1
    return False


def rewrite(
    args: Sequence[str],
    *,
    lib_dir: str | None = None,
    environ: dict[str, str] | None = None,
    names: containers.GpuNames | None = None,
    decision: enforce.Decision | None = None,
) -> list[str]:
    """The docker arguments with ``--gpu-memory`` replaced by the injection (pure function);
    ``names``: the host's GPUs, for labels naming them by UUID; ``decision``: how the cap is
    enforced (``None``: the library)."""
    return rewrite_and_plan(args, lib_dir=lib_dir, environ=environ, names=names, decision=decision).args


class Rewritten(NamedTuple):
    args: list[str]
    plan: inject.Plan | None  # None: nothing capped
    allow_overcommit: bool = False
    name: str = ""  # --name, for messages
    enforce: str = "auto"  # --enforce
    request: str | None = None  # --gpu-memory-request


def rewrite_and_plan(
    args: Sequence[str],
    *,
    lib_dir: str | None = None,
    environ: dict[str, str] | None = None,
    names: containers.GpuNames | None = None,
    decision: enforce.Decision | None = None,
) -> Rewritten:
    """:func:`rewrite`, the container's plan, and our own options (taken out):
    ``--allow-overcommit``, ``--enforce MODE``, ``--gpu-memory-request V``.

    With a ``decision`` for the driver path, the GPUs asked for (``--gpus``, CDI devices) become
    CDI devices by UUID and the two ``NVIDIA_GPU_MEMORY_*`` variables are set, as
    :func:`enforce.apply` does for a service; a ``driver``-only decision leaves the library out."""
    args = list(args)
    environ = dict(os.environ) if environ is None else environ
    start, options = _subcommand(args)
    if tuple(args[start:options]) not in STARTS:
        return Rewritten(args, None)
    value: str | None = None
    ours: dict[str, str] = {}  # --enforce, --gpu-memory-request
    driver = decision is not None and decision.driver
    allow = False
    name = ""
    kept: list[str] = []
    preload: list[str] = []
    env_files: list[str] = []
    gpu = False
    own: dict[str, str] = {}  # -e of a variable --gpu-memory decides, set by hand
    placed: list[tuple[str, int, int]] = []  # where those pairs are in `kept`: variable, start, length
    asked: list[str] = []  # the GPUs asked for: --gpus values, CDI devices, NVIDIA_VISIBLE_DEVICES
    i = options
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        if arg == ALLOW:
            allow = True
            i += 1
            continue
        flag = arg.split("=", 1)[0]
        if flag in OURS_WITH_VALUE:
            if "=" in arg:
                ours[flag] = arg.split("=", 1)[1]
                i += 1
            elif i + 1 < len(args):
                ours[flag] = args[i + 1]
                i += 2
            else:
                raise UsageError(f"{flag} needs a value")
            continue
        pair = [arg, args[i + 1]] if _takes_value(arg) and i + 1 < len(args) else [arg]
        device = ""
        if arg == "--device" and len(pair) == 2:
            device = pair[1]
        elif arg.startswith("--device="):
            device = arg[len("--device=") :]
        if (
            arg.startswith(("--gpus", "--runtime=nvidia"))
            or pair == ["--runtime", "nvidia"]
            or device.startswith(inject.CDI_GPU)
        ):
            gpu = True
        if arg.startswith("--gpus"):
            asked.append(_gpus_value(arg.split("=", 1)[1] if "=" in arg else pair[-1]))
        elif device.startswith(inject.CDI_GPU):
            asked.append(device[len(inject.CDI_GPU) :].split(":")[0])
        if driver and (arg.startswith("--gpus") or device.startswith(inject.CDI_GPU)):
            i += len(pair)  # the driver path asks for the GPUs as CDI devices by UUID, below
            continue
        if pair[0] == "--env-file" and len(pair) == 2:
            env_files.append(pair[1])
        elif pair[0].startswith("--env-file="):
            env_files.append(pair[0].split("=", 1)[1])
        if pair[0] == "--name" and len(pair) == 2:
            name = pair[1]
        elif pair[0].startswith("--name="):
            name = pair[0][len("--name=") :]
        env = _env_assignment(pair)
        if env is not None and env.startswith("NVIDIA_VISIBLE_DEVICES="):
            asked.append(env.split("=", 1)[1])
        if env is not None and env.split("=", 1)[0] == "LD_PRELOAD":
            preload.append(env.split("=", 1)[1] if "=" in env else environ.get("LD_PRELOAD", ""))
        elif env is not None and re.fullmatch(_declared_variables(driver), env.split("=", 1)[0]):
            variable, _, text = env.partition("=")
            own[variable] = text if "=" in env else environ.get(variable, "")
            kept += pair  # --gpu-memory wins when given (see below); else kept as is
            placed.append((variable, len(kept) - len(pair), len(pair)))
        else:
            kept += pair
        i += len(pair)
    value = ours.get(OPTION)
    mode = enforce.parse_mode(ours.get(ENFORCE, "auto"), key=ENFORCE)
    if value is None:
        if len(ours) > 0:
            raise UsageError(f"{' and '.join(ours)} without {OPTION}: there is no cap to enforce")
        return Rewritten([a for a in args if a != ALLOW] if allow else args, None)
    if not preload:
        preload = _env_file_preload(env_files, environ)
    limits = parse_value(_decode(value), file=OPTION)
    if not gpu:
        raise NoGpuRequest(
            "needs a GPU: add `--gpus all` (or `--gpus device=0`) to `docker run`", value=value, key=OPTION
        )
    plan = inject.Plan(limits, _request(asked))
    # One rule for both tools (inject.replaced): the declared cap wins over its variables set by
    # hand, as x-gpu-memory wins over a service's own environment in gpumem-compose.
    hand_set = {**_env_file_values(env_files, environ), **own}
    library_path = decision is None or decision.library
    taken = inject.replaced(hand_set, plan) if library_path else {}
    if decision is not None and decision.driver:
        taken.update({v: (hand_set[v], str(n)) for v, n in decision.env.items() if v in hand_set})
    changed = inject.conflicts(taken)
    if changed:
        print(f"gpumem-docker: warning: {OPTION} {value} wins over -e {changed}", file=sys.stderr)
    for variable, start_at, length in reversed(placed):
        if variable in taken:
            del kept[start_at : start_at + length]
    added: list[str] = []
    if library_path:
        added += [
            "--mount",
            library_mount(lib_dir or library.host_dir()),
            "--mount",
            f"type=tmpfs,destination={inject.LEDGER_DIR}",
            "-e",
            f"LD_PRELOAD={inject.preload(' '.join(p for p in preload if p) or None)}",
        ]
        cap_env = {**inject.cap_environment(plan), **{v: new for v, (_, new) in taken.items()}}
        for variable, text in cap_env.items():
            if not variable.startswith("NVIDIA_"):
                added += ["-e", f"{variable}={text}"]
    if decision is not None and decision.driver:
        for variable, number in decision.env.items():
            added += ["-e", f"{variable}={number}"]
        for device in decision.cdi_devices:
            added += ["--device", device]
    labels = plan.labels("", names)
    if decision is not None:
        labels[containers.ENFORCE] = decision.mode  # what `top` and admission read
    for key, text in labels.items():
        added += ["--label", f"{key}={text}"]
    return Rewritten(args[:options] + added + kept + args[i:], plan, allow, name, mode, ours.get(REQUEST))


def _declared_variables(driver: bool) -> str:
    """The variables ``--gpu-memory`` decides, which a hand-set ``-e`` does not override:
    the library's caps, and on the driver path NVIDIA's pair."""
    library = r"GPUMEM_LIMIT(_[0-9]+)?|GPUMEM_STATE_DIR"
    return library + r"|NVIDIA_GPU_MEMORY_(REQUEST|LIMIT)" if driver else library


def library_mount(lib_dir: str) -> str:
    """``--mount`` of the library file, read-only.  The file and ``--mount``: ``-v`` creates a
    missing source as a directory, and a directory (or one without the library) mounts fine
    and leaves the container uncapped; a missing file stops it with Docker's own error."""
    import csv
    import io

    fields = [
        "type=bind",
        f"source={lib_dir.rstrip('/')}/{library.NAME}",
        f"target={inject.LIBRARY}",
        "readonly",
    ]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)  # Docker reads --mount as one CSV line
    return out.getvalue()


def _gpus_value(text: str) -> str:
    """``--gpus`` as a device list: ``all``, a count ``N`` (as ``#N``), ``device=0,1``
    (quotes and ``capabilities=`` as Docker takes them)."""
    text = text.strip().strip("'\"")
    for part in text.split('"'):
        if part.startswith("device="):
            return part[len("device=") :].rstrip(",")
    if text.startswith("device="):
        return text[len("device=") :].split(",capabilities", 1)[0]
    if text.isdigit():
        return f"#{text}"
    return "all"


def _request(asked: list[str]) -> inject.GpuRequest:
    """The GPUs of ``asked`` (see :func:`rewrite_and_plan`) as one request."""
    ids: list[str] = []
    for item in asked:
        if item in ("all", "") or item.startswith("#-"):
            return inject.GpuRequest()
        if item.startswith("#"):
            return inject.GpuRequest(count=int(item[1:]))
        ids += [v.strip() for v in item.split(",") if v.strip()]
    return inject.GpuRequest(tuple(ids)) if ids else inject.GpuRequest()


def _env_assignment(pair: list[str]) -> str | None:
    arg = pair[0]
    if arg in ("-e", "--env") and len(pair) == 2:
        return pair[1]
    if arg.startswith("--env="):
        return arg[len("--env=") :]
    if arg.startswith("-e") and len(arg) > 2 and not arg.startswith("--"):
        return arg[2:]
    return None


def _env_file_preload(paths: list[str], environ: dict[str, str]) -> list[str]:
    """``LD_PRELOAD`` as ``--env-file`` files set it (the last one wins, as in Docker): our
    ``-e`` would otherwise replace it."""
    found = _env_file_values(paths, environ, ("LD_PRELOAD",))
    return [found["LD_PRELOAD"]] if "LD_PRELOAD" in found else []


def _env_file_values(
    paths: list[str], environ: dict[str, str], names: tuple[str, ...] = ("GPUMEM_", "NVIDIA_GPU_MEMORY_")
) -> dict[str, str]:
    """The variables ``--env-file`` files set whose names start with one of ``names``, as
    Docker reads them (the last one wins; a bare name takes the caller's value)."""
    found: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as lines:
                for line in lines:
                    variable, eq, text = line.strip().partition("=")
                    if variable.startswith(names):
                        found[variable] = text if eq else environ.get(variable, "")
        except OSError:
            continue  # docker reports it
    return found


def _decode(value: str) -> object:
    if value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError as error:
            raise UsageError(
                f"{OPTION}: the per-device form is JSON, e.g. '{{\"0\": 0.5}}': {error}"
            ) from error
    return value


HELP_NOTE = f"""\
{PROG}: docker, with more options for `run` and `create`:
  {OPTION} V    a hard GPU-memory cap for the container (needs --gpus): 0.3, 30%,
                  12GiB, or per device as JSON, '{{"0": 0.5, "1": "8GiB"}}'
  {ENFORCE} MODE  auto (default), library, driver or both: who enforces it (the library,
                  NVIDIA's per-cgroup limit, or both; auto: both where the host has
                  every prerequisite of the driver's, else the library)
  {REQUEST} V   the driver's soft limit (its request; default: the cap)
  {ALLOW}  start it even when the GPU's running capped containers and this one are
                  promised more than the GPU holds (a warning instead of a refusal)
Everything else is Docker's own; its help follows.
"""


def asks_for_help(args: list[str]) -> bool:
    """`gpumem-docker`, `--help`, or `run --help`: where Docker's help would not mention our option."""
    if not args or args[0] in ("-h", "--help", "help"):
        return True
    start, options = _subcommand(args)
    if tuple(args[start:options]) not in STARTS:
        return False
    i = options
    while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "--"):  # up to the image
        if args[i] == "--help":
            return True
        i += 2 if _takes_value(args[i]) else 1
    return False


def run(argv: Sequence[str] | None = None) -> int:
    """Rewrite and exec docker; one line on stderr and an exit code for every error."""
    args = list(sys.argv[1:] if argv is None else argv)
    docker = os.environ.get("GPUMEM_DOCKER_BIN", "docker")
    if args[:1] == ["doctor"]:
        return _doctor(args[1:])
    if asks_for_help(args):
        sys.stdout.write(HELP_NOTE + "\n")
        sys.stdout.flush()  # before exec replaces us
    start, _ = _subcommand(args)
    if args[start : start + 1] == ["top"]:
        from .top import docker_main

        try:
            return docker_main(args[start + 1 :], docker)
        except GpumemError as error:
            print(f"{PROG}: {error}", file=sys.stderr)
            return error.exit_code
    try:
        done = rewrite_and_plan(args)
        if done.plan is not None:  # again, with labels naming the GPUs by UUID where NVML can
            names = containers.gpu_names()
            done = rewrite_and_plan(args, names=names)
        new = done.args
        if done.plan is not None:
            from .admission import docker_start
            from .prereq import docker_run_service, require_for_run

            require_for_run({"the container": docker_run_service(args)})
            decision = decide(done)
            new = rewrite_and_plan(args, names=names, decision=decision).args
            shares = [(s.gpu, s.limit) for s in done.plan.shares("")]
            promise = containers.promise(shares, names)
            docker_start(
                promise, name=done.name, allow_overcommit=done.allow_overcommit, docker=docker, names=names
            )
    except GpumemError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return error.exit_code
    try:
        os.execvp(docker, [docker, *new])
    except OSError as error:
        print(f"{PROG}: cannot run {docker}: {error.strerror}", file=sys.stderr)
        return 127
    return 0  # pragma: no cover - exec does not return


def decide(done: Rewritten) -> enforce.Decision:
    """How the container's cap is enforced (:func:`enforce.decide`, errors naming our options)."""
    from . import hostfacts

    assert done.plan is not None
    if done.enforce == "library":  # nothing of the host to read
        return enforce.Decision("the container", "library", "library", ("asked for",))
    return enforce.decide(
        "the container",
        done.enforce,
        done.plan.limits,
        done.plan.request.gpus(),
        hostfacts.gather(),
        request=done.request,
        keys=(ENFORCE, REQUEST),
        named=False,
    )


def _doctor(args: list[str]) -> int:
    """``gpumem-docker doctor [--format json]``: the host alone (see :mod:`doctor`)."""
    from . import doctor

    if args not in ([], ["--format", "json"], ["--format=json"], ["--format", "text"]):
        print(f"{PROG}: usage: {PROG} doctor [--format text|json]", file=sys.stderr)
        return 2
    data = doctor.run(None)
    if "json" in " ".join(args):
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(doctor.render(data))
    return 0 if data["ok"] else 1


def entry() -> None:
    """Console-script entry point."""
    sys.exit(run())
