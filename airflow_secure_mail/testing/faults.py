"""FaultyHttpProxy: a loopback HTTP front end that misbehaves on cue, then forwards to the real server.

Put it between a client and OpenBao to reproduce what flaky networks and odd front ends do: a 5xx
once, a connection reset, a server that accepts and never answers, one that trickles a byte every few
seconds, a 200 with an HTML maintenance page. With no upstream it is a recording dead end (a stand-in
for an environment proxy or a "remote" host). Every request is recorded, token header included, so a
test can prove what reached it.
"""

from __future__ import annotations

import http.client
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_secure_mail.testing._ports import free_port


@dataclass
class Fault:
    """What to do with one matching request instead of forwarding it.

    ``kind``: ``status`` (answer ``status`` with ``body`` as ``content_type``), ``reset`` (close with
    an RST), ``hang`` (read the request, never answer), ``trickle`` (send a 200 one byte every
    ``interval`` seconds, forever). ``path`` limits it to request targets containing that text.
    """

    kind: str
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    interval: float = 2.0
    path: str | None = None
    times: int = 1


@dataclass
class SeenRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    fault: str | None = None


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    seen: list[SeenRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


class FaultyHttpProxy:
    """``upstream`` is ``(host, port)`` of the real server, or None to answer 502 to everything."""

    def __init__(self, upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream
        self.port = 0
        self._state = _State()
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def seen(self) -> list[SeenRequest]:
        with self._state.lock:
            return list(self._state.seen)

    def add(self, fault: Fault) -> FaultyHttpProxy:
        """Queue a fault; queued faults are used in order, each ``times`` times."""
        with self._state.lock:
            self._state.faults.append(fault)
        return self

    def start(self) -> FaultyHttpProxy:
        self.port = free_port()
        handler = _handler_class(self._state, self.upstream)
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="faulty-http-proxy", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._state.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultyHttpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _take_fault(state: _State, target: str) -> Fault | None:
    with state.lock:
        for fault in state.faults:
            if fault.path is None or fault.path in target:
                fault.times -= 1
                if fault.times <= 0:
                    state.faults.remove(fault)
                return fault
    return None


def _read_request(rfile: object) -> tuple[str, str, dict[str, str], bytes] | None:
    readline: Callable[..., bytes] = rfile.readline  # type: ignore[attr-defined]
    line = readline(65537).decode("latin-1").strip()
    if not line:
        return None
    method, target, _ = line.split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = readline(65537).decode("latin-1")
        if raw in ("\r\n", "\n", ""):
            break
        name, _, value = raw.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    body = rfile.read(length) if length else b""  # type: ignore[attr-defined]
    return method, target, headers, body


def _response(status: int, body: bytes, content_type: str) -> bytes:
    reason = http.client.responses.get(status, "Status")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _handler_class(state: _State, upstream: tuple[str, int] | None) -> type[socketserver.StreamRequestHandler]:
    class _Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = _read_request(self.rfile)
            if request is None:
                return
            method, target, headers, body = request
            fault = _take_fault(state, target)
            with state.lock:
                state.seen.append(SeenRequest(method, target, headers, body, fault.kind if fault else None))
            if fault is None:
                self.wfile.write(_forwarded(upstream, method, target, headers, body))
            else:
                _misbehave(fault, self.connection, self.wfile, state.stopping)

    return _Handler


def _misbehave(fault: Fault, connection: socket.socket, wfile: Any, stopping: threading.Event) -> None:
    """Answer one request the way ``fault`` says instead of forwarding it."""
    if fault.kind == "status":
        wfile.write(_response(fault.status, fault.body, fault.content_type))
    elif fault.kind == "reset":
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif fault.kind == "hang":
        stopping.wait()
    elif fault.kind == "trickle":
        _trickle(wfile, fault.interval, stopping)
    else:
        raise ValueError(f"unknown fault {fault.kind!r}")


def _trickle(wfile: Any, interval: float, stopping: threading.Event) -> None:
    payload = _response(200, b'{"data": {}}' + b" " * 10_000, "application/json")
    for byte in payload:
        if stopping.wait(interval):
            return
        try:
            wfile.write(bytes([byte]))
            wfile.flush()
        except OSError:
            return


def _forwarded(
    upstream: tuple[str, int] | None, method: str, target: str, headers: dict[str, str], body: bytes
) -> bytes:
    """The upstream server's answer to the request, or a 502 when there is no upstream."""
    if upstream is None:
        return _response(502, b"no upstream", "text/plain")
    conn = http.client.HTTPConnection(*upstream, timeout=30)
    skip = {"host", "connection", "content-length", "proxy-connection"}
    try:
        forwarded = {k: v for k, v in headers.items() if k not in skip}
        conn.request(method, target, body=body or None, headers=forwarded)
        reply = conn.getresponse()
        data = reply.read()
        return _response(reply.status, data, reply.getheader("Content-Type") or "application/json")
    finally:
        conn.close()
