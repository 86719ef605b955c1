"""Values of x-gpu-memory: what they mean, and the fast path agreeing with the JSON Schema."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from compose_gpumem.errors import InvalidValue, Overcommit
from compose_gpumem.validate import (
    Limit,
    Share,
    check_overcommit,
    is_fraction_text,
    is_percent,
    is_size,
    library_number,
    parse_value,
    schema,
    value_text,
)

GOOD: list[Any] = [
    0.3,
    1,
    1.0,
    0.001,
    1e-05,
    "0.3",
    "0.05",
    "1.0",
    "01.00",
    "30%",
    "100%",
    "0.5%",
    "12.5%",
    "12GiB",
    "512MiB",
    "12G",
    "12g",
    "1.5g",
    "4096k",
    "1048576b",
    "2TiB",
    "8Gi",
    "1gb",
    {"0": 0.5, "1": "8GiB"},
    {"3": "25%"},
]
BAD: list[Any] = [
    0,
    0.0,
    -0.1,
    1.5,
    2,
    True,
    None,
    "",
    "0",
    "0.0",
    "1.5",
    ".5",
    "1",
    "1.",
    "0.",
    "30.%",
    ".5GiB",
    "abc",
    "0%",
    "101%",
    "100.5%",
    "-1GiB",
    "0GiB",
    "12 GiB",
    "12XB",
    "12",
    "30 %",
    "${SHARE}",
    [0.3],
    {},
    {"a": 0.5},
    {"0": 2},
    {"0": "lots"},
]


@pytest.mark.parametrize("value", GOOD, ids=repr)
def test_schema_and_fast_path_accept_good_values(value: Any) -> None:
    assert not list(Draft202012Validator(_value_schema()).iter_errors(value))
    assert parse_value(value)


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_schema_and_fast_path_refuse_bad_values(value: Any) -> None:
    assert list(Draft202012Validator(_value_schema()).iter_errors(value))
    with pytest.raises(InvalidValue):
        parse_value(value)


def _value_schema() -> dict[str, Any]:
    return {"$defs": schema()["$defs"], "$ref": "#/$defs/value"}


def test_the_shipped_schema_is_a_valid_schema_for_whole_compose_files() -> None:
    Draft202012Validator.check_schema(schema())
    doc = {"x-gpu-memory": 0.3, "services": {"a": {"image": "x", "x-gpu-memory": "12GiB"}}}
    assert not list(Draft202012Validator(schema()).iter_errors(doc))
    doc["services"]["a"]["x-gpu-memory"] = "lots"  # type: ignore[index]
    assert list(Draft202012Validator(schema()).iter_errors(doc))


def test_value_is_kept_as_written_for_the_environment() -> None:
    assert parse_value("12GiB")[None].text == "12GiB"
    assert parse_value(0.3)[None].text == "0.3"
    assert parse_value(1)[None].text == "1.0"
    assert parse_value(1e-05)[None].text == "0.00001"
    assert parse_value("30%")[None].fraction == pytest.approx(0.3)
    assert parse_value("1.5g")[None].size == 3 << 29
    assert parse_value({"1": "8GiB"})[1].size == 8 << 30


def test_invalid_value_error_names_file_service_and_value() -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_value("1.5", file="compose.yaml", service="trainer")
    line = str(caught.value)
    assert line.startswith("compose.yaml: service 'trainer': x-gpu-memory '1.5': must be a fraction")
    assert "\n" not in line


def _share(service: str, gpu: str, fraction: float | None = None, size: int | None = None) -> Share:
    return Share(service, gpu, Limit(str(fraction or size), fraction=fraction, size=size))


def no_gpu(_gpus: object) -> dict[str, int]:
    return {}


def test_fractions_pinned_to_one_gpu_over_one_are_overcommit() -> None:
    with pytest.raises(Overcommit, match=r"GPU 0 are promised 110%.*a=0.6, b=0.5"):
        check_overcommit([_share("a", "0", 0.6), _share("b", "0", 0.5)], totals=no_gpu)


def test_fractions_on_different_gpus_are_not_overcommit() -> None:
    check_overcommit([_share("a", "0", 0.6), _share("b", "1", 0.5)], totals=no_gpu)


def test_a_service_on_every_gpu_counts_on_each() -> None:
    with pytest.raises(Overcommit, match="GPU 1"):
        check_overcommit([_share("a", "*", 0.6), _share("b", "1", 0.5)], totals=no_gpu)
    with pytest.raises(Overcommit, match="every GPU"):
        check_overcommit([_share("a", "*", 0.6), _share("b", "*", 0.5)], totals=no_gpu)


def test_sizes_count_only_where_the_gpu_memory_is_known() -> None:
    shares = [_share("a", "0", 0.5), _share("b", "0", size=60 << 30)]
    check_overcommit(shares, totals=no_gpu)
    with pytest.raises(Overcommit, match="promised"):
        check_overcommit(shares, totals=lambda gpus: {"0": 80 << 30})


def test_a_size_larger_than_the_gpu_is_an_error_when_nvml_knows_it() -> None:
    with pytest.raises(Overcommit, match="larger than GPU 0's memory"):
        check_overcommit([_share("b", "0", size=100 << 30)], totals=lambda gpus: {"0": 80 << 30})


@pytest.fixture
def two_gpus(nvml_lib, monkeypatch):
    """The stand-in NVML with two 16 GiB GPUs as the host's; their facts as hostfacts reads them."""
    from compose_gpumem import hostfacts

    monkeypatch.setenv(hostfacts.ENV_NVML, str(nvml_lib))
    monkeypatch.setenv("FAKE_CUDA_DEVICES", "2")
    monkeypatch.setenv("FAKE_CUDA_TOTAL", str(16 << 30))
    hostfacts.forget()
    yield hostfacts.nvml().gpus
    hostfacts.forget()


def test_device_totals_are_the_host_facts_read_by_index_uuid_and_star(two_gpus) -> None:
    from compose_gpumem.validate import device_totals

    first, second = two_gpus
    assert first.total == (16 << 30) + (480 << 20)  # NVML's total, the driver's reserve included
    assert device_totals(["0", second.uuid, "*", "7", "GPU-none"]) == {
        "0": first.total,
        second.uuid: second.total,
        "*": min(first.total, second.total),
    }


def test_sizes_are_checked_against_the_memory_nvml_reports(two_gpus) -> None:
    with pytest.raises(Overcommit, match="larger than GPU 0's memory"):
        check_overcommit([_share("b", "0", size=20 << 30)])
    with pytest.raises(Overcommit, match="promised"):
        check_overcommit([_share("a", "1", 0.5), _share("b", "1", size=10 << 30)])
    check_overcommit([_share("a", "1", 0.3), _share("b", "1", size=10 << 30)])


def test_without_a_driver_no_size_is_checked(monkeypatch) -> None:
    from compose_gpumem import hostfacts
    from compose_gpumem.validate import device_totals

    monkeypatch.delenv(hostfacts.ENV_NVML, raising=False)
    hostfacts.forget()
    if hostfacts.nvml().gpus:
        pytest.skip("this host has an NVIDIA GPU")
    assert device_totals(["0", "*"]) == {}
    check_overcommit([_share("b", "0", size=100 << 30)])


@settings(max_examples=2000, deadline=None, derandomize=True, database=None)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**20), 10**20))
@example(1e-30)
@example(5e-324)
@example(1e16)
@example(-1.5e-07)
@example(123456789.0)
def test_value_text_writes_every_number_as_decimal_would(value: float) -> None:
    """The number's text for GPUMEM_LIMIT is written without the decimal module (an import on
    every `config`), and must be what ``format(Decimal(repr(value)), "f")`` writes."""
    expected = format(Decimal(repr(float(value))), "f")
    assert value_text(value) == (expected if "." in expected else expected + ".0")


@pytest.mark.parametrize(
    "text", ["", "0", "12", ".5", "0.25", "007.1000", "5.", ".", "1.2.3", "1e3", "٣", "-1"]
)
def test_library_number_reads_digits_dot_digits_only(text: str) -> None:
    """``[0-9]*(\\.[0-9]+)?`` and nothing else (no other scripts' digits, no sign, no exponent)."""
    valid = re.fullmatch(r"([0-9]*)(?:\.([0-9]+))?", text) is not None
    if valid:
        assert library_number(text) == (float(text) if text.strip(".") else 0.0)
    else:
        with pytest.raises(ValueError):
            library_number(text)


@pytest.mark.parametrize(
    ("name", "matcher"), [("fraction-text", is_fraction_text), ("percent", is_percent), ("size", is_size)]
)
@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(text=st.text(st.sampled_from("0001123456789..%kKmMgGtTpPiIbBx \n٣"), max_size=9))
@example(text="0.0")
@example(text="00.010")
@example(text="01.000")
@example(text="100.0%")
@example(text="099%")
@example(text="123%")
@example(text="101.0%")
@example(text="0.5%")
@example(text="012GiB")
@example(text="0.5b")
def test_each_text_form_is_what_the_schemas_pattern_accepts(name: str, matcher: Any, text: str) -> None:
    """The fast path's plain code accepts what schema.json's pattern accepts, whole text only
    (the pattern's `$` also lets a final line break through, which the library cannot read)."""
    pattern = schema()["$defs"][name]["pattern"]
    assert pattern.startswith("^") and pattern.endswith("$")
    assert matcher(text) == (re.fullmatch(pattern[1:-1], text) is not None), text


@pytest.mark.parametrize("value", ["0.5\n", "30%\n", "12GiB\n"])
def test_a_final_line_break_is_refused_with_a_rule(value: str) -> None:
    with pytest.raises(InvalidValue, match="must have no spaces"):
        parse_value(value)
