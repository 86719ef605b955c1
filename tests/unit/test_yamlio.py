"""The fast emitter writes what the YAML loader reads back, in Compose's layout."""

from __future__ import annotations

from typing import Any

import pytest

from compose_gpumem.yamlio import dump, load, scalar, split_services

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
