"""Load and emit Compose documents, fast.

Compose prints its resolved model as canonical YAML: block style, two spaces per level, one
service per ``  name:`` line under ``services:``.  Parsing all of it costs more than Compose
itself at a few hundred services, and most services need nothing from us, so the text is
split into service blocks (:func:`split_services`); only the blocks that may need a cap are
parsed, and only the changed ones are emitted again (:func:`splice`).  Everything else is
copied through byte for byte, exactly as Compose printed it.

The emitter (:func:`dump`) writes plain data (maps, lists, scalars) in Compose's layout.  A
string is plain when it matches a conservative pattern and JSON-quoted otherwise: a JSON
string is a valid YAML double-quoted scalar.  Values are written as they are held, so text
that came from Compose keeps its ``$$`` escapes and reads back the same.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

_PLAIN = re.compile(r"(?:[A-Za-z_/$]|-[A-Za-z_])[\w./+@$=,-]*(?: [\w./+@$=,-]+)*")
_RESERVED = frozenset("true false yes no on off y n null ~".split())


def scalar(value: Any) -> str:
    """One scalar as YAML text that reads back as the same value."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text and "." not in text:  # YAML 1.1 wants a dot in the mantissa
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text, ensure_ascii=False)


def _emit_map(data: dict[Any, Any], indent: int, out: list[str]) -> None:
    pad = " " * indent
    for key, value in data.items():
        head = f"{pad}{scalar(key)}:"
        if isinstance(value, dict) and value:
            out.append(head)
            _emit_map(value, indent + 2, out)
        elif isinstance(value, list) and value:
            out.append(head)
            _emit_seq(value, indent + 2, out)
        else:
            out.append(f"{head} {_leaf(value)}")


def _emit_seq(items: list[Any], indent: int, out: list[str]) -> None:
    pad = " " * indent
    for item in items:
        if isinstance(item, (dict, list)) and item:
            start = len(out)
            if isinstance(item, dict):
                _emit_map(item, indent + 2, out)
            else:
                _emit_seq(item, indent + 2, out)
            out[start] = f"{pad}- {out[start][indent + 2 :]}"
        else:
            out.append(f"{pad}- {_leaf(item)}")


def _leaf(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return scalar(value)


def dump(data: dict[Any, Any], indent: int = 0) -> str:
    """A mapping as block YAML in Compose's layout, every line ending in a newline."""
    out: list[str] = []
    _emit_map(data, indent, out)
    return "".join(line + "\n" for line in out)


def prepare() -> None:
    """Import the loader now (while Compose runs) rather than at the first :func:`load`."""
    try:
        import ruamel.yaml.cyaml
    except ImportError:  # pragma: no cover - pure-Python fallback
        import ruamel.yaml  # noqa: F401


def load(text: str) -> Any:
    """Parse YAML with ruamel.yaml's safe loader, the C one when ``ruamel.yaml.clib`` is there."""
    try:
        from ruamel.yaml.cyaml import CSafeLoader
    except ImportError:  # pragma: no cover - pure-Python fallback
        from ruamel.yaml import YAML

        return YAML(typ="safe", pure=True).load(text)
    loader = CSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@dataclass
class Split:
    """Compose's YAML cut into what comes before the services, their blocks, and the rest."""

    head: str
    blocks: list[str] = field(default_factory=list)
    tail: str = ""


_SECTION = re.compile(r"^services:\n", re.MULTILINE)
_TOP_KEY = re.compile(r"^(?=\S)", re.MULTILINE)
_SERVICE = re.compile(r"^  (?=\S)", re.MULTILINE)
_SERVICE_KEY = re.compile(r"^    (?=\S)", re.MULTILINE)


def split_services(text: str) -> Split | None:
    """Cut canonical Compose YAML into service blocks; ``None`` when it is not in that shape."""
    section = _SECTION.search(text)
    if section is None:
        return None
    begin = section.end()
    after = _TOP_KEY.search(text, begin)
    end = after.start() if after else len(text)
    body = text[begin:end]
    starts = [m.start() for m in _SERVICE.finditer(body)]
    if body.strip() and (not starts or body[: starts[0]].strip()):
        return None
    bounds = [*starts, len(body)]
    blocks = [body[a:b] for a, b in zip(bounds, bounds[1:])]
    return Split(text[:begin], blocks, text[end:])


def service_keys(block: str) -> tuple[str, list[tuple[str, str]]]:
    """One service block as its header line and its keys' texts, in order: ``(key, text)``."""
    starts = [m.start() for m in _SERVICE_KEY.finditer(block)]
    header = block[: starts[0]] if starts else block
    bounds = [*starts, len(block)]
    keys = []
    for a, b in zip(bounds, bounds[1:]):
        text = block[a:b]
        keys.append((text[4 : text.index(":")] if ":" in text else text.strip(), text))
    return header, keys


def dump_items(items: list[Any], indent: int) -> str:
    """List items alone (``- ...`` lines) at ``indent``, to append to a list already written."""
    out: list[str] = []
    _emit_seq(items, indent, out)
    return "".join(line + "\n" for line in out)


def top_level_block(text: str, key: str) -> str | None:
    """The text of one top-level key (its line and the indented lines under it), if present."""
    match = re.search(rf"^{re.escape(key)}:.*\n(?:(?:[ ].*)?\n)*", text, re.MULTILINE)
    if match is None:
        return None
    return match.group(0)
