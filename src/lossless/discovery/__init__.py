"""Service discovery driven by the lifecycle: register when ready, deregister at t0.

Callers that find instances through a registry keep calling an instance until the registry
tells them it is gone (and often for as long as they cache what it said). So an instance must
leave the registry *before* it stops serving: at t0, at the start of the drain delay, while it
still serves everything it receives. See docs/discovery.md.

>>> from lossless.discovery import Instance, attach, registry_from_url
>>> instance = Instance.detect("orders", 8000)
>>> attach(lifecycle, registry_from_url("etcd://127.0.0.1:2379/services", instance))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Lazy (PEP 562): importing one registrar module (or lossless.etcdv3 through it) does not load
# attach() and with it the lifecycle.
_EXPORTS: dict[str, str] = {
    "Attachment": "lossless.discovery.attach",
    "attach": "lossless.discovery.attach",
    "Instance": "lossless.discovery.instance",
    "Registrar": "lossless.discovery.registrar",
    "RegistryError": "lossless.errors",
    "registry_from_url": "lossless.discovery.urls",
}

__all__ = ["Attachment", "Instance", "Registrar", "RegistryError", "attach", "registry_from_url"]

if TYPE_CHECKING:  # pragma: no cover
    from lossless.discovery.attach import Attachment, attach
    from lossless.discovery.instance import Instance
    from lossless.discovery.registrar import Registrar
    from lossless.discovery.urls import registry_from_url
    from lossless.errors import RegistryError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lossless.discovery' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
