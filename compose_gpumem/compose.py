"""Find and run the real Docker Compose; this package never merges Compose files itself.

Compose is the ``docker compose`` plugin when one is installed, else a ``docker-compose``
binary of version 2 or later on ``PATH``; ``--compose-bin`` or ``COMPOSE_BIN`` (a command
line, e.g. ``"docker compose"``) overrides both.  Looking for the plugin reads the plugin
directories instead of running ``docker compose version``, so finding Compose costs no process.

This module is imported before anything else a command needs, and imports little, so that
Compose is already working while the rest of the package loads (see :func:`start_resolve`).
"""

from __future__ import annotations

import os
import sys

from .errors import (
    ComposeFailed,
    ComposeNotFound,
    GpumemError,
    Interrupted,
    raise_if_stopped,
    stop_requests,
)

TYPE_CHECKING = False  # `typing` (and collections.abc) stay off the path to starting Compose
if TYPE_CHECKING:
    import signal as signal
    from typing import Sequence
else:
    try:  # the interpreter's own signal module, loaded before any of ours: `signal` adds enum
        import _signal as signal  # (about 5 ms of CPU on the bench host) to every `config`
    except ImportError:  # pragma: no cover - an interpreter without it
        import signal

PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
#: Commands that start containers: the library must be in place before them.
STARTS_CONTAINERS = frozenset({"up", "run", "create", "start", "restart", "watch", "scale"})
#: Commands that need no project at all.
NO_PROJECT = frozenset({"version", "ls", "help"})
#: Commands that act on containers already made (or read them): they go to Compose with the
#: user's own files, so an invalid ``x-gpu-memory`` never keeps anyone from stopping a stack.
NEEDS_NO_CAP = frozenset(
    {"down", "stop", "kill", "rm", "ps", "logs", "top", "pause", "unpause", "port", "images", "events"}
    | {"wait", "attach", "exec", "cp", "stats"}
)
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")


class Options:
    """Compose's global options as the user gave them."""

    def __init__(
        self,
        files: Sequence[str] = (),
        project_name: str | None = None,
        profiles: Sequence[str] = (),
        env_files: Sequence[str] = (),
        project_directory: str | None = None,
        compose_bin: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.files = list(files)
        self.project_name = project_name
        self.profiles = list(profiles)
        self.env_files = list(env_files)
        self.project_directory = project_directory
        self.compose_bin = compose_bin
        #: Options we do not interpret, handed to Compose as they came (``--ansi never`` ...).
        self.extra = list(extra)

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
        found = _find_default(os.getcwd())
        return os.path.basename(found) if found else "compose.yaml"

    def named_files(self) -> list[str]:
        """The compose files as the user named them: ``-f``, else ``COMPOSE_FILE`` (``-``, stdin,
        included); empty when Compose is to find one."""
        if self.files:
            return list(self.files)
        separator = os.environ.get("COMPOSE_PATH_SEPARATOR", os.pathsep)
        return [f for f in os.environ.get("COMPOSE_FILE", "").split(separator) if f]

    def directory(self) -> str:
        """The project directory Compose uses: as given, else the first file's, else the one
        holding the compose file found from the working directory up."""
        if self.project_directory:
            return os.path.abspath(self.project_directory)
        files = self.named_files()
        if files and files[0] != "-":
            return os.path.dirname(os.path.abspath(files[0]))
        if files:
            return os.getcwd()
        found = _find_default(os.getcwd())
        return os.path.dirname(found) if found else os.getcwd()


def user_files(options: Options) -> list[str]:
    """The compose files Compose will read first (``-f``, else ``COMPOSE_FILE``, else the one
    found from the working directory up); ``-`` (stdin) is left out."""
    files = options.named_files()
    if not files:
        found = _find_default(os.getcwd())
        files = [found] if found else []
    return [f for f in files if f != "-"]


def _find_default(start: str) -> str | None:
    directory = start
    while True:
        for name in DEFAULT_FILES:
            if os.path.isfile(os.path.join(directory, name)):
                return os.path.join(directory, name)
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _plugin_dirs() -> list[str]:
    config = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    return [os.path.join(config, "cli-plugins"), *PLUGIN_DIRS]


def _which(name: str) -> str | None:
    """``shutil.which`` without importing shutil (and its compression modules)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def command(override: str | None = None) -> list[str]:
    """The command that runs Compose, e.g. ``["docker", "compose"]``."""
    override = override or os.environ.get("COMPOSE_BIN")
    if override:
        import shlex

        return shlex.split(override)
    docker = _which("docker")
    if docker and any(os.path.isfile(os.path.join(d, "docker-compose")) for d in _plugin_dirs()):
        return [docker, "compose"]
    standalone = _which("docker-compose")
    if standalone:
        return [standalone]
    if docker and _ok([docker, "compose", "version"]):
        return [docker, "compose"]
    raise ComposeNotFound(
        "Docker Compose v2+ not found: install ours with `pip install 'gpumem-compose[compose]'` "
        "(from a checkout: `pip install '.[compose]'`), or Docker's `docker compose` plugin, "
        "or set COMPOSE_BIN"
    )


def _ok(argv: list[str]) -> bool:
    import subprocess

    try:
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def _explain_failure(cmd: list[str], returncode: int) -> ComposeFailed:
    """Compose failed; say so, and say why when it is too old to be Compose v2."""
    import subprocess

    try:
        out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, check=False)
        version = out.stdout.strip().lstrip("v")
    except OSError:
        version = ""
    if version[:1] == "1":
        return ComposeFailed(
            f"{' '.join(cmd)} is Docker Compose {version}; version 2 or later is needed "
            "(`pip install 'gpumem-compose[compose]'`, or set COMPOSE_BIN)",
            returncode,
        )
    return ComposeFailed("docker compose could not resolve the project (see its message above)", returncode)


class Resolving:
    """``docker compose config`` running; :meth:`result` waits for its YAML.

    Started with ``os.posix_spawnp`` and two pipes rather than ``subprocess`` (whose import
    alone costs about as much as a small project's resolution).  Its stderr is held back and
    replayed by :meth:`result`, so a call that is cancelled (see :mod:`compose_gpumem.launch`)
    prints nothing.
    """

    def __init__(self, cmd: list[str], argv: list[str]) -> None:
        self.cmd = cmd
        self.argv = argv
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        try:
            # setsigmask: Compose starts with no signal blocked, whatever our mask is meanwhile
            self.pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions, setsigmask=())
        except OSError as error:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise ComposeNotFound(f"cannot run {cmd[0]}: {error.strerror}") from error
        os.close(out_w)
        os.close(err_w)
        self.fds = (out_r, err_r)
        self.returncode: int | None = None

    def _collect(self, *, stoppable: bool = True) -> tuple[bytes, bytes]:
        """Compose's output; if we are stopped meanwhile (Ctrl-C, ``timeout``'s SIGTERM, a
        hang-up), Compose is killed and reaped first, never left running."""

        def stop(signum: int, _frame: object) -> None:
            stop_requests.append(signum)
            raise Interrupted(f"stopped by signal {signum}", 128 + signum)

        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
        try:
            return self._read_all(stoppable)
        except BaseException:
            self._kill()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _kill(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if self.returncode is None:
            try:
                os.kill(self.pid, 9)
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except (ProcessLookupError, ChildProcessError):  # pragma: no cover - reaped already
                pass

    def _read_all(self, stoppable: bool) -> tuple[bytes, bytes]:
        import select

        chunks: dict[int, list[bytes]] = {fd: [] for fd in self.fds}
        open_fds = list(self.fds)
        while open_fds:
            if stoppable:  # a stop whose exception a library swallowed still stops us here
                raise_if_stopped()
            ready, _, _ = select.select(open_fds, [], [], 0.25 if stoppable else None)
            for fd in ready:
                data = os.read(fd, 1 << 16)
                if data:
                    chunks[fd].append(data)
                else:
                    open_fds.remove(fd)
                    os.close(fd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return b"".join(chunks[self.fds[0]]), b"".join(chunks[self.fds[1]])

    def result(self, *, quiet_failure: bool = False, silent: bool = False) -> str:
        """The resolved project as YAML; :class:`ComposeFailed` when Compose refused it
        (``quiet_failure``: without printing Compose's message, for a caller that tries again;
        ``silent``: nothing Compose said is printed, for a run of our own besides the user's)."""
        out, err = self._collect()
        code = self.returncode or 0
        if (quiet_failure or silent) and code != 0:
            raise ComposeFailed("docker compose could not resolve the project", code)
        if err and not silent:
            sys.stderr.write(err.decode("utf-8", "replace"))
            sys.stderr.flush()
        if code != 0:
            raise _explain_failure(self.cmd, 128 - code if code < 0 else code)
        return out.decode("utf-8")

    def cancel(self) -> None:
        """Stop it, unheard."""
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - already gone
                pass
            self._collect(stoppable=False)  # called while stopping: read to the end regardless


#: ``docker compose config`` flags that print a list about the project: given to Compose as they
#: are, on the user's files (the caps change none of these lists).
CONFIG_LISTS = {
    "--services": "Print the service names, one per line.",
    "--volumes": "Print the volume names, one per line.",
    "--profiles": "Print the profile names, one per line.",
    "--images": "Print the image names, one per line.",
    "--networks": "Print the network names, one per line.",
    "--models": "Print the model names, one per line.",
    "--variables": "Print model variables and default values.",
    "--environment": "Print environment used for interpolation.",
}
#: Flags that change how Compose resolves: passed to the resolution itself.
CONFIG_SHAPING = {
    "--no-interpolate": "Don't interpolate environment variables.",
    "--no-normalize": "Don't normalize compose model.",
    "--no-path-resolution": "Don't resolve file paths.",
    "--no-env-resolution": "Don't resolve service env files.",
    "--no-consistency": "Don't check model consistency.",
    "--resolve-image-digests": "Pin image tags to digests.",
}


def config_argv(
    options: Options, extra: Sequence[str] = (), *, all_profiles: bool = False, fmt: str = "yaml"
) -> list[str]:
    """The ``docker compose config`` call for ``options`` (YAML: the JSON form drops service
    ``x-*`` keys).  ``all_profiles`` adds ``--profile '*'``: every service, each keeping its
    ``profiles`` key, so that the command run on the result activates services exactly as
    Compose would on the original files (``run SERVICE`` of a profiled service included)."""
    everything = ["--profile", "*"] if all_profiles else []
    return [*command(options.compose_bin), *options.args(), *everything, "config", "--format", fmt, *extra]


def start_resolve(
    options: Options, extra: Sequence[str] = (), *, all_profiles: bool = False, fmt: str = "yaml"
) -> Resolving:
    """Start ``docker compose config``; :meth:`Resolving.result` gives its output."""
    cmd = command(options.compose_bin)
    return Resolving(cmd, config_argv(options, extra, all_profiles=all_profiles, fmt=fmt))


def resolve(options: Options, extra: Sequence[str] = (), *, all_profiles: bool = False) -> str:
    """``docker compose config`` of the project, as YAML."""
    return start_resolve(options, extra, all_profiles=all_profiles).result()


def dotenv_value(options: Options, name: str) -> str | None:
    """``name`` as Compose reads it for the project: the environment first, else the last
    assignment in the ``--env-file`` files (or the project directory's ``.env``)."""
    if name in os.environ:
        return os.environ[name]
    files = options.env_files or [os.path.join(options.directory(), ".env")]
    found = None
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as env_file:
                lines = env_file.read().splitlines()
        except OSError:
            continue
        for line in lines:
            key, eq, value = line.strip().removeprefix("export ").partition("=")
            if eq and key.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                found = value
    return found


def passthrough(options: Options, args: Sequence[str]) -> int:
    """Run a Compose command exactly as given, without a resolved file; its exit code."""
    cmd = command(options.compose_bin)
    return _wait([*cmd, *options.args(), *args])


def run_resolved(options: Options, text: str, args: Sequence[str]) -> int:
    """Run a Compose command on a resolved document; returns Compose's exit code.

    The document goes in a private file that stays (see :func:`kept_file`; stdin stays the
    user's, for ``run -it`` and ``exec``), with the original project directory so ``.env``
    settings such as ``COMPOSE_PROFILES`` and every name stay what they were.
    """
    cmd = command(options.compose_bin)
    directory = options.directory()
    path = kept_file(directory, text)
    rest = Options(
        project_name=options.project_name,
        profiles=options.profiles,
        env_files=options.env_files,
        project_directory=directory,
        extra=options.extra,
    )
    return _wait([*cmd, "-f", path, *rest.args(files=False), *args])


def kept_file(directory: str, text: str) -> str:
    """Write ``text`` to this project's file under ``$XDG_CACHE_HOME/gpumem-compose`` (or
    ``~/.cache``) and return its path.  Compose records the path in every container's
    ``config_files`` label and ``docker compose ls`` shows it: it must name a file that exists
    and holds what was run, so it is kept, one per project, replaced atomically, private."""
    import hashlib
    import re
    import tempfile

    match = re.search(r"^name: (.+)$", text, re.MULTILINE)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", match.group(1).strip("\"'")) if match else "project"
    key = hashlib.sha256(f"{directory}\0{name}".encode()).hexdigest()[:12]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for base in (
        os.path.join(cache, "gpumem-compose"),
        os.path.join(tempfile.gettempdir(), f"gpumem-compose-{os.getuid()}"),
    ):
        folder = os.path.join(base, f"{name}-{key}")
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".compose.", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            path = os.path.join(folder, "compose.yaml")
            os.replace(tmp, path)
            return path
        except OSError:
            continue
    raise GpumemError(f"cannot write the resolved project under {cache} nor {tempfile.gettempdir()}")


#: ``si_code`` of a signal the kernel sent, such as the terminal's Ctrl-C (Linux ``SI_KERNEL``).
_SI_KERNEL = 0x80


def _wait(argv: list[str]) -> int:
    """Run ``argv`` in the foreground and return its exit code (128+N for a signal N).

    The terminal's Ctrl-C reaches Compose directly (it is in our process group), so a SIGINT the
    kernel sent is not sent again (Compose takes a second Ctrl-C as "kill now"); a SIGINT,
    SIGTERM or SIGHUP that a process sent us (``kill -INT``) is passed on."""
    import subprocess

    forwarded = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    watched = forwarded | {signal.SIGCHLD}
    # Blocked before the start, so that none sent while Compose starts is lost; Compose itself
    # starts with the mask we had.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        try:
            child = subprocess.Popen(
                argv, preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            )
        except OSError as error:
            raise ComposeNotFound(f"cannot run {argv[0]}: {error.strerror}") from error
        while child.poll() is None:
            info = signal.sigtimedwait(watched, 1.0)
            if info is None or info.si_signo not in forwarded:
                continue
            if info.si_signo == signal.SIGINT and info.si_code == _SI_KERNEL:
                continue
            child.send_signal(info.si_signo)
        while signal.sigtimedwait(watched, 0) is not None:
            pass  # the terminal's Ctrl-C went to Compose, which handled it: not ours to act on
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    code = child.returncode
    sys.stdout.flush()
    return 128 - code if code < 0 else code
