"""Whether ``libgpumem.so`` can load in an image, read from the image's files without running it.

The image's own dynamic loader loads the library (``LD_PRELOAD``), so the image needs glibc
2.17 or later: the library uses no symbol version newer than ``GLIBC_2.17``.  Where it cannot
load, the loader says so once on stderr and runs the program without it: uncapped.

How it is read: a container of the image is created, never started (``docker create``), the C
library is copied out of it (``docker cp -L``, which follows links inside the image) from where
distributions keep it, and the container is removed.  glibc's ``libc.so.6`` carries its
release in a banner (``release version 2.36``) and defines the version node ``GLIBC_2.17``
when it is that new; musl's loader (``/lib/ld-musl-<arch>.so.1``) means an image without
glibc.  An image that is not on the engine, or whose C library lies elsewhere (Nix), is
``unknown``: nothing is pulled, nothing is guessed.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from dataclasses import dataclass

#: The symbol version node the library needs at most (see libinterpose/README.md).
NEEDS = "GLIBC_2.17"
_MULTIARCH = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "ppc64le": "powerpc64le-linux-gnu"}
_MUSL = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "powerpc64le"}
_BANNER = re.compile(rb"release version (\d+)\.(\d+)")
DOCKER_TIMEOUT = 60.0
#: What is copied out at most: a libc.so.6 is 2 MiB; a bigger file is not one.
MAX_LIBC = 16 << 20


@dataclass(frozen=True)
class ImageLibc:
    """What the image's C library says about loading the library."""

    image: str
    loads: bool | None  # None: cannot tell
    why: str  # in words, for doctor
    glibc: str = ""  # its release, "2.36"


def classify(image: str, libc: bytes | None, musl: bool) -> ImageLibc:
    """The verdict from the image's ``libc.so.6`` (``None``: none found) and whether it has
    musl's loader."""
    if libc is not None:
        banner = _BANNER.search(libc)
        release = f"{int(banner[1])}.{int(banner[2])}" if banner else ""
        if b"\0" + NEEDS.encode() + b"\0" in libc:
            return ImageLibc(image, True, f"glibc {release or '(release not named)'}", release)
        if release:
            return ImageLibc(
                image,
                False,
                f"glibc {release} is older than 2.17: libgpumem.so cannot load, programs would run uncapped",
                release,
            )
        return ImageLibc(image, None, "unknown: its libc.so.6 names no glibc release")
    if musl:
        return ImageLibc(
            image, False, "musl libc, no glibc: libgpumem.so cannot load, programs would run uncapped"
        )
    return ImageLibc(image, None, "unknown: no libc.so.6 where distributions keep it")


def candidates(architecture: str) -> list[str]:
    """Where glibc's ``libc.so.6`` lives, most common first (Debian and Ubuntu, then Red Hat's
    family, then Arch and others)."""
    multiarch = _MULTIARCH.get(architecture, "")
    paths = [f"/lib/{multiarch}/libc.so.6", f"/usr/lib/{multiarch}/libc.so.6"] if multiarch else []
    return [*paths, "/lib64/libc.so.6", "/usr/lib64/libc.so.6", "/lib/libc.so.6", "/usr/lib/libc.so.6"]


def read(image: str, docker: str = "docker") -> ImageLibc:
    """:func:`classify` for ``image`` as the engine has it (see the module's text)."""
    found = _docker([docker, "image", "inspect", "--format", "{{.Architecture}}", image])
    if found.returncode != 0:
        return ImageLibc(image, None, "unknown: the image is not on the engine (pull or build it first)")
    architecture = found.stdout.strip()
    created = _docker([docker, "create", "--entrypoint", "/", "--network", "none", image])
    if created.returncode != 0:
        tail = created.stderr.strip().splitlines()
        return ImageLibc(
            image, None, f"unknown: `docker create` failed: {tail[-1] if tail else created.returncode}"
        )
    container = created.stdout.strip()
    try:
        libc = None
        for path in candidates(architecture):
            libc = _copy_out(docker, container, path)
            if libc is not None:
                break
        musl = False
        if libc is None and architecture in _MUSL:
            musl = _copy_out(docker, container, f"/lib/ld-musl-{_MUSL[architecture]}.so.1") is not None
        return classify(image, libc, musl)
    finally:
        _docker([docker, "rm", "-f", container])


def _copy_out(docker: str, container: str, path: str) -> bytes | None:
    """The file at ``path`` in the container, links followed; ``None`` when there is none."""
    try:
        done = subprocess.run(
            [docker, "cp", "-L", f"{container}:{path}", "-"],
            capture_output=True,
            timeout=DOCKER_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout:
        return None
    try:
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
            member = next((m for m in tar if m.isfile() and m.size <= MAX_LIBC), None)
            data = tar.extractfile(member) if member is not None else None
            return data.read() if data is not None else None
    except tarfile.TarError:
        return None


def _docker(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(argv, 1, "", str(error))
