"""lossless: upgrade services with zero failed requests, and prove it.

The public runtime API is small: a :class:`Lifecycle` (the drain sequence, hooks and health
checks), its :class:`Settings`, and middleware for ASGI and WSGI apps. ``lossless serve``,
``run``, ``prestop``, ``check``, ``verify`` and ``report`` are command-line tools.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError, SettingsError

if TYPE_CHECKING:
    from lossless.asgi import LosslessMiddleware
    from lossless.lifecycle import Lifecycle, State, get_lifecycle, set_lifecycle
    from lossless.settings import Settings
    from lossless.wsgi import LosslessWSGIMiddleware

__version__ = "0.1.0"

__all__ = [
    "Lifecycle",
    "LosslessError",
    "LosslessMiddleware",
    "LosslessWSGIMiddleware",
    "Settings",
    "SettingsError",
    "State",
    "__version__",
    "get_lifecycle",
    "set_lifecycle",
]

# The runtime API is imported on first use, so ``lossless check`` and ``lossless verify`` (and
# ``import lossless.check``) start without loading asyncio and the runtime.
_LAZY = {
    "Lifecycle": "lossless.lifecycle",
    "State": "lossless.lifecycle",
    "get_lifecycle": "lossless.lifecycle",
    "set_lifecycle": "lossless.lifecycle",
    "Settings": "lossless.settings",
    "LosslessMiddleware": "lossless.asgi",
    "LosslessWSGIMiddleware": "lossless.wsgi",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lossless' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
