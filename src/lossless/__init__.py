"""lossless: upgrade services with zero failed requests, and prove it.

The public runtime API is small: a :class:`Lifecycle` (the drain sequence, hooks and health
checks), its :class:`Settings`, and middleware for ASGI and WSGI apps. ``lossless serve``,
``run``, ``prestop``, ``check``, ``verify`` and ``report`` are command-line tools.
"""

from __future__ import annotations

from lossless.asgi import LosslessMiddleware
from lossless.errors import LosslessError, SettingsError
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
