"""``lossless.grpc``, the documented import path of the gRPC integration (docs/grpc.md); it
lives in :mod:`lossless.serve.grpc` beside the other servers. Everything public is re-exported."""

from __future__ import annotations

from lossless.serve.grpc import *  # noqa: F403
from lossless.serve.grpc import __all__ as __all__
