"""``lossless.testing`` with a real test client (Starlette's TestClient runs the app's lifespan
in a thread with its own event loop, as pytest suites do)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from lossless.asgi import LosslessMiddleware
from lossless.lifecycle import Lifecycle, get_lifecycle, set_lifecycle
from lossless.settings import Settings
from lossless.testing import fresh_lifecycle, record_events


@pytest.fixture
def app() -> Iterator[Starlette]:
    """An app built as apps are: a check and a drain hook registered at import on the
    process-wide lifecycle, the middleware added with ``add_middleware``."""
    set_lifecycle(Lifecycle(Settings(drain_delay=0, check_interval=0.05, expose_details=True)))
    lc = get_lifecycle()
    drained: list[int] = []

    @lc.check("db")
    def db() -> str:
        return "connected"

    lc.on_drain(lambda: drained.append(1), name="deregister")

    async def hello(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("hello")

    yield Starlette(routes=[Route("/", hello)], middleware=[Middleware(LosslessMiddleware)])
    lc.health.stop()
    set_lifecycle(None)


def _ready(client: TestClient, timeout: float = 5.0) -> bytes:
    end = time.monotonic() + timeout
    while True:
        response = client.get("/readyz?verbose")
        if response.status_code == 200 or time.monotonic() >= end:
            return response.content
        time.sleep(0.01)


def test_a_second_test_client_without_the_helper_says_why_it_is_not_ready(app) -> None:
    with TestClient(app) as client:
        assert b"readyz check passed" in _ready(client)
    with TestClient(app) as client:
        response = client.get("/readyz?verbose")
    assert response.status_code == 503
    assert b"[-]shutdown failed: lifecycle stopping" in response.content


def test_each_block_gets_the_apps_lifecycle_anew(app) -> None:
    """1. two test clients in a row, each inside ``fresh_lifecycle()`` 2. in the second, drain.
    Result: both become ready with the check registered at import (its text shown), the drain
    turns readiness 503 while liveness stays 200 and runs the drain hook, and the events say so
    in order."""
    for _ in range(2):
        with fresh_lifecycle() as lc, TestClient(app) as client:
            assert lc is get_lifecycle()
            body = _ready(client)
            assert b"[+]db ok: connected" in body and b"readyz check passed" in body
            assert client.get("/").text == "hello"
    with fresh_lifecycle() as lc, TestClient(app) as client:
        _ready(client)
        with record_events() as events:
            assert lc.drain(reason="test")
            assert client.get("/readyz").status_code == 503
            assert client.get("/livez").status_code == 200
            response = client.get("/")
            assert response.headers["connection"] == "close"
            events.wait_for("drain_hook_done")
        assert events.names()[0] == "draining"
        assert events[0]["reason"] == "test"
    # The app's own lifecycle is back and untouched by the drains above.
    assert not get_lifecycle().draining
