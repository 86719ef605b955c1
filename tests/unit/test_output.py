"""``-o FILE`` writes through what the user names: ``-``, special files, symlinks; umask modes."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from unit_helpers import cli, write

from compose_gpumem.yamlio import load

STACK = "services:\n  trainer:\n    image: x\n    gpus: all\n    x-gpu-memory: 0.3\n"


@pytest.fixture
def project(tmp_path: Path, compose_cmd: list[str], lib_dir: Path) -> Path:
    write(tmp_path / "compose.yaml", STACK)
    return tmp_path


@pytest.mark.parametrize("command", [["config"], ["override"]])
def test_dash_is_stdout_and_no_file_named_dash(project: Path, command: list[str]) -> None:
    done = cli(*command, "-o", "-", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "GPUMEM_LIMIT" in done.stdout
    assert not (project / "-").exists()


@pytest.mark.parametrize("command", [["config"], ["override"]])
def test_a_symlink_is_written_through_not_replaced(project: Path, command: list[str]) -> None:
    target = write(project / "real" / "out.yaml", "old\n")
    link = project / "link.yaml"
    link.symlink_to(target)
    done = cli(*command, "-o", str(link), cwd=project)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert "GPUMEM_LIMIT" in target.read_text()


def test_a_fifo_is_written_into_not_replaced(project: Path) -> None:
    fifo = project / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    done = cli("config", "-o", str(fifo), cwd=project)
    reader.join(timeout=10)
    if reader.is_alive():  # the FIFO was replaced: let the blocked reader go before failing
        fifo.write_bytes(b"")
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert load(received[0].decode())["services"]["trainer"]["environment"]["GPUMEM_LIMIT"] == "0.3"


def test_a_link_to_the_process_stdout_is_written_through(project: Path) -> None:
    # /dev/stdout is such a link; one of our own keeps a regression from replacing the host's
    link = project / "stdout"
    link.symlink_to("/proc/self/fd/1")
    done = cli("config", "-o", str(link), cwd=project)
    assert done.returncode == 0, done.stderr
    assert load(done.stdout)["services"]["trainer"]["environment"]["GPUMEM_LIMIT"] == "0.3"
    assert link.is_symlink()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_the_umask_allows(project: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        result = cli("override", "-o", "new.yaml", cwd=project)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((project / "new.yaml").stat().st_mode) == mode


def test_an_existing_file_keeps_its_mode(project: Path) -> None:
    out = write(project / "kept.yaml", "old\n")
    out.chmod(0o640)
    done = cli("override", "-o", str(out), cwd=project)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert "GPUMEM_LIMIT" in out.read_text()
