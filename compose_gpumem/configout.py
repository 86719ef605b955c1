"""``config --format json``: Compose's own JSON with the caps injected, nothing else changed.

Compose's JSON and YAML differ (its JSON drops service-level ``x-*`` keys, keeps ``null``
entries and empty maps), so the JSON is not the YAML converted: Compose is asked for both at
once, the YAML decides the caps (it keeps ``x-gpu-memory``) and the JSON carries them.  It is
printed as Compose prints it: two spaces, ``<``, ``>`` and ``&`` escaped, no final newline.
"""

from __future__ import annotations

import json
from typing import Any

from . import inject, library
from .project import Project

#: Characters Go's encoder escapes in every string (outside strings JSON never has them).
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_text(project: Project, compose_json: str) -> str:
    """Compose's JSON text with the caps of ``project`` injected into its services."""
    if not project.plans:
        return compose_json
    doc: dict[str, Any] = json.loads(compose_json)
    services = doc.get("services") or {}
    source = library.host_dir().replace("$", "$$")  # as Compose escapes `$` in its output
    for name, plan in project.plans.items():
        if name in services:
            services[name] = inject.inject_service(
                services[name], plan, source, name=name, names=project.names
            )
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text
