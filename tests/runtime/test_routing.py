"""The one router of lossless' own paths, and which lifecycle a middleware uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lossless.asgi import LosslessMiddleware
from lossless.lifecycle import Lifecycle, get_lifecycle, set_lifecycle
from lossless.routing import Router
from lossless.settings import Settings
from lossless.testing import record_events


@pytest.fixture
def lc() -> Iterator[Lifecycle]:
    lifecycle = Lifecycle(Settings(drain_delay=0, metrics_path="/metrics"))
    lifecycle.startup_sync()
    lifecycle.health.evaluate()
    yield lifecycle
    lifecycle.health.stop()


def test_paths_methods_and_root_path(lc: Lifecycle) -> None:
    router = Router(lc)
    assert router.respond("GET", "/") is None  # the app's
    assert router.respond("GET", "/readyz/") is None
    ok = router.respond("GET", "/readyz")
    assert ok is not None and (ok.status, ok.body, ok.close) == (200, b"ok", False)
    head = router.respond("HEAD", "/readyz")
    assert head is not None and head.body == b"" and ("Content-Length", "2") in head.headers
    post = router.respond("POST", "/livez")
    assert post is not None and post.status == 405 and ("Allow", "GET, HEAD") in post.headers
    assert router.match("/svc/readyz", "/svc") == "readyz"  # ASGI: root_path is in path
    assert router.match("/readyz", "/svc") == "readyz"
    assert router.match("/svc/other", "/svc") is None
    assert router.match("/lossless/drain") == "admin" and router.match("/metrics") == "metrics"
    disabled = router.respond("POST", "/lossless/drain", client="127.0.0.1")
    assert disabled is not None and disabled.status == 404  # no token file configured
    lc.drain()
    draining = router.respond("GET", "/readyz")
    assert draining is not None and draining.status == 503 and draining.close


def test_a_middleware_given_a_lifecycle_makes_it_the_process_wide_one() -> None:
    set_lifecycle(None)
    try:
        mine = Lifecycle(Settings(drain_delay=0))
        LosslessMiddleware(lambda *a: None, lifecycle=mine)  # type: ignore[arg-type, return-value]
        assert get_lifecycle() is mine
        with record_events() as events:
            other = Lifecycle(Settings(drain_delay=0))
            LosslessMiddleware(lambda *a: None, lifecycle=other)  # type: ignore[arg-type, return-value]
        assert get_lifecycle() is mine
        (conflict,) = [e for e in events if e["event"] == "lifecycle_conflict"]
        assert conflict["level"] == "error" and "LosslessMiddleware" in conflict["user"]
    finally:
        set_lifecycle(None)
