"""Real framework apps wrapped in the lossless middleware: Starlette, FastAPI, Flask, Django.

Each has ``/`` (hello), ``/slow`` (sleeps 1 s) and ``/drain`` (calls ``drain()`` from code).
"""

from __future__ import annotations

import asyncio
import os
import time

from lossless.asgi import LosslessMiddleware
from lossless.lifecycle import get_lifecycle
from lossless.wsgi import LosslessWSGIMiddleware


def starlette_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("hello")

    async def slow(request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(1)
        return PlainTextResponse("hello")

    async def drain(request):  # type: ignore[no-untyped-def]
        get_lifecycle().drain(reason="test")
        return PlainTextResponse("draining")

    return Starlette(
        routes=[Route("/", hello), Route("/slow", slow), Route("/drain", drain)],
        middleware=[Middleware(LosslessMiddleware)],
    )


def fastapi_app():  # type: ignore[no-untyped-def]
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()
    app.add_middleware(LosslessMiddleware)

    @app.get("/", response_class=PlainTextResponse)
    async def hello() -> str:
        return "hello"

    @app.get("/slow", response_class=PlainTextResponse)
    async def slow() -> str:
        await asyncio.sleep(1)
        return "hello"

    @app.get("/drain", response_class=PlainTextResponse)
    async def drain() -> str:
        get_lifecycle().drain(reason="test")
        return "draining"

    return app


def flask_app():  # type: ignore[no-untyped-def]
    from flask import Flask

    app = Flask("lossless_test")

    @app.get("/")
    def hello() -> str:
        return "hello"

    @app.get("/slow")
    def slow() -> str:
        time.sleep(1)
        return "hello"

    app.wsgi_app = LosslessWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def django_app():  # type: ignore[no-untyped-def]
    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import path

    def hello(request):  # type: ignore[no-untyped-def]
        return HttpResponse("hello", content_type="text/plain")

    def slow(request):  # type: ignore[no-untyped-def]
        time.sleep(1)
        return HttpResponse("hello", content_type="text/plain")

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="test-only",
        MIDDLEWARE=[],
    )
    globals()["urlpatterns"] = [path("", hello), path("slow", slow)]
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return LosslessWSGIMiddleware(get_wsgi_application())


async def _pid_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """``/`` answers ``hello`` with the worker's pid in ``x-pid``; ``/slow`` after 0.5 s."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", b"5"),
                (b"x-pid", str(os.getpid()).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


#: A plain ASGI app in the middleware, for servers that are not ``lossless serve``.
server_app = LosslessMiddleware(_pid_app)
