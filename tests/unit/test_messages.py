"""Bad input of every kind: one line naming where and which rule, exit 1, never "internal error"."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit_helpers import cli, write

from compose_gpumem.errors import InvalidValue
from compose_gpumem.validate import Limit, Share, check_overcommit, parse_value

GPU = "services:\n  a:\n    image: x\n    gpus: all\n    x-gpu-memory: {}\n"


def one_line_error(done: object) -> str:
    err = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 1, err  # type: ignore[attr-defined]
    ours = [line for line in err.splitlines() if line.startswith("gpumem-compose:")]
    assert len(ours) == 1 and "internal error" not in err and "Traceback" not in err, err
    return ours[0]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("9" * 5000, "cannot read the project Compose resolved"),
        ("[" * 3000 + "]" * 3000, "x-gpu-memory [...]: must be a number, a text or a mapping"),
        ('"a\\tb"', "must be a number with an optional unit"),
        ('{"0": true, "1": {"a": 1}}', 'x-gpu-memory {"0": true, "1": {"a": 1}}: device 0: must be a number'),
        ("99999999999999999999PiB", "must be at most 1.8e19 bytes"),
        ("24051P", "must be at most 1.8e19 bytes"),
        ("12XB", "must be in a binary unit b, k, m, g, t or p (optional i, iB or B), not 'XB'"),
        ('"150%"', "must be a percent above 0 and at most 100"),
        ("1.5", "must be a fraction at most 1"),
    ],
)
def test_bad_values_are_one_line_naming_the_rule(
    tmp_path: Path, compose_cmd: list[str], value: str, fragment: str
) -> None:
    write(tmp_path / "compose.yaml", GPU.format(value))
    line = one_line_error(cli("config", cwd=tmp_path))
    assert fragment in line and "compose.yaml" in line
    assert len(line) < 400


def test_a_tiny_float_is_written_as_a_decimal_the_library_reads(
    tmp_path: Path, compose_cmd: list[str]
) -> None:
    write(tmp_path / "compose.yaml", GPU.format("1e-30"))
    done = cli("config", cwd=tmp_path, env={"GPUMEM_LIB_DIR": str(tmp_path)})
    assert done.returncode == 0 and done.stderr == ""  # no ruamel warning either
    assert 'GPUMEM_LIMIT: "0.000000000000000000000000000001"' in done.stdout


def test_a_decimal_looking_unit_says_it_is_binary(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", GPU.format("12GB"))
    done = cli("config", cwd=tmp_path, env={"GPUMEM_LIB_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "'12GB' is read as 12 GiB = 12884901888 bytes" in done.stderr


@pytest.mark.parametrize("bin_", ["echo hi", "printf \\001[[["])
def test_a_compose_bin_that_is_no_compose_is_one_line(tmp_path: Path, bin_: str) -> None:
    write(tmp_path / "compose.yaml", GPU.format("0.3"))
    line = one_line_error(cli("--compose-bin", bin_, "config", cwd=tmp_path))
    assert "COMPOSE_BIN" in line


@pytest.mark.parametrize("target", ["file", "/proc/gpumem-nowhere"])
def test_install_lib_into_an_impossible_place_is_one_line(tmp_path: Path, target: str) -> None:
    where = str(write(tmp_path / "a-file", "x")) if target == "file" else target
    source = write(tmp_path / "built.so", "library bytes")
    line = one_line_error(cli("install-lib", "--dir", where, "--source", str(source), cwd=tmp_path))
    assert f"cannot install into {where}" in line


def test_an_overcommit_of_300_services_stays_a_readable_line() -> None:
    shares = [Share(f"service-{i:03}", "0", Limit("0.01", fraction=0.01)) for i in range(300)]
    with pytest.raises(InvalidValue.__mro__[1]) as caught:  # GpumemError
        check_overcommit(shares, file="compose.yaml")
    assert "and 294 more" in str(caught.value) and len(str(caught.value)) < 400


def test_values_print_as_yaml_not_python() -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_value({"0": True}, file="c.yaml", service="s")
    assert 'x-gpu-memory {"0": true}' in str(caught.value) and "True" not in str(caught.value)
