"""A Flask app that starts a thread at import, as apps do (metrics pushers, cache warmers).

``/import`` answers ``<importing pid> <serving pid> <thread alive>``: under gunicorn without
``--preload`` the app is imported in the worker, so the pids match and the thread is alive.
"""

from __future__ import annotations

import os
import threading

from flask import Flask

from lossless.wsgi import LosslessWSGIMiddleware

IMPORTED_IN = os.getpid()
_stop = threading.Event()
_worker = threading.Thread(target=_stop.wait, name="import-time-thread", daemon=True)
_worker.start()

app = Flask("import_time_app")


@app.get("/import")
def where() -> str:
    return f"{IMPORTED_IN} {os.getpid()} {_worker.is_alive()}"


app.wsgi_app = LosslessWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
