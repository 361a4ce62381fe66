"""A gRPC server under ``lossless.grpc``, no generated code: generic handlers on raw bytes.

``python grpc_app.py sync|aio PORT``; drain settings from ``LOSSLESS_*`` variables;
``APP_DRAIN_HOOK_FILE``: an ``on_drain`` hook that takes 0.5 s, then writes that file.
``APP_STARTED_FILE``: each ``Slow`` call appends a line to it when it starts (a test waits for
that instead of sleeping).
``plain`` (``sync|aio|plain``) is a bare ``grpc.server`` with the standard health service (always SERVING) that
stops at once at SIGTERM (``server.stop(0)``), as most services do: the naive baseline of
tests/verify/test_grpc_load.py.

- ``/t.Test/Slow``: unary; the request is a number of seconds to sleep; answers ``done``.
- ``/t.Test/Stream``: unary -> stream; the request is ``N,INTERVAL``; sends ``0``..``N-1``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

import lossless.grpc
from lossless import events
from lossless.lifecycle import Lifecycle


def _started() -> None:
    marker = os.environ.get("APP_STARTED_FILE")
    if marker:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")


def slow(request: bytes, context: Any) -> bytes:
    _started()
    time.sleep(float(request or b"0"))
    return b"done"


def stream(request: bytes, context: Any) -> Iterator[bytes]:
    n, interval = request.split(b",")
    for i in range(int(n)):
        yield str(i).encode()
        time.sleep(float(interval))


async def aslow(request: bytes, context: Any) -> bytes:
    _started()
    await asyncio.sleep(float(request or b"0"))
    return b"done"


async def astream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    n, interval = request.split(b",")
    for i in range(int(n)):
        yield str(i).encode()
        await asyncio.sleep(float(interval))


def handlers(aio: bool) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "t.Test",
        {
            "Slow": grpc.unary_unary_rpc_method_handler(aslow if aio else slow),
            "Stream": grpc.unary_stream_rpc_method_handler(astream if aio else stream),
        },
    )


async def main_aio(port: int, lc: Lifecycle) -> int:
    srv = lossless.grpc.aio_server(lifecycle=lc)
    srv.add_generic_rpc_handlers((handlers(True),))
    srv.add_insecure_port(f"127.0.0.1:{port}")
    return await lossless.grpc.serve_aio(srv, lc, services=["t.Test"])


def main_plain(port: int) -> int:
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2_grpc

    srv = grpc.server(futures.ThreadPoolExecutor(16))
    srv.add_generic_rpc_handlers((handlers(False),))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), srv)  # "" SERVING
    srv.add_insecure_port(f"127.0.0.1:{port}")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    srv.start()
    stopped.wait()
    srv.stop(0).wait()
    return 0


def main() -> int:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "plain":
        return main_plain(port)
    events.configure()
    lc = Lifecycle()
    if os.environ.get("APP_DRAIN_HOOK_FILE"):  # a 0.5 s on_drain hook that writes a file
        marker = os.environ["APP_DRAIN_HOOK_FILE"]

        @lc.on_drain
        def flush() -> None:
            time.sleep(0.5)
            with open(marker, "w") as f:
                f.write("flushed\n")

    if mode == "aio":
        return asyncio.run(main_aio(port, lc))
    srv = lossless.grpc.server(lifecycle=lc)
    srv.add_generic_rpc_handlers((handlers(False),))
    srv.add_insecure_port(f"127.0.0.1:{port}")
    return lossless.grpc.serve(srv, lc, services=["t.Test"])


if __name__ == "__main__":
    sys.exit(main())
