"""The HTTP session under hvac: no environment proxies, no redirects, bounded retries, a hard per-call deadline.

Read timeouts bound each ``recv``, not a whole reply: a server trickling one byte every two seconds never
trips them. So every Vault call runs inside a :class:`CallGuard` whose timer shuts the sockets it used
when the call's time is up, and refuses to open new ones. The guard keeps the socket objects themselves,
taken when each is created or reused: on ``Connection: close`` http.client detaches the socket from its
connection (``conn.sock`` is None) while the response still reads the body from it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

from requests import Session
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import Retry

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
RETRIES = 3
_RETRY_STATUS = (500, 502, 503, 504)

_local = threading.local()


class DeadlinePassed(Exception):
    """Raised inside a Vault call whose time is up; urllib3 and requests let it through unretried."""


class CallGuard:
    """Bounds one Vault call (login, read, Transit), retries and body reads included, to ``budget`` seconds."""

    def __init__(self, budget: float) -> None:
        self.budget = max(0.0, budget)
        self.end = time.monotonic() + self.budget
        self.expired = False
        self._connections: list[HTTPConnection] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(self.budget, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> CallGuard:
        self._outer = getattr(_local, "guard", None)
        _local.guard = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _local.guard = self._outer
        with self._lock:
            self._connections.clear()
            self._sockets.clear()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def register(self, conn: HTTPConnection) -> None:
        with self._lock:
            if self.expired or self.remaining() <= 0:
                self.expired = True
                raise DeadlinePassed()
            self._connections.append(conn)
            sock = getattr(conn, "sock", None)
            if sock is not None:  # a pooled connection reused: its socket may outlive ``conn.sock``
                self._sockets.append(sock)

    def register_socket(self, sock: socket.socket) -> None:
        """Track a socket as it is created, so the timer can shut it even once its connection let go of it."""
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:  # created after the timer ran: nothing may read from it
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = [*self._sockets, *(getattr(c, "sock", None) for c in self._connections)]
        for sock in dict.fromkeys(s for s in sockets if s is not None):
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Shut a socket both ways: a blocked ``recv`` returns at once. A closed socket object has fd -1 (EBADF),
    so a number reused by another file is never touched."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _guard() -> CallGuard | None:
    return getattr(_local, "guard", None)


def _track(sock: socket.socket | None) -> None:
    guard = _guard()
    if guard is not None and sock is not None:
        guard.register_socket(sock)


def _clamp_to_guard(conn: HTTPConnection) -> None:
    """Bound the socket timeout of a connect (a TLS handshake too: CPython bounds the whole handshake by it) to
    what is left of the call. The adapter clamps once per request; urllib3's retries reuse that value."""
    guard = _guard()
    if guard is not None:
        left = max(0.05, guard.remaining())
        conn.timeout = left if conn.timeout is None else min(conn.timeout, left)


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _track(sock)
        return sock

    def connect(self) -> None:
        _clamp_to_guard(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        guard = _guard()
        if guard is not None:
            guard.register(self)
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _track(sock)  # bounds the TCP connect only: ``wrap_socket`` detaches this object before the handshake
        return sock

    def connect(self) -> None:
        guard = _guard()
        if guard is not None:
            guard.register(self)
        _clamp_to_guard(self)  # what bounds the TLS handshake: the timer cannot reach its socket until it returns
        super().connect()
        _track(self.sock)  # wrapping detached the plain socket object: keep the TLS one

    def request(self, *args: Any, **kwargs: Any) -> None:
        guard = _guard()
        if guard is not None:
            guard.register(self)
        super().request(*args, **kwargs)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_POOLS = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class _VaultAdapter(HTTPAdapter):
    """Guarded connections; every request's timeouts are clamped to what is left of its call's budget."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        connect, read = _split_timeout(kwargs.get("timeout"))
        guard = _guard()
        if guard is not None:
            left = max(0.05, guard.remaining())
            connect, read = min(connect, left), min(read, left)
        kwargs["timeout"] = (connect, read)
        return super().send(request, *args, **kwargs)


def _split_timeout(value: Any) -> tuple[float, float]:
    if isinstance(value, tuple | list) and len(value) == 2:
        return float(value[0] or CONNECT_TIMEOUT), float(value[1] or READ_TIMEOUT)
    if isinstance(value, int | float) and value > 0:
        return min(CONNECT_TIMEOUT, float(value)), float(value)
    return CONNECT_TIMEOUT, READ_TIMEOUT


def vault_session(*, verify: Any = None, cert: Any = None) -> Session:
    """A Session for Vault: 5xx and resets retried with backoff (never 4xx), redirects refused.

    ``trust_env`` is off so ``HTTP(S)_PROXY``/``ALL_PROXY`` (and ``.netrc``) never see the token; the CA
    bundle that ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` named is kept, since turning ``trust_env`` off
    would drop it too. An explicit ``proxies`` on the Vault connection is the one way to use a proxy.
    """
    session = Session()
    session.trust_env = False
    session.max_redirects = 0
    session.proxies = {}
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    session.verify = verify if verify is not None else (bundle or True)
    if cert is not None:
        session.cert = cert
    retry = Retry(
        total=RETRIES,
        connect=RETRIES,
        read=RETRIES,
        status=RETRIES,
        other=0,
        redirect=0,
        backoff_factor=0.2,
        backoff_max=2.0,
        backoff_jitter=0.1,
        status_forcelist=_RETRY_STATUS,
        allowed_methods=None,  # logins and Transit are POSTs; a retried one is harmless
        raise_on_status=False,
        raise_on_redirect=False,
        respect_retry_after_header=False,  # a long Retry-After must not outlast the deadline
    )
    adapter = _VaultAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def answers_plain_http(host: str, port: int, budget: float) -> bool:
    """Whether ``host:port`` answers a bare HTTP request in plain text (a Vault without TLS), within ``budget``.

    A diagnostic after a failed TLS handshake: no token, no path of ours, only ``HEAD /`` sent.
    """
    end = time.monotonic() + budget
    try:
        with socket.create_connection((host, port), timeout=budget) as sock:
            sock.settimeout(max(0.01, end - time.monotonic()))
            sock.sendall(b"HEAD / HTTP/1.0\r\nHost: vault\r\n\r\n")
            return sock.recv(5) == b"HTTP/"
    except OSError:
        return False
