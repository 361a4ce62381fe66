"""``prod_apps.asgi`` (SSE, chunked and stuck streams) behind the middleware, for servers that
``lossless run`` supervises (tests/runtime/test_run_streams.py)."""

from prod_apps import asgi

from lossless.asgi import LosslessMiddleware

app = LosslessMiddleware(asgi)
