"""The one duration syntax of every flag and setting: plain seconds or a unit suffix.

A module of its own (no imports) so that each part may use it: the runtime's settings, the CLI's
argument converters (:mod:`lossless.argtypes`), and check, which must not load the runtime.
"""

from __future__ import annotations


def parse_duration(raw: str) -> float:
    """Seconds as a number, or with a unit suffix: ``500ms``, ``5s``, ``1m``. Raises
    ``ValueError`` for anything else; the sign and finiteness are left to the caller."""
    text = raw.strip().lower()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)
