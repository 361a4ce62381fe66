"""The minimal ASGI app of the overhead benchmark: ``bare`` as is, ``wrapped`` in the middleware."""

from __future__ import annotations

from typing import Any

from lossless.asgi import LosslessMiddleware

_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
_BODY = {"type": "http.response.body", "body": b"ok"}


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)


wrapped = LosslessMiddleware(bare, loop_check=False)
