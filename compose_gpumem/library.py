"""Where ``libgpumem.so`` lives on the host, and how it gets there.

Compose containers mount ``libgpumem.so`` from one host directory, read-only, at
``/opt/gpumem/libgpumem.so`` (the file, so a directory without it fails to start rather than
starting uncapped; ``gpumem-docker`` checks it is there first).  That directory is the same
on every host, ``/usr/local/lib/gpumem``, so a committed override never names a path that
exists only in one user's virtualenv; ``GPUMEM_LIB_DIR`` moves it (tests use a temp dir).
``gpumem-compose install-lib`` copies the library shipped inside the package there,
atomically, so containers that are running keep the file they mapped.
"""

from __future__ import annotations

import os

from .errors import LibraryMissing

TYPE_CHECKING = False  # pathlib, shutil and tempfile load only when a path is asked for:
if TYPE_CHECKING:  # `config` needs none of them
    from pathlib import Path

DEFAULT_DIR = "/usr/local/lib/gpumem"
ENV_DIR = "GPUMEM_LIB_DIR"
NAME = "libgpumem.so"
READER_NAME = "gpumem-ledger"
#: How a committed override names the directory: Compose interpolates it on each host.
OVERRIDE_SOURCE = f"${{{ENV_DIR}:-{DEFAULT_DIR}}}"


def host_dir() -> str:
    """The directory containers mount the library from: ``$GPUMEM_LIB_DIR`` or the default."""
    return os.environ.get(ENV_DIR) or DEFAULT_DIR


def packaged() -> Path:
    """The library built into the package by ``pip install .``."""
    from pathlib import Path

    return Path(__file__).resolve().parent / "lib" / NAME


def packaged_reader() -> Path:
    """``gpumem-ledger``, built into the package beside the library: it prints a state dir's
    ledger as JSON (libinterpose/README.md, "Reading a ledger"), so Python never parses the
    binary layout."""
    from pathlib import Path

    return Path(__file__).resolve().parent / "lib" / READER_NAME


def require(directory: str | None = None) -> Path:
    """The host library's path; :class:`LibraryMissing` with the fix when it is not there."""
    from pathlib import Path

    directory = directory or host_dir()
    path = Path(directory) / NAME
    if not path.is_file():
        where = "" if directory == DEFAULT_DIR else f" --dir {directory}"
        raise LibraryMissing(
            f"{path} not found, so the GPU memory cap cannot be mounted into containers; "
            f"install it with `{'' if os.geteuid() == 0 else 'sudo '}gpumem-compose install-lib{where}` "
            f"(or set {ENV_DIR})"
        )
    return path


def install(directory: str | None = None, source: str | None = None) -> Path:
    """Copy the library into ``directory`` atomically; returns the installed path."""
    import shutil
    import tempfile
    from pathlib import Path

    src = Path(source) if source else packaged()
    if not src.is_file():
        raise LibraryMissing(
            f"{src} not found: this install of compose_gpumem carries no libgpumem.so; "
            "reinstall with `pip install .` from a checkout on a host with a C compiler"
        )
    target_dir = Path(directory or host_dir())
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{NAME}.", dir=target_dir)
        try:
            with os.fdopen(fd, "wb") as out, src.open("rb") as data:
                shutil.copyfileobj(data, out)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target_dir / NAME)
        except BaseException:
            os.unlink(tmp)
            raise
    except PermissionError as error:
        raise LibraryMissing(
            f"cannot write {target_dir}: {error.strerror}; run it as root (sudo) or pass --dir"
        ) from error
    except OSError as error:  # a file where the directory should be, /proc, a full disk...
        raise LibraryMissing(
            f"cannot install into {target_dir}: {error.strerror}; pass another --dir"
        ) from error
    return target_dir / NAME
