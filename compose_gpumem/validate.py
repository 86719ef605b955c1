"""What an ``x-gpu-memory`` value means, and whether a set of them can hold together.

:func:`parse_value` turns a value into :class:`Limit` objects.  The JSON Schema shipped in the
package (``schema.json``, usable by editors too) is the definition of a valid value: the fast
path below (:func:`is_fraction_text`, :func:`is_percent`, :func:`is_size`, plain code: ``re``
and ``json`` cost a plain ``config`` more than the rest of its Python) accepts what the schema's
patterns accept, but for a final line break, which their ``$`` lets through and the library
cannot read; any value it refuses gets a message naming the rule it breaks (:func:`why`).
Tests check that both agree on generated text and on every example file.

:func:`check_overcommit` adds up the fractions of the services pinned to each GPU; sizes are
turned into fractions where NVML can tell the GPU's memory (:func:`device_totals`, read only when a
size is given; no driver or no GPU means sizes are not checked).
"""

from __future__ import annotations

import os

from .errors import InvalidValue, Overcommit
from .records import Record

TYPE_CHECKING = False  # `typing`, `re` and `json` stay off the path of a valid value
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Mapping

UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


class Limit(Record):
    """One cap: ``text`` goes to ``GPUMEM_LIMIT*`` verbatim; ``fraction`` or ``size`` is its meaning."""

    FIELDS = ("text", "fraction", "size")
    __slots__ = FIELDS

    def __init__(self, text: str, fraction: float | None = None, size: int | None = None) -> None:
        self.text = text
        self.fraction = fraction
        self.size = size


_loaded: dict[str, Any] = {}


def schema() -> dict[str, Any]:
    """The JSON Schema of ``x-gpu-memory``, as shipped in the package (read once)."""
    if "schema" not in _loaded:
        import json

        with open(os.path.join(os.path.dirname(__file__), "schema.json"), encoding="utf-8") as file:
            _loaded["schema"] = json.loads(file.read())
    result: dict[str, Any] = _loaded["schema"]
    return result


def _number_and_unit(text: str) -> tuple[str, str]:
    """``([0-9.]*)(.*)``: the digits and dots that lead ``text``, and the rest."""
    i = 0
    while i < len(text) and text[i] in "0123456789.":
        i += 1
    return text[:i], text[i:]


def _fraction_below_one(number: str) -> bool:
    """``0*0\\.[0-9]*[1-9][0-9]*``: zeros, a dot, digits not all zero."""
    whole, dot, fraction = number.partition(".")
    return (
        bool(dot) and whole != "" and not whole.strip("0") and _digits(fraction) and bool(fraction.strip("0"))
    )


def _positive_number(number: str) -> bool:
    """``0*[1-9][0-9]*(\\.[0-9]+)?|0*0\\.[0-9]*[1-9][0-9]*``: a number above 0."""
    whole, dot, fraction = number.partition(".")
    if _digits(whole) and whole.strip("0") and (not dot or _digits(fraction)):
        return True
    return _fraction_below_one(number)


def is_fraction_text(text: str) -> bool:
    """The schema's ``fraction-text`` (``$defs`` in schema.json), a final line break refused."""
    whole, dot, fraction = text.partition(".")
    one = (
        whole.lstrip("0") == "1"
        and _digits(whole)
        and bool(dot)
        and _digits(fraction)
        and not fraction.strip("0")
    )
    return one or _fraction_below_one(text)


def is_percent(text: str) -> bool:
    """The schema's ``percent``, a final line break refused."""
    if not text.endswith("%"):
        return False
    number = text[:-1]
    whole, dot, fraction = number.partition(".")
    if _digits(whole) and (not dot or (_digits(fraction) and not fraction.strip("0"))):
        if whole.lstrip("0") == "100":
            return True
    if _digits(whole) and 1 <= len(whole.lstrip("0")) <= 2 and (not dot or _digits(fraction)):
        return True
    return _fraction_below_one(number)


_BINARY_UNITS = frozenset(
    [f"{p}{i}{b}" for p in "kKmMgGtTpP" for i in ("", "i", "I") for b in ("", "b", "B")] + ["b", "B"]
)


def is_size(text: str) -> bool:
    """The schema's ``size``, a final line break refused."""
    number, unit = _number_and_unit(text)
    return unit in _BINARY_UNITS and _positive_number(number)


#: The largest size the library takes (``limits.c``: a size above 1.8e19 bytes is malformed).
MAX_BYTES = 1.8e19


def value_text(value: Any) -> str:
    """A value as it goes into the environment: strings verbatim, numbers as decimals with a dot
    and no exponent (the library reads a number without a dot as a count of bytes, and knows
    no exponent): ``1e-30`` is written ``0.000000000000000000000000000001``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = _positional(repr(float(value)))
        return text if "." in text else text + ".0"
    return str(value)


def _positional(text: str) -> str:
    """A float's ``repr`` without its exponent, every digit kept (as ``format(Decimal(text),
    "f")`` writes it; decimal costs an import on every call of ``config``)."""
    mantissa, e, exponent = text.partition("e")
    if not e:
        return text  # already positional (or inf, nan: never a value that gets here)
    sign = "-" if mantissa.startswith("-") else ""
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent)  # where the dot goes in `digits`
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _digits(text: str) -> bool:
    """``[0-9]+``: one ASCII digit or more (``str.isdigit`` alone takes other scripts' digits)."""
    return text.isascii() and text.isdigit()


def library_number(text: str) -> float:
    """``digits[.digits]`` read exactly as the library's ``parse_number`` reads it (the same
    double operations in the same order), so the tool means the bytes the library will cap at."""
    whole, dot, fraction = text.partition(".")
    if (whole and not _digits(whole)) or (dot and not _digits(fraction)):
        raise ValueError(text)
    value, scale = 0.0, 1.0
    for digit in whole:
        value = value * 10 + (ord(digit) - 48)
    for digit in fraction:
        scale /= 10
        value += (ord(digit) - 48) * scale
    return value


def _parse_limit(value: Any) -> Limit | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if 0 < value <= 1:
            text = value_text(value)
            return _positive(Limit(text, fraction=library_number(text)))
        return None
    if not isinstance(value, str):
        return None
    if is_fraction_text(value):
        return _positive(Limit(value, fraction=library_number(value)))
    if is_percent(value):
        return _positive(Limit(value, fraction=library_number(value[:-1]) / 100.0))
    if is_size(value):
        number, unit = _number_and_unit(value)
        unit = unit.lower()[:1]
        unit = "" if unit == "b" else unit
        size = library_number(number) * float(UNITS[unit])
        if size > MAX_BYTES:
            return None
        return _positive(Limit(value, size=int(size)))
    return None


def _positive(limit: Limit) -> Limit | None:
    """``limit`` unless the library would read it as nothing (5e-324 underflows, 0.5b is 0 bytes)."""
    return limit if (limit.fraction or 0) > 0 or (limit.size or 0) > 0 else None


def has_variables(value: Any) -> bool:
    """Whether Compose would fill something in: a ``$`` that is not the escape ``$$``."""
    if isinstance(value, dict):
        return any(has_variables(item) for item in value.values())
    return isinstance(value, str) and "$" in value.replace("$$", "")


def parse_value(
    value: Any, *, file: str | None = None, service: str | None = None, defer: bool = False
) -> dict[int | None, Limit]:
    """A value as caps per device index; key ``None`` is the cap for every device.

    Raises :class:`InvalidValue` naming the file, the service, the value and the rule it
    breaks when the schema (or the library's range) refuses it.  ``defer``: a text with a
    variable (``${CAP:-0.3}``, from ``config --no-interpolate``) is taken as it is, unchecked
    and of unknown size, to be written where Compose fills it in as it fills in the value.
    """
    if isinstance(value, dict) and value:
        result: dict[int | None, Limit] = {}
        for key, item in value.items():
            limit = Limit(item) if defer and has_variables(item) else _parse_limit(item)
            if limit is None or not _digits(str(key)):
                break
            result[int(key)] = limit
        else:
            return result
    else:
        limit = Limit(value) if defer and has_variables(value) else _parse_limit(value)
        if limit is not None:
            return {None: limit}
    checked = value
    if defer and isinstance(value, dict):  # the rule broken by an item that was checked
        checked = {key: item for key, item in value.items() if not has_variables(item)} or value
    raise InvalidValue(why(checked), file=file, service=service, value=value)


FORMS = 'a fraction (0.3), a percent ("30%"), a size with a binary unit ("12GiB") or {"0": 0.5, "1": "8GiB"}'


def why(value: Any) -> str:
    """The rule ``value`` breaks, in words, with the forms that are valid."""
    return f"{_rule(value)}; use {FORMS}"


def _rule(value: Any, *, nested: bool = False) -> str:
    import re

    if isinstance(value, bool) or value is None:
        return f"must be a number or a text, not {_short(value)}"
    if isinstance(value, (int, float)):
        if not value > 0 or (_parse_limit(value) is None and value <= 1):
            return "must be above 0 (this one is too small for the library to tell from 0)"
        return 'must be a fraction at most 1 (a number is a share of the GPU; more is a size: "12GiB")'
    if isinstance(value, dict) and not nested:
        if not value:
            return "must map at least one device index"
        for key, item in value.items():
            if not re.fullmatch(r"[0-9]+", str(key)):
                return f"must be keyed by device indexes (0, 1, ...), not {_short(key)}"
            if _parse_limit(item) is None:
                return f"device {key}: {_rule(item, nested=True)}"
    if not isinstance(value, str):
        return "must be a number, a text or a mapping from device index to one"
    text = value.strip()
    number = re.fullmatch(r"([0-9]*\.?[0-9]*)\s*(%|[A-Za-z]*)", text)
    if number is None or not re.search(r"[0-9]", number.group(1)):
        return "must be a number with an optional unit or %"
    digits, unit = number.groups()
    if value != text or " " in value:
        return "must have no spaces"
    if digits.startswith(".") or digits.endswith("."):
        return "must have a digit on each side of the dot"
    if unit == "%":
        return "must be a percent above 0 and at most 100"
    if not unit:
        return 'must be a fraction with a dot, at most 1.0, or a size with a unit ("512MiB")'
    if not re.fullmatch(r"[kKmMgGtTpP][iI]?[bB]?|[bB]", unit):
        return f"must be in a binary unit b, k, m, g, t or p (optional i, iB or B), not {unit!r}"
    if int(library_number(digits) * float(UNITS.get(unit.lower()[:1].replace("b", ""), 1))) < 1:
        return "must be at least 1 byte"
    return "must be at most 1.8e19 bytes, the library's largest size"


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def decimal_unit_note(limits: dict[int | None, Limit]) -> str | None:
    """A note when a size is written with a unit that reads as decimal elsewhere ("12GB"): the
    units here are binary, as in Docker, so say which it is."""
    for limit in limits.values():
        if limit.size is None:
            continue
        number, unit = _number_and_unit(limit.text)  # ([0-9.]+)([kKmMgGtTpP])[bB]
        if number and len(unit) == 2 and unit[0] in "kKmMgGtTpP" and unit[1] in "bB":
            unit = unit[0].upper()
            return (
                f"{limit.text!r} is read as {number} {unit}iB = {limit.size} bytes "
                f"(binary units, as in Docker); write {number}{unit}iB to say so"
            )
    return None


class Share(Record):
    """One service's cap on one GPU, named as the host names it (``*``: every GPU)."""

    FIELDS = ("service", "gpu", "limit")
    __slots__ = FIELDS

    def __init__(self, service: str, gpu: str, limit: Limit) -> None:
        self.service = service
        self.gpu = gpu
        self.limit = limit


def device_totals(gpus: Iterable[str]) -> dict[str, int]:
    """Total memory in bytes of the named host GPUs (index, UUID, or ``*``: the smallest GPU), as
    :func:`compose_gpumem.hostfacts.nvml` read it, the one reader of the host's GPUs; a GPU NVML
    does not list is left out (no driver: empty)."""
    from .driverhint import driver_present

    if not driver_present():
        return {}  # hostfacts.nvml's own first check, made before importing it and containers
    from .containers import gpu_names  # containers reads Limit from here

    names = gpu_names()
    totals: dict[str, int] = {}
    for gpu in set(gpus):
        total = min(names.totals.values(), default=None) if gpu == "*" else names.total(gpu)
        if total:
            totals[gpu] = total
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
            names = _listed(sorted({f"{s.service}={s.limit.text}" for s in on_gpu}))
            where = "every GPU" if gpu == "*" else f"GPU {gpu}"
            raise Overcommit(
                f"services sharing {where} are promised {total_fraction:.0%} of it ({names}); "
                "lower the shares or pass --allow-overcommit",
                file=file,
                services=tuple(sorted({s.service for s in on_gpu})),
            )


def _listed(items: list[str], most: int = 6) -> str:
    """At most ``most`` items, then how many more: an error stays a readable line."""
    if len(items) <= most:
        return ", ".join(items)
    return ", ".join(items[:most]) + f" and {len(items) - most} more"
