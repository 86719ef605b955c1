"""What an ``x-gpu-memory`` value means, and whether a set of them can hold together.

:func:`parse_value` turns a value into :class:`Limit` objects.  The JSON Schema shipped in the
package (``schema.json``, usable by editors too) is the definition of a valid value: the fast
path below compiles the schema's own patterns and accepts what they accept, and any value it
refuses is run through ``jsonschema`` (imported only then) for the verdict and the message.
Tests check that both agree on every example file.

:func:`check_overcommit` adds up the fractions of the services pinned to each GPU; sizes are
turned into fractions where NVML can tell the GPU's memory (``pynvml`` from ``nvidia-ml-py``,
imported only when a size is given; no driver or no GPU means sizes are not checked).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

from .errors import InvalidValue, Overcommit

UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@dataclass(frozen=True)
class Limit:
    """One cap: ``text`` goes to ``GPUMEM_LIMIT*`` verbatim; ``fraction`` or ``size`` is its meaning."""

    text: str
    fraction: float | None = None
    size: int | None = None


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of ``x-gpu-memory``, as shipped in the package."""
    with open(os.path.join(os.path.dirname(__file__), "schema.json"), encoding="utf-8") as file:
        text = file.read()
    result: dict[str, Any] = json.loads(text)
    return result


@lru_cache(maxsize=1)
def _patterns() -> dict[str, re.Pattern[str]]:
    defs = schema()["$defs"]
    return {name: re.compile(defs[name]["pattern"]) for name in ("fraction-text", "percent", "size")}


def value_text(value: Any) -> str:
    """A value as it goes into the environment: strings verbatim, numbers as decimals with a dot
    (the library reads a number without one as a count of bytes, and knows no exponent)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(float(value))
        if "e" in text or "E" in text:
            text = f"{value:.20f}".rstrip("0")
        return text
    return str(value)


def _parse_limit(value: Any) -> Limit | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if 0 < value <= 1:
            return Limit(value_text(value), fraction=float(value))
        return None
    if not isinstance(value, str):
        return None
    patterns = _patterns()
    if patterns["fraction-text"].match(value):
        return Limit(value, fraction=float(value))
    if patterns["percent"].match(value):
        return Limit(value, fraction=float(value[:-1]) / 100)
    if patterns["size"].match(value):
        match = re.match(r"([0-9.]+)([a-zA-Z]*)", value)
        assert match is not None
        unit = match.group(2).lower()[:1]
        unit = "" if unit == "b" else unit
        return Limit(value, size=int(float(match.group(1)) * UNITS[unit]))
    return None


def parse_value(
    value: Any, *, file: str | None = None, service: str | None = None
) -> dict[int | None, Limit]:
    """A value as caps per device index; key ``None`` is the cap for every device.

    Raises :class:`InvalidValue` naming the file, the service and the value when the schema
    refuses it.
    """
    if isinstance(value, dict) and value:
        result: dict[int | None, Limit] = {}
        for key, item in value.items():
            limit = _parse_limit(item)
            if limit is None or not re.fullmatch(r"[0-9]+", str(key)):
                break
            result[int(key)] = limit
        else:
            return result
    else:
        limit = _parse_limit(value)
        if limit is not None:
            return {None: limit}
    raise InvalidValue(_schema_message(value), file=file, service=service, value=value)


def _schema_message(value: Any) -> str:
    from jsonschema import Draft202012Validator

    defs = schema()["$defs"]
    validator = Draft202012Validator({"$defs": defs, "$ref": "#/$defs/value"})
    if not list(validator.iter_errors(value)):  # pragma: no cover - the fast path is the schema
        return "accepted by the schema but not understood (please report this)"
    return (
        'must be a fraction above 0 and at most 1 (0.3), a percent ("30%"), a size with a '
        'binary unit ("12GiB", "512MiB", "12G") or a mapping from device index to one of '
        'these ({"0": 0.5, "1": "8GiB"})'
    )


@dataclass(frozen=True)
class Share:
    """One service's cap on one GPU, named as the host names it (``*``: every GPU)."""

    service: str
    gpu: str
    limit: Limit


def device_totals(gpus: Iterable[str]) -> dict[str, int]:
    """Total memory in bytes of the named host GPUs (index or UUID) per NVML; empty without one."""
    if not any(os.path.exists(node) for node in ("/dev/nvidiactl", "/dev/dxg")):
        return {}  # no NVIDIA driver here: skip importing pynvml at all
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:
        return {}
    totals: dict[str, int] = {}
    try:
        count = pynvml.nvmlDeviceGetCount()
        for gpu in set(gpus):
            try:
                if gpu == "*":
                    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
                    totals[gpu] = min(int(pynvml.nvmlDeviceGetMemoryInfo(h).total) for h in handles)
                    continue
                if gpu.isdigit():
                    handle = pynvml.nvmlDeviceGetHandleByIndex(int(gpu))
                else:
                    handle = pynvml.nvmlDeviceGetHandleByUUID(gpu)
                totals[gpu] = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            except Exception:
                continue
    finally:
        pynvml.nvmlShutdown()
    return totals


def check_overcommit(
    shares: list[Share],
    *,
    file: str | None = None,
    totals: Callable[[Iterable[str]], Mapping[str, int]] = device_totals,
) -> None:
    """Raise :class:`Overcommit` when the caps pinned to one GPU add up to more than it holds.

    A share on ``*`` (a service given every GPU) counts on every GPU.  A size counts only where
    ``totals`` knows the GPU's memory; a size larger than the GPU is an error on its own.
    """
    sized = [share.gpu for share in shares if share.limit.size is not None]
    known = dict(totals(sized)) if sized else {}
    for share in shares:
        total = known.get(share.gpu)
        if share.limit.size is not None and total is not None and share.limit.size > total:
            raise Overcommit(
                f"is larger than GPU {share.gpu}'s memory ({total} bytes); use --allow-overcommit to proceed",
                file=file,
                service=share.service,
                value=share.limit.text,
            )
    gpus = {share.gpu for share in shares if share.gpu != "*"} or {"*"}
    for gpu in sorted(gpus):
        on_gpu = [s for s in shares if s.gpu in (gpu, "*")]
        total_fraction = 0.0
        for share in on_gpu:
            if share.limit.fraction is not None:
                total_fraction += share.limit.fraction
            elif share.limit.size is not None and share.gpu in known:
                total_fraction += share.limit.size / known[share.gpu]
        if total_fraction > 1 + 1e-9:
            names = ", ".join(sorted({f"{s.service}={s.limit.text}" for s in on_gpu}))
            where = "every GPU" if gpu == "*" else f"GPU {gpu}"
            raise Overcommit(
                f"services sharing {where} are promised {total_fraction:.0%} of it ({names}); "
                "lower the shares or pass --allow-overcommit",
                file=file,
            )
