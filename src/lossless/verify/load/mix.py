"""What the load sends: one or several request kinds (method, path, headers, body), weighted.

``lossless verify --method POST --path /orders --body @order.json --header 'Content-Type:
application/json'`` sends one kind; ``--mix '80 GET /' --mix '20 POST /orders @order.json'``
sends a weighted mix, each request's kind drawn with the run's seed. Every kind knows whether it
is idempotent (RFC 9110 section 9.2.2: GET, HEAD, OPTIONS, TRACE, PUT and DELETE), which a proxy
uses to decide what it may retry, and which the analysis reports per kind.

A :class:`RequestKind` builds its request bytes once per (endpoint, ``Connection: close``) pair;
the generator only appends the ``x-lossless-seq`` header and the body.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError

__all__ = ["IDEMPOTENT_METHODS", "RequestKind", "RequestMix", "parse_body", "parse_header"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@dataclasses.dataclass(frozen=True)
class RequestKind:
    """One kind of request: ``method`` ``path`` with ``headers`` and ``body`` (bytes), drawn
    with probability ``weight`` / the sum of the weights."""

    method: str = "GET"
    path: str = "/"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.method or not set(self.method) <= _TOKEN:
            raise LosslessError(f"--method {self.method!r}: not an HTTP method")
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n"):
            raise LosslessError(f"path {self.path!r}: must start with / and hold no space")
        if not self.weight > 0:
            raise LosslessError(f"--mix weight must be > 0 (got {self.weight:g})")

    @property
    def name(self) -> str:
        """``POST /orders``: how reports name the kind."""
        return f"{self.method} {self.path}"

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT_METHODS

    def head(self, host: str, port: int, close: bool) -> bytes:
        """The request line and headers up to ``x-lossless-seq: `` (the generator appends the seq,
        the end of the headers and the body)."""
        authority = f"[{host}]" if ":" in host else host
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {authority}:{port}"]
        lines.append("User-Agent: lossless-verify")
        lines.extend(f"{k}: {v}" for k, v in self.headers)
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\nx-lossless-seq: ").encode("latin-1")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "path": self.path,
            "weight": self.weight,
            "idempotent": self.idempotent,
            "body_bytes": len(self.body),
            "headers": [f"{k}: {v}" for k, v in self.headers],
        }


@dataclasses.dataclass(frozen=True)
class RequestMix:
    """The kinds of one run (at least one). :meth:`chooser` draws each request's kind index."""

    kinds: tuple[RequestKind, ...] = (RequestKind(),)

    def __post_init__(self) -> None:
        if not self.kinds:
            raise LosslessError("the request mix needs at least one kind")

    def chooser(self, seed: int) -> Any:
        """A function ``() -> kind index`` drawing with the weights, seeded (its own generator:
        the other random choices of a run stay what they were)."""
        if len(self.kinds) == 1:
            return lambda: 0
        rng = random.Random(f"mix:{seed}")
        total = sum(k.weight for k in self.kinds)
        bounds: list[float] = []
        acc = 0.0
        for k in self.kinds:
            acc += k.weight / total
            bounds.append(acc)
        last = len(bounds) - 1

        def choose() -> int:
            x = rng.random()
            for i, bound in enumerate(bounds):
                if x < bound:
                    return i
            return last

        return choose

    def to_json(self) -> list[dict[str, Any]]:
        return [k.to_json() for k in self.kinds]

    @classmethod
    def parse(cls, specs: list[str], headers: tuple[tuple[str, str], ...]) -> RequestMix:
        """``--mix 'WEIGHT METHOD PATH [BODY|@FILE]'`` values (LosslessError naming the bad one)."""
        kinds: list[RequestKind] = []
        for spec in specs:
            parts = spec.split(None, 3)
            if len(parts) < 3:
                raise LosslessError(f"--mix {spec!r}: expected 'WEIGHT METHOD PATH [BODY|@FILE]'")
            weight_text = parts[0].rstrip("%")
            try:
                weight = float(weight_text)
            except ValueError:
                raise LosslessError(
                    f"--mix {spec!r}: weight {parts[0]!r} is not a number"
                ) from None
            body = parse_body(parts[3]) if len(parts) == 4 else b""
            kinds.append(RequestKind(parts[1].upper(), parts[2], body, headers, weight))
        return cls(tuple(kinds))


def parse_body(text: str) -> bytes:
    """``--body TEXT`` or ``--body @FILE`` (the file's bytes; LosslessError when unreadable)."""
    if not text.startswith("@"):
        return text.encode("utf-8")
    path = Path(text[1:])
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LosslessError(f"--body {text}: cannot read {path}: {exc.strerror or exc}") from None


def parse_header(text: str) -> tuple[str, str]:
    """``--header 'Name: value'`` (LosslessError for a bad name or a line break)."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or not set(name) <= _TOKEN or any(c in value for c in "\r\n"):
        raise LosslessError(f"--header {text!r}: expected 'Name: value'")
    if name.lower() in ("host", "content-length", "connection", "x-lossless-seq"):
        raise LosslessError(f"--header {text!r}: {name} is set by the load generator")
    return name, value
