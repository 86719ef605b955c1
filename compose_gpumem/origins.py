"""Which of the user's files holds a value, so that a message names the file to open.

Compose merges the ``-f`` files, their ``include``s and every ``extends`` into one model and
says nothing of where each value came from.  This module follows the same paths over the files
as written (no interpolation): a later ``-f`` file wins over an earlier one; an ``include``d
file brings its services (not its top-level ``x-*``: Compose does not import those); a service
with ``extends`` starts from the service it extends; ``include`` and ``extends.file`` paths are
relative to the file that names them.  Files are read only when a message needs them.
"""

from __future__ import annotations

import os

from . import compose, yamlio
from .errors import GpumemError, Overcommit

TYPE_CHECKING = False  # `typing` stays off the path of `config` (see options.py)
if TYPE_CHECKING:
    from typing import Any

#: per key, where the value Compose keeps is written: a file's absolute path and the service
#: there (another than the one asked about when it comes through ``extends``; "" at the top level)
Keys = dict[str, tuple[str, str]]


class Origins:
    """Where the project's values are written; :meth:`file` answers for one of them."""

    def __init__(self, options: compose.Options) -> None:
        self._options = options
        self._model: tuple[dict[str, Keys], Keys] | None = None
        self._texts: dict[str, Any] = {}
        self._given: dict[str, str] = {}

    def file(self, service: str | None, key: str) -> str | None:
        """The file holding ``key`` of ``service`` (``None``: the top level), as the user would
        name it; for a service without the key, the top-level default's file.  ``None`` when no
        file can be told (stdin, a path only interpolation names)."""
        found = self.place(service, key)
        return found[0] if found else None

    def relabel(self, error: GpumemError) -> None:
        """Point ``error`` at the file and the service block its value is written in (an
        overcommit: at the files of the values that add up)."""
        if isinstance(error, Overcommit) and error.service is None:
            files = [self.file(service, error.key) for service in error.services]
            if files and all(files):
                error.file = ", ".join(dict.fromkeys(f for f in files if f))
            return
        if error.service is None and error.value is None:
            return  # about the project as a whole
        found = self.place(error.service, error.key)
        if found is None:
            return
        error.file, written_in = found
        if written_in and error.service is not None and written_in != error.service:
            error.service, error.extended_by = written_in, error.service

    def named(self, service: str, key: str, label: str) -> str:
        """``FILE: service 'NAME'`` for a message about ``key`` of ``service``."""
        error = GpumemError("", file=label, service=service, key=key)
        self.relabel(error)
        return str(error).removesuffix(": ")

    def place(self, service: str | None, key: str) -> tuple[str, str] | None:
        """:meth:`file`, and the service whose block holds the value there ("" at the top level;
        the base service when it comes through ``extends``)."""
        services, top = self._load()
        found = None
        if service is not None:
            keys = services.get(service)
            if keys is None and "-" in service:  # a replica, `trainer-2`
                keys = services.get(service.rsplit("-", 1)[0])
            found = (keys or {}).get(key)
        found = found or top.get(key)
        return (self._shown(found[0]), found[1]) if found else None

    def _shown(self, path: str) -> str:
        """A ``-f`` file as given; any other relative to the working directory when under it."""
        if path in self._given:
            return self._given[path]
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative

    def _load(self) -> tuple[dict[str, Keys], Keys]:
        if self._model is None:
            services: dict[str, Keys] = {}
            top: Keys = {}
            for given in compose.user_files(self._options):
                path = os.path.abspath(given)
                if not os.path.isabs(given):
                    self._given.setdefault(path, given)
                file_services, file_top = self._file(path, frozenset())
                for name, keys in file_services.items():
                    services[name] = {**services.get(name, {}), **keys}
                top.update(file_top)
            self._model = (services, top)
        return self._model

    def _read(self, path: str) -> dict[str, Any]:
        if path not in self._texts:
            try:
                with open(path, encoding="utf-8", errors="replace") as file:
                    doc = yamlio.load_fast(file.read(64 << 20))
            except Exception:  # unreadable or not YAML: Compose has said why, or will
                doc = None
            self._texts[path] = doc if isinstance(doc, dict) else {}
        result: dict[str, Any] = self._texts[path]
        return result

    def _file(self, path: str, seen: frozenset[str]) -> tuple[dict[str, Keys], Keys]:
        """The services of one file with its includes, and its own top-level keys."""
        if path in seen:
            return {}, {}
        seen = seen | {path}
        doc = self._read(path)
        services: dict[str, Keys] = {}
        for included in _include_paths(doc.get("include"), os.path.dirname(path)):
            for name, keys in self._file(included, seen)[0].items():
                services[name] = {**services.get(name, {}), **keys}
        own = doc.get("services")
        for name, service in (own if isinstance(own, dict) else {}).items():
            if isinstance(service, dict):
                keys = self._service(path, str(name), frozenset())
                services[str(name)] = {**services.get(str(name), {}), **keys}
        top = {str(key): (path, "") for key in doc if key not in ("services", "include")}
        return services, top

    def _service(self, path: str, name: str, seen: frozenset[tuple[str, str]]) -> Keys:
        """One service's keys and the file of each, through its ``extends``."""
        if (path, name) in seen:
            return {}
        services = self._read(path).get("services")
        service = services.get(name) if isinstance(services, dict) else None
        if not isinstance(service, dict):
            return {}
        keys: Keys = {}
        extends = service.get("extends")
        if isinstance(extends, str):
            extends = {"service": extends}
        if isinstance(extends, dict) and extends.get("service") is not None:
            base = path
            if isinstance(extends.get("file"), str):
                base = os.path.normpath(os.path.join(os.path.dirname(path), extends["file"]))
            keys.update(self._service(base, str(extends["service"]), seen | {(path, name)}))
        keys.update({str(key): (path, name) for key in service if key != "extends"})
        return keys


def _include_paths(include: Any, directory: str) -> list[str]:
    """The files an ``include`` list names, short form (``- a.yaml``) and long form
    (``- path: a.yaml`` or ``- path: [a.yaml, b.yaml]``), in the order Compose merges them."""
    paths: list[str] = []
    for entry in include if isinstance(include, list) else []:
        named = entry.get("path") if isinstance(entry, dict) else entry
        for item in named if isinstance(named, list) else [named]:
            if isinstance(item, str) and "$" not in item:
                paths.append(os.path.normpath(os.path.join(directory, item)))
    return paths
