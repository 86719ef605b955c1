"""The fast emitter writes what the YAML loader reads back, in Compose's layout."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compose_gpumem.yamlio import NotCanonical, dump, load, load_canonical, load_fast, scalar, split_services

TRICKY = [
    "yes",
    "No",
    "ON",
    "null",
    "~",
    "0",
    "0x1F",
    "1e3",
    ".inf",
    "-.5",
    "12:30",
    "a: b",
    "a #b",
    "#x",
    "it's",
    'say "hi"',
    "multi\nline",
    "",
    " lead",
    "trail ",
    "[x]",
    "{x}",
    "*ref",
    "&anchor",
    "!tag",
    "%pct",
    "@at",
    "`tick",
    "-",
    "- item",
    "?",
    "|",
    ">",
    "ünïcode",
    "$$HOME",
    "echo $$HOME",
    "-c",
    "a\tb",
    "back\\slash",
    "=",
    "8GiB",
    "/usr/local/lib/gpumem",
    "${GPUMEM_LIB_DIR:-/x}",
]


@pytest.mark.parametrize("text", TRICKY, ids=repr)
def test_every_string_reads_back_as_itself(text: str) -> None:
    assert load(f"k: {scalar(text)}\n") == {"k": text}


@pytest.mark.parametrize("value", [None, True, False, 0, -3, 0.3, 1e-05, 12345678901234567890])
def test_other_scalars_read_back_as_themselves(value: Any) -> None:
    assert load(f"k: {scalar(value)}\n") == {"k": value}


def test_nested_documents_round_trip() -> None:
    doc = {
        "services": {
            "a": {
                "command": ["sh", "-c", "echo $$HOME"],
                "deploy": {
                    "resources": {"reservations": {"devices": [{"capabilities": ["gpu"], "count": -1}]}}
                },
                "environment": {"A": "1", "EMPTY": ""},
                "networks": {"default": None},
                "empty_map": {},
                "empty_list": [],
                "nested": [[1, 2], [{"x": 1}]],
            }
        }
    }
    assert load(dump(doc)) == doc


def test_layout_matches_compose() -> None:
    text = dump({"a": {"volumes": [{"type": "bind", "bind": {}}], "net": None}})
    assert text == "a:\n  volumes:\n    - type: bind\n      bind: {}\n  net: null\n"


def test_split_keeps_every_byte_and_one_block_per_service() -> None:
    text = (
        "name: p\nservices:\n  a:\n    command: |-\n      x\n\n      y\n    image: i\n"
        "  b:\n    image: j\nnetworks:\n  default:\n    name: p_default\nx-gpu-memory: 0.2\n"
    )
    split = split_services(text)
    assert split is not None
    assert split.head + "".join(split.blocks) + split.tail == text
    assert [b.splitlines()[0] for b in split.blocks] == ["  a:", "  b:"]
    assert load("".join(split.blocks))["a"]["command"] == "x\n\ny"


def test_split_refuses_text_in_another_shape() -> None:
    assert split_services("services: {}\n") is None or split_services("services: {}\n").blocks == []  # type: ignore[union-attr]
    assert split_services('{"services": {}}') is None


SCALARS = [
    *TRICKY,
    "8GiB",
    "30%",
    "0.5%",
    "1e3",
    "0o17",
    "2024-01-01",
    "1:20",
    "--model",
    "-1",
    "-.5",
    ".NaN",
    "a:b",
    "/usr/lib/x.so /y.so",
    "1_000",
    "+1",
    "0755",
    "1.",
    "1.0",
    "10",
    "3.14",
    "Null",
    "TRUE",
    "a=b",
    "0b101",
    "0.3",
    "x@y",
    "a,b",
    "x]",
    "::1",
    "http://x:80/y",
    "1-2",
    "1.2.3",
    "v1.2",
    "12XB",
]


@pytest.mark.filterwarnings("ignore::ruamel.yaml.error.MantissaNoDotYAML1_1Warning")
@pytest.mark.parametrize("text", SCALARS, ids=repr)
def test_canonical_reader_answers_as_ruamel_or_refuses(text: str) -> None:
    for document in (f"k: {text}\n", f"k: {scalar(text)}\n", f"- {scalar(text)}\n"):
        try:
            expected = load(document)
        except Exception:  # not YAML at all: the reader must refuse it too
            with pytest.raises(NotCanonical):
                load_canonical(document)
            continue
        try:
            got = load_canonical(document)
        except NotCanonical:
            continue
        assert got == expected and repr(got) == repr(expected)


def test_canonical_reader_reads_what_the_emitter_writes() -> None:
    doc = {
        "services": {
            "a": {
                "command": ["sh", "-c", "echo $$HOME"],
                "deploy": {
                    "resources": {"reservations": {"devices": [{"capabilities": ["gpu"], "count": -1}]}}
                },
                "environment": {"A": "1", "EMPTY": "", "URL": "http://x:80/y", "LIMIT": "8GiB"},
                "networks": {"default": None},
                "empty_map": {},
                "empty_list": [],
                "x-gpu-memory": {"0": 0.5, "1": "30%"},
            }
        }
    }
    assert load_canonical(dump(doc)) == doc


@pytest.mark.parametrize(
    "document",
    [
        "a: |-\n  x\n  y\n",
        "a: &x 1\nb: *x\n",
        "a: [1, 2]\n",
        "a:\n  - - 1\n",
        "a: 1\na: 2\n",
        "a: !!str 1\n",
        "a:\n\n  b: 1\n",
        "a:\n    b: 1\n  c: 2\n",
    ],
)
def test_canonical_reader_refuses_what_it_does_not_know(document: str) -> None:
    with pytest.raises(NotCanonical):
        load_canonical(document)
    if "a: 1\na: 2" not in document and "    b: 1\n  c" not in document:
        assert load_fast(document) == load(document)


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(st.text(st.characters(codec="utf-8"), max_size=12) | st.text('"\\\x00\x1f\x7f é\u2028a:', max_size=6))
def test_quoted_text_is_json_and_reads_back_without_importing_json_for_plain_text(text: str) -> None:
    """A quoted scalar is written and read without json unless it holds a quote, a backslash or
    a control character; both ways must give exactly what json gives."""
    written = scalar(text)
    if written.startswith('"'):
        assert written == json.dumps(text, ensure_ascii=False)
    assert load_canonical(f"k: {json.dumps(text, ensure_ascii=False)}\n") == {"k": text}
    assert load_canonical(f"{json.dumps(text, ensure_ascii=False)}: 1\n") == {text: 1}
