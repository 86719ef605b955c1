"""The patterns :mod:`compose_gpumem.yamlio` reads and writes Compose's YAML by, as plain code.

Importing ``re`` (with enum, functools and collections under it) and compiling these patterns
cost a plain ``config`` about a fifth of its Python time on the 2-core bench host (bench/RESULTS.md,
"CPU side, start-up").  Each function here answers what its pattern in :data:`PATTERNS` answers
(``fullmatch``, or ``match`` at a position for :func:`key_at`); tests/unit/test_yamlscan.py
checks both agree on generated text, so the patterns stay the definition.
"""

from __future__ import annotations

#: The definitions, as regular expressions (Python's ``re``; ``\\w`` and ``\\s`` Unicode).
PATTERNS = {
    # a key of a block mapping and what follows it: group 1 a quoted key's inside, group 2 a plain key
    "key": r'(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_./][A-Za-z0-9_./-]*)):(?: |$)',
    "int": r"-?(?:0|[1-9][0-9]*)",
    "float": r"-?(?:0|[1-9][0-9]*)\.[0-9]+",
    # plain text that every YAML version reads as a string: starts with a letter, ``_``, ``/``,
    # ``$``, ``-`` before a letter, or a digit when a letter or ``%`` follows (``8GiB``, ``30%``);
    # no flow indicators, comments or ``: ``
    "plain-text": r"(?:[A-Za-z_/$]|-(?=[A-Za-z_-])|[0-9](?=[0-9.]*[A-Za-z%]))"
    r"[^\s#\[\]{},]*(?: [^\s#\[\]{},]+)*",
    # digit-led text some YAML version reads as a number or a date: ``1e3``, ``0x1F``, ``2024-01-01``
    "numberish": r"[0-9][0-9._:]*(?:[eE][-+]?[0-9]+)?|0[xXoObB].*|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*",
    # what the emitter writes plain: plain text, and ``0=0.5,1=8GiB`` (our labels): digits then
    # ``=`` are no number or date in YAML 1.1 or 1.2, and Compose prints them plain too
    "plain": r"(?:[A-Za-z_/$]|-[A-Za-z_]|[0-9]+=)[\w./+@$=,-]*(?: [\w./+@$=,-]+)*",
}

#: Text longer than this is scanned for line starts by ``re``: importing it costs about as much
#: as scanning this much in Python (measured on the bench host: 500 services, 140 KB, went from
#: 38 to 58 ms in Python)
_SCAN_WITH_RE = 32 << 10
_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_KEY_CHARS = _LETTERS | _DIGITS | frozenset("_./")
_NOT_IN_TEXT = frozenset("#[]{},")


def _digits(text: str) -> bool:
    """``[0-9]+``."""
    return text.isascii() and text.isdigit()


def _spaced(rest: str) -> bool:
    """Runs split by single spaces, none at the end: the ``C*(?: C+)*`` shape."""
    return not rest.endswith(" ") and "  " not in rest


#: ``[\\w./+@$=,-]`` and the space, ASCII part: deleted, what is left must be letters or digits
_PLAIN_ASCII = {ord(char): None for char in "./+@$=,-_ " + "".join(_LETTERS) + "".join(_DIGITS)}


def _plain_rest(rest: str) -> bool:
    """``[\\w./+@$=,-]*(?: [\\w./+@$=,-]+)*`` (``\\w``: letters and digits of any script, ``_``)."""
    left = rest.translate(_PLAIN_ASCII)
    return _spaced(rest) and (not left or left.isalnum())


def _text_rest(rest: str) -> bool:
    """``[^\\s#\\[\\]{},]*(?: [^\\s#\\[\\]{},]+)*``."""
    if not _spaced(rest) or any(char in rest for char in _NOT_IN_TEXT):
        return False
    squeezed = rest.replace(" ", "")
    return not squeezed or squeezed.split() == [squeezed]  # no other whitespace


def is_int(text: str) -> bool:
    """``int``."""
    digits = text[1:] if text.startswith("-") else text
    return digits == "0" or (_digits(digits) and digits[0] != "0")


def is_float(text: str) -> bool:
    """``float``."""
    whole, dot, fraction = text.partition(".")
    return bool(dot) and is_int(whole) and _digits(fraction)


def is_plain_text(text: str) -> bool:
    """``plain-text``."""
    if not text:
        return False
    first = text[0]
    if first in _DIGITS:
        i = 1
        while i < len(text) and (text[i] in _DIGITS or text[i] == "."):
            i += 1
        if i == len(text) or not (text[i] in _LETTERS or text[i] == "%"):
            return False
    elif first == "-":
        if len(text) < 2 or not (text[1] in _LETTERS or text[1] in "_-"):
            return False
    elif not (first in _LETTERS or first in "_/$"):
        return False
    return _text_rest(text[1:])


def is_numberish(text: str) -> bool:
    """``numberish``."""
    if not text or text[0] not in _DIGITS:
        return False
    if "\n" not in text:  # `.` stops at a line break
        if text[0] == "0" and text[1:2] in ("x", "X", "o", "O", "b", "B"):
            return True
        if _date_like(text):
            return True
    i = 1
    while i < len(text) and (text[i] in _DIGITS or text[i] in "._:"):
        i += 1
    rest = text[i:]
    if not rest:
        return True
    if rest[0] not in "eE":
        return False
    exponent = rest[1:]
    if exponent[:1] in ("-", "+"):
        exponent = exponent[1:]
    return _digits(exponent)


def _date_like(text: str) -> bool:
    """``[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*`` (without a line break)."""
    if len(text) < 5 or not _digits(text[:4]) or text[4] != "-":
        return False
    rest = text[5:]
    if rest[:1] not in _DIGITS or not rest[:1]:
        return False
    if rest[1:2] == "-":
        day = rest[2:]
    elif rest[1:2] and rest[1] in _DIGITS and rest[2:3] == "-":
        day = rest[3:]
    else:
        return False
    return bool(day) and day[0] in _DIGITS


def is_plain(text: str) -> bool:
    """``plain``."""
    if not text:
        return False
    first = text[0]
    if first in _DIGITS:
        i = 1
        while i < len(text) and text[i] in _DIGITS:
            i += 1
        if text[i : i + 1] != "=":
            return False
        rest = text[i + 1 :]
    elif first == "-":
        if len(text) < 2 or not (text[1] in _LETTERS or text[1] == "_"):
            return False
        rest = text[2:]
    elif first in _LETTERS or first in "_/$":
        rest = text[1:]
    else:
        return False
    return _plain_rest(rest)


def key_at(line: str, pos: int) -> tuple[int, str | None, str | None] | None:
    """``key`` matched at ``pos``: ``(end, group 1, group 2)``, or ``None``."""
    if line[pos : pos + 1] == '"':
        i = pos + 1
        while i < len(line):
            char = line[i]
            if char == "\\":
                if i + 1 >= len(line) or line[i + 1] == "\n":
                    return None
                i += 2
            elif char == '"':
                break
            else:
                i += 1
        else:
            return None
        quoted: str | None = line[pos + 1 : i]
        plain = None
        colon = i + 1
    else:
        i = pos
        while i < len(line) and (line[i] in _KEY_CHARS or (line[i] == "-" and i > pos)):
            i += 1
        if i == pos:
            return None
        quoted, plain = None, line[pos:i]
        colon = i
    if line[colon : colon + 1] != ":":
        return None
    after = line[colon + 1 :]
    if after in ("", "\n"):  # `$`: the end, or before a final line break
        return colon + 1, quoted, plain
    if after[0] == " ":
        return colon + 2, quoted, plain
    return None


def line_starts(
    text: str, prefix: str, begin: int = 0, end: int | None = None, *, first: bool = False
) -> list[int]:
    """Where lines of ``text[begin:end]`` start with ``prefix`` and then a character that is no
    whitespace, ``^PREFIX(?=\\S)`` (multi-line), as positions in ``text``; ``first``: the first
    one only.  ``begin`` is 0 or just after a line break."""
    end = len(text) if end is None else end
    if end - begin > _SCAN_WITH_RE:
        import re

        pattern = re.compile(f"^{prefix}(?=\\S)", re.MULTILINE)
        if first:
            match = pattern.search(text, begin, end)
            return [match.start()] if match else []
        return [match.start() for match in pattern.finditer(text, begin, end)]
    found = []
    width = len(prefix)
    pos = begin
    while pos < end:
        if text.startswith(prefix, pos) and pos + width < end and not text[pos + width].isspace():
            found.append(pos)
            if first:
                break
        nl = text.find("\n", pos, end)
        if nl < 0:
            break
        pos = nl + 1
    return found


def block_at_line(text: str, key: str) -> tuple[int, int] | None:
    """Where ``^KEY:.*\\n(?:(?:[ ].*)?\\n)*`` (multi-line) first matches: a line starting with
    ``KEY:`` and the lines under it that are blank or start with a space, each ended by a line
    break."""
    head = key + ":"
    start = 0 if text.startswith(head) else text.find("\n" + head) + 1
    if start == 0 and not text.startswith(head):
        return None
    line_end = text.find("\n", start)
    if line_end < 0:
        return None  # no line break after it, and no line can start later
    end = line_end + 1
    while end < len(text):
        if text[end] == "\n":
            end += 1
        elif text[end] == " " and (next_end := text.find("\n", end)) >= 0:
            end = next_end + 1
        else:
            break
    return start, end
