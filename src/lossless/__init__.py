"""lossless: upgrade services with zero failed requests, and prove it.

The public runtime API is small: a :class:`Lifecycle` (the drain sequence), health checks, and
middleware for ASGI and WSGI apps. ``lossless check`` and ``lossless verify`` are command-line tools.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
