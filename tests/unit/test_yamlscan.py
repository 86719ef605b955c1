"""yamlscan's plain code answers what its regular expressions (yamlscan.PATTERNS, the definitions)
answer, on generated text built from the characters that matter to each."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from compose_gpumem import yamlscan

SETTINGS = settings(max_examples=1000, deadline=None, derandomize=True, database=None)
#: what the patterns tell apart: digits, letters, signs, separators, spaces of several kinds,
#: flow indicators, quotes, escapes, non-ASCII letters and digits
ALPHABET = "0123456789aeExXoObBzZ_-+./:$%=,@# \t\n\r\x1c\u00a0[]{}\"'\\é٣"
TEXT = st.text(st.sampled_from(ALPHABET), max_size=14)
KEYISH = st.builds(lambda a, b, c: a + b + c, TEXT, st.sampled_from(["", ":", ": ", ':"', "\\"]), TEXT)

FULL = {
    "int": yamlscan.is_int,
    "float": yamlscan.is_float,
    "plain-text": yamlscan.is_plain_text,
    "numberish": yamlscan.is_numberish,
    "plain": yamlscan.is_plain,
}


@pytest.mark.parametrize("name", sorted(FULL))
@SETTINGS
@given(text=TEXT)
@example(text="2024-1-12x")
@example(text="2024-123-1")
@example(text="0x")
@example(text="1e+5")
@example(text="12=a b")
@example(text="-_x")
@example(text="8GiB")
@example(text="30%")
@example(text="a  b")
@example(text="a b ")
def test_each_matcher_answers_as_its_pattern(name: str, text: str) -> None:
    assert FULL[name](text) == (re.fullmatch(yamlscan.PATTERNS[name], text) is not None), text


@SETTINGS
@given(line=KEYISH, pos=st.integers(0, 3))
@example(line='"a\\"b": x', pos=0)
@example(line='"a\\\nb": x', pos=0)
@example(line="key:\n", pos=0)
@example(line="a:\tb", pos=0)
@example(line="-a: 1", pos=0)
@example(line="  a-b: 1", pos=2)
def test_key_at_answers_as_the_key_pattern(line: str, pos: int) -> None:
    match = re.compile(yamlscan.PATTERNS["key"]).match(line, pos)
    expected = None if match is None else (match.end(), match.group(1), match.group(2))
    assert yamlscan.key_at(line, pos) == expected


LINES = st.lists(
    st.text(st.sampled_from("  \ta:xs-\u00a0"), max_size=6).map(lambda t: t.replace("\n", "")), max_size=8
).map("\n".join)


@SETTINGS
@given(text=LINES | st.builds(lambda t: t + "\n", LINES), prefix=st.sampled_from(["", "  ", "    "]))
def test_line_starts_are_the_multiline_pattern(text: str, prefix: str) -> None:
    expected = [m.start() for m in re.finditer(rf"^{prefix}(?=\S)", text, re.MULTILINE)]
    assert yamlscan.line_starts(text, prefix) == expected
    assert yamlscan.line_starts(text, prefix, first=True) == expected[:1]


@SETTINGS
@given(
    text=st.lists(
        st.sampled_from(["x-k: 1", "x-k:", "x-kk: 2", " a", "", "b: 2", "  - c", "\r"]), max_size=7
    ).map("\n".join)
)
@example(text="x-k: 1")
@example(text="b: 1\nx-k: 2\n  c: 3\n\n d\ne: 4\n")
def test_block_at_line_is_the_top_level_block_pattern(text: str) -> None:
    match = re.search(r"^x-k:.*\n(?:(?:[ ].*)?\n)*", text, re.MULTILINE)
    assert yamlscan.block_at_line(text, "x-k") == (None if match is None else match.span())


def test_long_text_is_scanned_by_re_with_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past yamlscan._SCAN_WITH_RE characters, line starts are found by ``re``; both ways agree."""
    text = "services:\n" + "".join(f"  s{i}:\n    image: x\n    a: b\n   c\n" for i in range(2000)) + "x: 1\n"
    assert len(text) > yamlscan._SCAN_WITH_RE
    by_re = [yamlscan.line_starts(text, prefix, 10) for prefix in ("", "  ", "    ")]
    firsts = [yamlscan.line_starts(text, prefix, 10, first=True) for prefix in ("", "  ", "    ")]
    monkeypatch.setattr(yamlscan, "_SCAN_WITH_RE", 1 << 40)
    assert by_re == [yamlscan.line_starts(text, prefix, 10) for prefix in ("", "  ", "    ")]
    assert firsts == [yamlscan.line_starts(text, prefix, 10, first=True) for prefix in ("", "  ", "    ")]
    assert len(by_re[1]) == 2000 and by_re[0] == [len(text) - 5]
