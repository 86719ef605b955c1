"""``config --format json``: Compose's own JSON with the caps injected, nothing else changed.

Compose's JSON and YAML differ (its JSON drops service-level ``x-*`` keys, keeps ``null``
entries and empty maps), so the JSON is not the YAML converted: the JSON is Compose's own, the
caps are decided by :func:`compose_gpumem.project.load_json`.  It is printed as Compose prints
it: two spaces, ``<``, ``>`` and ``&`` escaped, no final newline.
"""

from __future__ import annotations

import json

from . import caplabels, inject, library

TYPE_CHECKING = False  # `typing` stays off the path of `config` (see options.py)
if TYPE_CHECKING:
    from typing import Any

#: Characters Go's encoder escapes in every string (outside strings JSON never has them).
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_text(
    plans: dict[str, inject.Plan], compose_json: str, names: caplabels.GpuNames | None = None
) -> str:
    """Compose's JSON text with ``plans`` injected into its services (``names``: the host's
    GPUs, for labels naming them by UUID)."""
    if not plans:
        return compose_json
    doc: dict[str, Any] = json.loads(compose_json)
    services = doc.get("services") or {}
    source = library.host_dir().replace("$", "$$")  # as Compose escapes `$` in its output
    for name, plan in plans.items():
        if name in services:
            services[name] = inject.inject_service(services[name], plan, source, name=name, names=names)
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text
