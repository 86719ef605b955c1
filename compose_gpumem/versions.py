"""``gpumem-compose version``: ours, the library's, and the Compose that runs, with where each is.

The library carries no version string of its own; it is built from the same checkout as the
package, so it is named by the package version it shipped with and by a hash of its bytes, and
the installed copy is compared with the packaged one (an old ``install-lib`` shows up here).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

from . import __version__, compose, library
from .errors import GpumemError


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return ""


def compose_origin(cmd: list[str]) -> str:
    """Where the Compose that runs comes from, said so a user can tell a plugin from ours."""
    if cmd[1:2] == ["compose"]:
        standalone = compose._which("docker-compose")
        instead = f", used instead of {standalone}" if standalone else ""
        return f"Docker's `docker compose` plugin (already installed{instead})"
    if not cmd[0].startswith("/"):
        return f"COMPOSE_BIN={' '.join(cmd)}"
    return f"{cmd[0]}"


def gather(compose_bin: str | None = None) -> dict[str, Any]:
    packaged = library.packaged()
    installed = Path(library.host_dir()) / library.NAME
    info: dict[str, Any] = {
        "gpumem-compose": __version__,
        "library": {
            "packaged": str(packaged) if packaged.is_file() else None,
            "packaged_sha256": _digest(packaged) or None,
            "installed": str(installed) if installed.is_file() else None,
            "installed_sha256": _digest(installed) or None,
        },
        "compose": None,
    }
    try:
        cmd = compose.command(compose_bin)
    except GpumemError as error:
        info["compose_error"] = str(error)
        return info
    try:
        done = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, check=False)
        found = done.stdout.strip() or done.stderr.strip()
    except OSError as error:
        found = f"cannot run: {error.strerror}"
    info["compose"] = {"version": found, "from": compose_origin(cmd), "argv": cmd}
    return info


def render(info: dict[str, Any]) -> str:
    lib = info["library"]
    lines = [f"gpumem-compose {info['gpumem-compose']}"]
    if lib["packaged"]:
        lines.append(f"libgpumem.so {info['gpumem-compose']} (sha256 {lib['packaged_sha256']}, packaged)")
    else:
        lines.append("libgpumem.so: none packaged (built with GPUMEM_SKIP_LIB=1)")
    if lib["installed"] is None:
        lines.append(
            f"  installed: no ({Path(library.host_dir()) / library.NAME}; `gpumem-compose install-lib`)"
        )
    elif lib["installed_sha256"] == lib["packaged_sha256"]:
        lines.append(f"  installed: {lib['installed']} (the same)")
    else:
        lines.append(
            f"  installed: {lib['installed']} (sha256 {lib['installed_sha256']}: another build; "
            "`gpumem-compose install-lib` replaces it)"
        )
    if info["compose"] is None:
        lines.append(f"Docker Compose: {info.get('compose_error')}")
    else:
        lines.append(f"Docker Compose {info['compose']['version']} from {info['compose']['from']}")
    return "\n".join(lines) + "\n"
