"""A scripted daemon on loopback for tests: each request gets the next of ``replies`` (the last one repeats).

The base of the fake clamd and spamd: a threaded TCP server, its address, start/stop and ``with``. A reply is
the bytes to send, ``"hang"`` (read, never answer) or ``"close"`` (hang up without a word); subclasses read
their protocol's request in ``_serve`` and answer with ``_answer``.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Self


class ScriptedDaemon:
    """Serve ``replies`` in order on 127.0.0.1 (an ephemeral port) until :meth:`stop`."""

    def __init__(self, replies: list[bytes | str]) -> None:
        self.replies = list(replies)
        self._stop = threading.Event()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=True)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def _serve(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _next_reply(self) -> bytes | str:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def _answer(self, sock: socket.socket, reply: bytes | str, *, suffix: bytes = b"") -> None:
        if reply == "hang":
            self._stop.wait(60)
        elif reply != "close":
            assert isinstance(reply, bytes)
            sock.sendall(reply + suffix)

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
