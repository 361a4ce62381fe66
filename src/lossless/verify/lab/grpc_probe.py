"""The kubelet's ``grpc`` probe (Kubernetes >= 1.24, GA in 1.27) for the lab's replicas.

Semantics of kubelet's prober (``pkg/probe/grpc/grpc.go``): a new insecure connection to the
replica's port for each probe, then ``grpc.health.v1.Health/Check`` with the probe's
``service`` (default ``""``, the server's overall health); connect and call share one deadline,
the probe's ``timeoutSeconds``. Success only when the answer is ``SERVING``; any other answer,
an error status or a timeout is a failure, with kubelet's own wording in the detail (a server
without the health service fails with "does not implement the grpc health protocol").
``lossless.grpc.serve`` answers NOT_SERVING until its lifecycle is ready and from the first
SIGTERM on.
"""

from __future__ import annotations

import asyncio

import lossless.verify.load.grpc_client  # noqa: F401 - imports grpc with the lab's settings

try:
    import grpc  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import grpc.aio  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from grpc_health.v1 import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        health_pb2,
        health_pb2_grpc,
    )
except ImportError as exc:  # pragma: no cover - depends on the extras installed
    from lossless.errors import LosslessError

    raise LosslessError(
        f"a grpc readiness probe needs grpcio-health-checking ({exc.name} is missing): "
        "pip install 'lossless[grpc]'"
    ) from exc

__all__ = ["grpc_check"]

_SERVING = health_pb2.HealthCheckResponse.SERVING


async def grpc_check(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    """One probe: ``(success, detail)``; never raises for the replica's faults."""
    addr = f"{host}:{port}"
    channel = grpc.aio.insecure_channel(addr, options=(("grpc.use_local_subchannel_pool", 1),))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout)
        except TimeoutError:
            return False, f"timeout: failed to connect service {addr!r} within {timeout:g}s"
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            left = max(0.001, deadline - loop.time())
            response = await stub.Check(request, timeout=left)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.UNIMPLEMENTED:
                return False, (
                    "error: this server does not implement the grpc health protocol "
                    f"(grpc.health.v1.Health): {exc.details()}"
                )
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return False, f"timeout: health rpc did not complete within {timeout:g}s"
            return False, f"error: health rpc probe failed: {code.name}: {exc.details()}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        if response.status != _SERVING:
            return False, f"service unhealthy (responded with {status!r})"
        return True, "service healthy"
    finally:
        await channel.close()
