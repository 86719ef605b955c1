"""Messages name the file (and the service block) where a value is written: an `include`d file,
a second `-f`, the base of an `extends`; Compose itself resolves every file."""

from __future__ import annotations

from pathlib import Path

from test_messages import one_line_error
from unit_helpers import cli, write

from compose_gpumem.compose import Options
from compose_gpumem.origins import Origins

MAIN = "services:\n  main:\n    image: x\n    gpus: all\n"
INC = "services:\n  inc:\n    image: x\n    gpus: all\n    x-gpu-memory: {}\n"


def test_an_error_in_an_included_file_names_that_file(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", "include:\n  - sub/gpu.yaml\n" + MAIN)
    write(
        tmp_path / "sub/gpu.yaml", "services:\n  inc:\n    image: x\n    gpus: all\n    x-gpu-memory: 1.5\n"
    )
    line = one_line_error(cli("config", cwd=tmp_path))
    assert line.startswith("gpumem-compose: sub/gpu.yaml: service 'inc': x-gpu-memory 1.5: "), line


def test_an_include_of_an_include_is_relative_to_the_file_naming_it(
    tmp_path: Path, compose_cmd: list[str]
) -> None:
    write(tmp_path / "compose.yaml", "include:\n  - path: [sub/a.yaml]\n" + MAIN)
    write(tmp_path / "sub/a.yaml", "include:\n  - b.yaml\nservices:\n  a:\n    image: x\n")
    write(tmp_path / "sub/b.yaml", "services:\n  b:\n    image: x\n    gpus: all\n    x-gpu-memory: 30\n")
    line = one_line_error(cli("config", cwd=tmp_path))
    assert line.startswith("gpumem-compose: sub/b.yaml: service 'b': x-gpu-memory 30: "), line


def test_an_error_in_a_second_file_names_the_second_file(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", MAIN + "    x-gpu-memory: 0.5\n")
    write(tmp_path / "over.yaml", "services:\n  main:\n    x-gpu-memory: '150%'\n")
    line = one_line_error(cli("-f", "compose.yaml", "-f", "over.yaml", "config", cwd=tmp_path))
    assert line.startswith("gpumem-compose: over.yaml: service 'main': x-gpu-memory '150%': "), line


def test_a_second_file_that_leaves_the_value_alone_does_not_take_the_blame(
    tmp_path: Path, compose_cmd: list[str]
) -> None:
    write(tmp_path / "compose.yaml", MAIN + "    x-gpu-memory: '150%'\n")
    write(tmp_path / "over.yaml", "services:\n  main:\n    environment:\n      A: b\n")
    line = one_line_error(cli("-f", "compose.yaml", "-f", "over.yaml", "config", cwd=tmp_path))
    assert line.startswith("gpumem-compose: compose.yaml: service 'main': "), line


def test_a_bad_default_in_a_second_file_names_it(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", MAIN)
    write(tmp_path / "over.yaml", "x-gpu-memory: 2.5\n")
    line = one_line_error(cli("-f", "compose.yaml", "-f", "over.yaml", "config", cwd=tmp_path))
    assert line.startswith("gpumem-compose: over.yaml: x-gpu-memory 2.5: "), line


def test_a_value_from_extends_names_the_base_file_and_service(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(
        tmp_path / "compose.yaml",
        MAIN + "    extends:\n      file: common/base.yaml\n      service: gpu-base\n",
    )
    write(tmp_path / "common/base.yaml", "services:\n  gpu-base:\n    image: x\n    x-gpu-memory: 12XB\n")
    line = one_line_error(cli("config", cwd=tmp_path))
    assert line.startswith(
        "gpumem-compose: common/base.yaml: service 'gpu-base', extended by 'main': x-gpu-memory '12XB': "
    ), line


def test_the_decimal_unit_note_names_the_included_file(
    tmp_path: Path, compose_cmd: list[str], lib_dir: Path
) -> None:
    write(tmp_path / "compose.yaml", "include:\n  - sub/gpu.yaml\n" + MAIN)
    write(
        tmp_path / "sub/gpu.yaml", "services:\n  inc:\n    image: x\n    gpus: all\n    x-gpu-memory: 2GB\n"
    )
    done = cli("config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "gpumem-compose: note: sub/gpu.yaml: service 'inc': '2GB' is read as 2 GiB" in done.stderr


def test_later_files_win_and_extends_chains_are_followed(tmp_path: Path) -> None:
    """The model alone, on files as written: the place each value Compose keeps comes from."""
    write(
        tmp_path / "a.yaml",
        "x-gpu-memory: 0.1\nservices:\n  s:\n    extends: t\n  t:\n    x-gpu-memory: 0.2\n",
    )
    write(
        tmp_path / "b.yaml", "services:\n  s:\n    image: y\n  u:\n    extends: {file: c.yaml, service: v}\n"
    )
    write(tmp_path / "c.yaml", "services:\n  v:\n    extends: {file: d/e.yaml, service: w}\n")
    write(tmp_path / "d/e.yaml", "services:\n  w:\n    x-gpu-memory: 0.3\n")
    origins = Origins(Options(files=[str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]))
    assert origins.place("s", "x-gpu-memory") == (str(tmp_path / "a.yaml"), "t")
    assert origins.place("s", "image") == (str(tmp_path / "b.yaml"), "s")
    assert origins.place("u", "x-gpu-memory") == (str(tmp_path / "d/e.yaml"), "w")
    assert origins.place("u-2", "x-gpu-memory") == (str(tmp_path / "d/e.yaml"), "w")  # a replica
    assert origins.place(None, "x-gpu-memory") == (str(tmp_path / "a.yaml"), "")
    assert origins.place("nowhere", "x-gpu-memory-enforce") is None


def test_an_overcommit_names_the_files_of_the_values_that_add_up(
    tmp_path: Path, compose_cmd: list[str]
) -> None:
    write(tmp_path / "compose.yaml", "include:\n  - sub/gpu.yaml\n" + MAIN + "    x-gpu-memory: 0.6\n")
    write(
        tmp_path / "sub/gpu.yaml", "services:\n  inc:\n    image: x\n    gpus: all\n    x-gpu-memory: 0.6\n"
    )
    line = one_line_error(cli("config", cwd=tmp_path))
    assert line.startswith("gpumem-compose: sub/gpu.yaml, compose.yaml: services sharing every GPU"), line


def test_doctor_names_the_included_file_of_a_refused_service(tmp_path: Path, compose_cmd: list[str]) -> None:
    """`doctor` reports each service's refusal in its table: the same file as an error would name."""
    write(tmp_path / "compose.yaml", "include:\n  - sub/gpu.yaml\n" + MAIN)
    write(tmp_path / "sub/gpu.yaml", INC.format("0.3") + "    x-gpu-memory-enforce: fast\n")
    done = cli("doctor", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "sub/gpu.yaml: service 'inc': x-gpu-memory-enforce 'fast': must be one of" in done.stdout, (
        done.stdout
    )
