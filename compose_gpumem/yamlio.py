"""Load and emit Compose documents, fast.

Compose prints its resolved model as canonical YAML: block style, two spaces per level, one
service per ``  name:`` line under ``services:``.  Parsing all of it costs more than Compose
itself at a few hundred services, and most services need nothing from us, so the text is
split into service blocks (:func:`split_services`); only the blocks that may need a cap are
parsed, and only the changed ones are emitted again (:func:`splice`).  Everything else is
copied through byte for byte, exactly as Compose printed it.

Parsing itself is :func:`load_canonical`, a reader of the block YAML Compose prints that
refuses anything beyond it (block scalars, anchors, scalars whose type YAML versions disagree
on); :func:`load_fast` then falls back to ruamel.yaml's safe loader (its C loader with
``ruamel.yaml.clib``), which is imported only then.

The emitter (:func:`dump`) writes plain data (maps, lists, scalars) in Compose's layout.  A
string is plain when it matches a conservative pattern and JSON-quoted otherwise: a JSON
string is a valid YAML double-quoted scalar.  Values are written as they are held, so text
that came from Compose keeps its ``$$`` escapes and reads back the same.
"""

from __future__ import annotations

from . import yamlscan
from .records import Record

TYPE_CHECKING = False  # `typing` stays off the path of `config` (see options.py)
if TYPE_CHECKING:
    from typing import Any

_INFINITY = float("inf")

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
        if value != value:  # nan
            return ".nan"
        if value in (_INFINITY, -_INFINITY):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text and "." not in text:  # YAML 1.1 wants a dot in the mantissa
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    text = str(value)
    if yamlscan.is_plain(text) and text.lower() not in _RESERVED:
        return text
    return _quoted(text)


def _plain_json(text: str) -> bool:
    """Whether JSON writes ``text`` between its quotes unchanged: no quote, no backslash, no
    control character."""
    return '"' not in text and "\\" not in text and (not text or min(text) >= " ")


def _quoted(text: str) -> str:
    """``json.dumps(text, ensure_ascii=False)``; json is imported only for text it escapes."""
    if _plain_json(text):
        return f'"{text}"'
    import json

    return json.dumps(text, ensure_ascii=False)


def _unquoted(inner: str) -> str:
    """The string of the JSON text ``"inner"``; ValueError when that is no JSON string."""
    if _plain_json(inner):
        return inner
    import json

    value = json.loads(f'"{inner}"')
    if not isinstance(value, str):  # pragma: no cover - a quoted JSON text is a string or invalid
        raise ValueError(inner)
    return value


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


class NotCanonical(Exception):
    """The text uses YAML beyond what :func:`load_canonical` reads; use :func:`load`."""


_AMBIGUOUS = frozenset("yes no on off y n true false null ~".split())


def _plain(text: str) -> Any:
    if text in ("null", "~"):
        return None
    if text == "true":
        return True
    if text == "false":
        return False
    if yamlscan.is_int(text):
        return int(text)
    if yamlscan.is_float(text):
        return float(text)
    if (
        yamlscan.is_plain_text(text)
        and ": " not in text
        and not text.endswith(":")
        and text.lower() not in _AMBIGUOUS
        and not yamlscan.is_numberish(text)
    ):
        return text
    raise NotCanonical(text)


def _value(text: str) -> Any:
    if text == "{}":
        return {}
    if text == "[]":
        return []
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise NotCanonical(text)
        try:
            return _unquoted(text[1:-1])
        except ValueError:
            raise NotCanonical(text) from None
    if text.startswith("'"):
        inner = text[1:-1]
        if len(text) < 2 or not text.endswith("'") or "'" in inner.replace("''", ""):
            raise NotCanonical(text)
        return inner.replace("''", "'")
    return _plain(text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _key(quoted: str | None, plain: str | None) -> str:
    if quoted is not None:
        return _unquoted(quoted)
    assert plain is not None
    return plain


class _Reader:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        if any(not line.strip() or "\t" in line for line in self.lines):
            raise NotCanonical("blank line or tab")
        self.i = 0

    def block(self, indent: int) -> Any:
        line = self.lines[self.i]
        if line[indent:].startswith("- ") or line[indent:] == "-":
            return self.seq(indent)
        return self.map(indent)

    def map(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while self.i < len(self.lines):
            line = self.lines[self.i]
            n = _indent(line)
            if n < indent or (n == indent and line[n:].startswith("-")):
                break
            if n > indent:
                raise NotCanonical(line)
            match = yamlscan.key_at(line, n)
            if match is None:
                raise NotCanonical(line)
            end, quoted, plain = match
            key = _key(quoted, plain)
            rest = line[end:]
            self.i += 1
            if rest:
                value = _value(rest)
            elif self.i < len(self.lines) and (
                _indent(self.lines[self.i]) > indent or self.lines[self.i][indent:].startswith("- ")
            ):
                value = self.block(_indent(self.lines[self.i]))
            else:
                value = None
            if key in result:
                raise NotCanonical(f"duplicate key {key}")
            result[key] = value
        return result

    def seq(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            n = _indent(line)
            if n < indent or not line[n:].startswith("- "):
                if n > indent:
                    raise NotCanonical(line)
                break
            content = line[n + 2 :]
            if content.startswith(("- ", "-\n")) or not content.strip():
                raise NotCanonical(line)
            if yamlscan.key_at(content, 0):
                self.lines[self.i] = " " * (n + 2) + content
                items.append(self.map(n + 2))
            else:
                items.append(_value(content))
                self.i += 1
        return items


def load_canonical(text: str) -> Any:
    """Parse the block YAML that Compose prints, fast; :class:`NotCanonical` for anything
    else (block scalars, anchors, flow collections, scalars whose type YAML versions disagree
    on...), where :func:`load` must be used.  Where it answers, it answers as :func:`load`."""
    reader = _Reader(text)
    if not reader.lines:
        return None
    value = reader.block(_indent(reader.lines[0]))
    if reader.i != len(reader.lines):
        raise NotCanonical(reader.lines[reader.i])
    return value


def load_fast(text: str) -> Any:
    """:func:`load_canonical`, else :func:`load`."""
    try:
        return load_canonical(text)
    except NotCanonical:
        return load(text)


def load(text: str) -> Any:
    """Parse YAML with ruamel.yaml's safe loader, the C one when ``ruamel.yaml.clib`` is there."""
    try:
        from ruamel.yaml.cyaml import CSafeLoader
    except ImportError:  # pragma: no cover - pure-Python fallback
        from ruamel.yaml import YAML

        return YAML(typ="safe", pure=True).load(text)
    import warnings

    loader = CSafeLoader(text)
    try:
        with warnings.catch_warnings():  # ruamel's 14-line note on a float such as 1e-30
            warnings.simplefilter("ignore")
            return loader.get_single_data()
    finally:
        loader.dispose()


class Split(Record):
    """Compose's YAML cut into what comes before the services, their blocks, and the rest."""

    FIELDS = ("head", "blocks", "tail")
    __slots__ = FIELDS

    def __init__(self, head: str, blocks: list[str] | None = None, tail: str = "") -> None:
        self.head = head
        self.blocks = blocks if blocks is not None else []
        self.tail = tail


def split_services(text: str) -> Split | None:
    """Cut canonical Compose YAML into service blocks; ``None`` when it is not in that shape."""
    section = 0 if text.startswith("services:\n") else text.find("\nservices:\n") + 1
    if section == 0 and not text.startswith("services:\n"):
        return None
    begin = section + len("services:\n")
    after = yamlscan.line_starts(text, "", begin, first=True)
    end = after[0] if after else len(text)
    body = text[begin:end]
    starts = yamlscan.line_starts(body, "  ")
    if body.strip() and (not starts or body[: starts[0]].strip()):
        return None
    bounds = [*starts, len(body)]
    blocks = [body[a:b] for a, b in zip(bounds, bounds[1:])]
    return Split(text[:begin], blocks, text[end:])


def service_keys(block: str) -> tuple[str, list[tuple[str, str]]]:
    """One service block as its header line and its keys' texts, in order: ``(key, text)``."""
    starts = yamlscan.line_starts(block, "    ")
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
    found = yamlscan.block_at_line(text, key)
    return text[found[0] : found[1]] if found else None


_ALIAS = r"(?:^|[\s\[{,:-])\*[^\s,\[\]{}]+"
#: Nodes that aliases may add: a file sharing a block of defaults with 500 services adds
#: about 5,000; 5 levels of "billion laughs" add 75,000 and keep Compose busy for 35 s.
MAX_ALIAS_NODES = 20_000


def alias_nodes(text: str, limit: int = MAX_ALIAS_NODES) -> int:
    """How many nodes expanding the aliases of ``text`` would add, counted without expanding
    (each node once, times its uses); stops counting past ``limit``.  Text without an alias
    costs one regex search."""
    if "&" not in text:
        return 0
    import re

    if not re.search(_ALIAS, text):
        return 0
    from ruamel.yaml.cyaml import CSafeLoader  # ruamel.yaml.clib: a dependency on CPython

    loader = CSafeLoader(text)
    try:
        root = loader.get_single_node()
    except Exception:
        return 0  # not YAML: Compose says why
    finally:
        loader.dispose()
    if root is None:
        return 0
    cap = limit * 4 + len(text)
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:  # iterative: 3,000-deep nesting must not overflow Python's stack
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        sizes[id(node)] = min(cap, 1 + sum(sizes.get(id(child), 0) for child in children))
    return max(0, sizes[id(root)] - len(sizes))


def _children(node: Any) -> list[Any]:
    value = node.value
    if isinstance(value, list):
        return [item for pair in value for item in (pair if isinstance(pair, tuple) else (pair,))]
    return []
