"""A plain third-party-style HTTP server that stops at once on SIGTERM, as most servers do:
``python plain_server.py PORT``. (Without a handler, PID 1 of a container ignores SIGTERM: the
lab would keep it serving until SIGKILL, which hides the failure this baseline shows.)"""

from __future__ import annotations

import http.server
import signal
import sys


def main() -> None:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler
    )

    def stop(_signum: int, _frame: object) -> None:
        server.server_close()  # the listener goes at once: new connections are refused
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
