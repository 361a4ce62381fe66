"""A replica for the stress tests: HTTP/1.1 on $PORT, 200 "ok" (keep-alive) on every path, and
misbehaviour on demand, each on the *first life* of the replica on its port only (a marker file
``$MARKER_DIR/<port>`` tells a restarted container from a new one):

``EXIT_AFTER=S``        exit with code 1 S seconds after start (a crash of its own)
``LIVEZ_FAIL_AFTER=S``  ``/livez`` answers 500 from S seconds after start
``STARTUP_AFTER=S``     ``/startupz`` answers 503 until S seconds after start (every life)

SIGTERM exits at once (code 0).
"""

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

START = time.monotonic()
PORT = int(os.environ["PORT"])
marker = os.path.join(os.environ.get("MARKER_DIR", "/nonexistent"), str(PORT))
FIRST_LIFE = "MARKER_DIR" in os.environ and not os.path.exists(marker)
if FIRST_LIFE:
    with open(marker, "w") as f:
        f.write("started\n")
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))


def since() -> float:
    return time.monotonic() - START


def status_for(path: str) -> int:
    if path == "/livez" and FIRST_LIFE and "LIVEZ_FAIL_AFTER" in os.environ:
        return 500 if since() >= float(os.environ["LIVEZ_FAIL_AFTER"]) else 200
    if path == "/startupz" and "STARTUP_AFTER" in os.environ:
        return 200 if since() >= float(os.environ["STARTUP_AFTER"]) else 503
    return 200


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(status_for(self.path))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if FIRST_LIFE and "EXIT_AFTER" in os.environ:

    def crash() -> None:
        time.sleep(float(os.environ["EXIT_AFTER"]))
        print("crashing on purpose", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=crash, daemon=True).start()

ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
