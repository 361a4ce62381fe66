"""The aiohttp recipe of docs/run.md: aiohttp is not ASGI, so it reads the drain state that
``lossless run`` shares and closes connections from t0 on. ``python aiohttp_app.py PORT``."""

from __future__ import annotations

import sys

from aiohttp import web

from lossless import get_lifecycle

lc = get_lifecycle()  # under lossless run: maps LOSSLESS_DRAIN_STATE, sees its t0


@web.middleware
async def close_while_draining(request, handler):  # type: ignore[no-untyped-def]
    response = await handler(request)
    if lc.draining:
        response.force_close()  # Connection: close from t0 on
    return response


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


app = web.Application(middlewares=[close_while_draining])
app.router.add_get("/", hello)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
