"""A sidecar proxy for the sidecar tests: TCP on $PORT forwarded to 127.0.0.1:$APP_PORT, one
thread per direction. At SIGTERM it exits at once (a proxy without a drain: the istio#36631
failure when it stops before the app)."""

import os
import signal
import socket
import threading

signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
APP = ("127.0.0.1", int(os.environ["APP_PORT"]))


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(client: socket.socket) -> None:
    try:
        upstream = socket.create_connection(APP, timeout=5)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    pump(upstream, client)
    client.close()
    upstream.close()


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(os.environ["PORT"])))
listener.listen(512)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
