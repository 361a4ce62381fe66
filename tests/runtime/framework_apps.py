"""Real framework apps wrapped in the lossless middleware: Starlette, FastAPI, Flask, Django.

Each has ``/`` (hello), ``/slow`` (sleeps ``APP_SLOW_SECONDS``, default 1 s) and ``/drain``
(calls ``drain()`` from code).
"""

from __future__ import annotations

import asyncio
import os
import time

from lossless.asgi import LosslessMiddleware
from lossless.lifecycle import get_lifecycle
from lossless.wsgi import LosslessWSGIMiddleware

SLOW = float(os.environ.get("APP_SLOW_SECONDS", "1"))


def starlette_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("hello")

    async def slow(request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(SLOW)
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
        await asyncio.sleep(SLOW)
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
        time.sleep(SLOW)
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
        time.sleep(SLOW)
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
    """``/`` answers ``hello`` with the worker's pid in ``x-pid``; ``/slow`` after 0.5 s;
    ``/drain`` calls ``drain()`` from the app."""
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
    if scope["path"] == "/drain":
        get_lifecycle().drain(reason="app")
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


#: A plain ASGI app in the middleware, for servers that are not ``lossless serve``. With
#: ``APP_DRAIN_MARKER`` set, each worker registers a drain hook that appends its pid to that file.
server_app = LosslessMiddleware(_pid_app)

if os.environ.get("APP_DRAIN_MARKER"):

    @get_lifecycle().on_drain
    def _mark_drain() -> None:
        with open(os.environ["APP_DRAIN_MARKER"], "a") as f:
            f.write(f"{os.getpid()}\n")


# -- more frameworks: each adds the middleware itself (so under lossless serve it is there twice)
def quart_app():  # type: ignore[no-untyped-def]
    from quart import Quart

    app = Quart("lossless_quart")

    @app.get("/")
    async def hello() -> str:
        return "hello"

    @app.get("/slow")
    async def slow() -> str:
        await asyncio.sleep(SLOW)
        return "hello"

    app.asgi_app = LosslessMiddleware(app.asgi_app)  # type: ignore[method-assign]
    return app


def litestar_app():  # type: ignore[no-untyped-def]
    from litestar import Litestar, get
    from litestar.middleware import DefineMiddleware

    @get("/", media_type="text/plain")
    async def hello() -> str:
        return "hello"

    @get("/slow", media_type="text/plain")
    async def slow() -> str:
        await asyncio.sleep(SLOW)
        return "hello"

    return Litestar([hello, slow], middleware=[DefineMiddleware(LosslessMiddleware)])


def falcon_asgi_app():  # type: ignore[no-untyped-def]
    import falcon.asgi

    class Hello:
        async def on_get(self, req, resp):  # type: ignore[no-untyped-def]
            resp.content_type = "text/plain"
            resp.text = "hello"

    class Slow:
        async def on_get(self, req, resp):  # type: ignore[no-untyped-def]
            await asyncio.sleep(SLOW)
            resp.content_type = "text/plain"
            resp.text = "hello"

    app = falcon.asgi.App()
    app.add_route("/", Hello())
    app.add_route("/slow", Slow())
    return LosslessMiddleware(app)


def sanic_app():  # type: ignore[no-untyped-def]
    from sanic import Sanic
    from sanic.response import text

    app = Sanic("lossless_sanic")

    @app.get("/")
    async def hello(request):  # type: ignore[no-untyped-def]
        return text("hello")

    @app.get("/slow")
    async def slow(request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(SLOW)
        return text("hello")

    return LosslessMiddleware(app)


def _django_settings() -> None:
    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import path

    def hello(request):  # type: ignore[no-untyped-def]
        return HttpResponse("hello", content_type="text/plain")

    async def slow(request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(SLOW)
        return HttpResponse("hello", content_type="text/plain")

    settings.configure(
        DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="test-only"
    )
    globals()["urlpatterns"] = [path("", hello), path("slow", slow)]
    django.setup()


def django_asgi_app():  # type: ignore[no-untyped-def]
    _django_settings()
    from django.core.asgi import get_asgi_application

    return LosslessMiddleware(get_asgi_application())


def falcon_wsgi_app():  # type: ignore[no-untyped-def]
    import falcon

    class Hello:
        def on_get(self, req, resp):  # type: ignore[no-untyped-def]
            resp.content_type = "text/plain"
            resp.text = "hello"

    class Slow:
        def on_get(self, req, resp):  # type: ignore[no-untyped-def]
            time.sleep(SLOW)
            resp.content_type = "text/plain"
            resp.text = "hello"

    app = falcon.App()
    app.add_route("/", Hello())
    app.add_route("/slow", Slow())
    return LosslessWSGIMiddleware(app)


def pyramid_app():  # type: ignore[no-untyped-def]
    from pyramid.config import Configurator
    from pyramid.response import Response

    def hello(request):  # type: ignore[no-untyped-def]
        return Response("hello", content_type="text/plain")

    def slow(request):  # type: ignore[no-untyped-def]
        time.sleep(SLOW)
        return Response("hello", content_type="text/plain")

    with Configurator() as config:
        config.add_route("hello", "/")
        config.add_view(hello, route_name="hello")
        config.add_route("slow", "/slow")
        config.add_view(slow, route_name="slow")
        app = config.make_wsgi_app()
    return LosslessWSGIMiddleware(app)


def django_db_app():  # type: ignore[no-untyped-def]
    """Django on SQLite with persistent connections (``CONN_MAX_AGE=None``) and a readiness
    check that queries the database, as Django apps do. ``/connections`` answers how many
    database connections Django opened so far and how many times the check ran."""
    import tempfile

    import django
    from django.conf import settings
    from django.db import connection
    from django.db.backends.signals import connection_created
    from django.http import HttpResponse
    from django.urls import path

    opened: list[int] = []
    checked: list[int] = []

    def connections(request):  # type: ignore[no-untyped-def]
        return HttpResponse(f"{len(opened)} {len(checked)}", content_type="text/plain")

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="test-only",
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(tempfile.mkdtemp(prefix="lossless-django-"), "db.sqlite3"),
                "CONN_MAX_AGE": None,
            }
        },
    )
    globals()["urlpatterns"] = [path("connections", connections)]
    django.setup()
    connection_created.connect(lambda sender, **kw: opened.append(1), weak=False)

    @get_lifecycle().check("db")
    def db() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checked.append(1)
        return "ok"

    from django.core.wsgi import get_wsgi_application

    return LosslessWSGIMiddleware(get_wsgi_application())
