"""Every file in good/ and bad/ is a test case: a new case is a new file.

good/*.yaml: ``gpumem-compose -f FILE config`` succeeds; leading comments state what it gives:
``# expect: SERVICE VAR=VALUE`` (an environment entry), ``# absent: SERVICE VAR``,
``# unlimited: SERVICE`` (left untouched), ``# args: OPTION...`` (global options to add).
bad/*.yaml: it fails with exit 1 and one line on stderr holding every ``# error: FRAGMENT``.
Both: the JSON Schema and the fast path agree on every ``x-gpu-memory`` value in the file.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from compose_gpumem import cli, compose
from compose_gpumem.errors import ComposeNotFound, InvalidValue
from compose_gpumem.validate import parse_value, schema
from compose_gpumem.yamlio import load, load_canonical

HERE = Path(__file__).parent
GOOD = sorted((HERE / "good").glob("*.yaml"))
BAD = sorted((HERE / "bad").glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def _needs_compose() -> None:
    try:
        compose.command()
    except ComposeNotFound as error:
        pytest.skip(str(error))


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GPUMEM_LIB_DIR", str(tmp_path))
    monkeypatch.delenv("COMPOSE_FILE", raising=False)
    monkeypatch.chdir(tmp_path)


def directives(path: Path, name: str) -> list[str]:
    return re.findall(rf"^# {name}: (.*)$", path.read_text(), re.MULTILINE)


def run(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = [a for line in directives(path, "args") for a in shlex.split(line)]
    code = cli.run([*args, "-f", str(path), "-p", "example", "config"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_example(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(path, capsys)
    assert code == 0, err
    services = load(out)["services"]
    checks = directives(path, "expect") + directives(path, "absent") + directives(path, "unlimited")
    assert checks, f"{path.name} states nothing to check"
    for line in directives(path, "expect"):
        service, assignment = line.split(" ", 1)
        key, value = assignment.split("=", 1)
        assert services[service]["environment"][key] == value, line
    for line in directives(path, "absent"):
        service, key = line.split()
        assert key not in services[service].get("environment", {}), line
    for service in directives(path, "unlimited"):
        assert "GPUMEM_LIMIT" not in str(services[service]), service


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_example(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fragments = directives(path, "error")
    assert fragments, f"{path.name} has no '# error:' line"
    code, out, err = run(path, capsys)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"gpumem-compose: {path}: ")
    for fragment in fragments:
        assert fragment in err


def _values(doc: Any) -> list[Any]:
    values = [doc["x-gpu-memory"]] if "x-gpu-memory" in doc else []
    for service in (doc.get("services") or {}).values():
        if "x-gpu-memory" in service:
            values.append(service["x-gpu-memory"])
    return [v for v in values if not (isinstance(v, str) and "${" in v)]


@pytest.mark.parametrize("path", GOOD + BAD, ids=lambda p: p.parent.name + "/" + p.name)
def test_schema_and_fast_path_agree(path: Path) -> None:
    validator = Draft202012Validator({"$defs": schema()["$defs"], "$ref": "#/$defs/value"})
    for value in _values(load(path.read_text())):
        schema_ok = not list(validator.iter_errors(value))
        try:
            parse_value(value)
            fast_ok = True
        except InvalidValue:
            fast_ok = False
        assert schema_ok == fast_ok, value


@pytest.mark.parametrize("path", GOOD + BAD, ids=lambda p: p.parent.name + "/" + p.name)
def test_canonical_reader_reads_composes_output_as_ruamel_does(path: Path) -> None:
    done = subprocess.run(
        [*compose.command(), "-f", str(path), "-p", "example", "config"], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip("Compose refuses this file itself")
    assert load_canonical(done.stdout) == load(done.stdout)
