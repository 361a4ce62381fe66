"""A plain third-party-style HTTP server that stops at once on SIGTERM, as most servers do:
``python plain_server.py PORT``. (Without a handler, PID 1 of a container ignores SIGTERM: the
lab would keep it serving until SIGKILL, which hides the failure this baseline shows.)"""

from __future__ import annotations

import http.server
import signal
import sys


class Server(http.server.ThreadingHTTPServer):
    # socketserver's accept queue of 5 fills when this process waits 100 ms for the CPU under
    # the lab's 50 rps: connects then time out, failures that have nothing to do with a drain
    request_queue_size = 128


def main() -> None:
    server = Server(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)

    def stop(_signum: int, _frame: object) -> None:
        server.server_close()  # the listener goes at once: new connections are refused
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
