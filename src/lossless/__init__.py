"""lossless: upgrade services with zero failed requests, and prove it.

The public runtime API is small: a :class:`Lifecycle` (the drain sequence, hooks and health
checks), its :class:`Settings`, and middleware for ASGI and WSGI apps. ``lossless serve``,
``run``, ``prestop``, ``check``, ``verify`` and ``report`` are command-line tools.

The package root is lazy (PEP 562): ``import lossless.check`` or ``import lossless.verify``
loads none of the runtime; ``from lossless import Lifecycle`` imports the runtime module that
defines it on first use. tests/test_boundaries.py holds this and the dependency contracts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Lifecycle": "lossless.lifecycle",
    "State": "lossless.lifecycle",
    "get_lifecycle": "lossless.lifecycle",
    "set_lifecycle": "lossless.lifecycle",
    "LosslessMiddleware": "lossless.asgi",
    "LosslessWSGIMiddleware": "lossless.wsgi",
    "LosslessError": "lossless.errors",
    "SettingsError": "lossless.errors",
    "Settings": "lossless.settings",
}

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

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from lossless.asgi import LosslessMiddleware
    from lossless.errors import LosslessError, SettingsError
    from lossless.lifecycle import Lifecycle, State, get_lifecycle, set_lifecycle
    from lossless.settings import Settings
    from lossless.wsgi import LosslessWSGIMiddleware


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lossless' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
