"""Loopback relays that ask their clients to slow down: ThrottlingSmtpServer and RefusingGreetingServer.

ThrottlingSmtpServer is a STARTTLS SMTP server. It answers a throttling reply (e.g. ``421 4.7.0``) at MAIL,
RCPT or DATA to the first ``throttle_first`` commands at that stage (``None``: to every one; at RCPT optionally
only for some addresses), then accepts, and records when each accepted message arrived, so a test can check a
client's rate and that every message arrived exactly once. No AUTH; TLS from a ``TestCA``.
RefusingGreetingServer refuses every connection in its greeting (``432 4.3.2``) and counts them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_secure_mail.testing._ports import free_port
from airflow_secure_mail.testing.smtp import TestCA

Stage = Literal["MAIL", "RCPT", "DATA"]


@dataclass(frozen=True)
class Arrival:
    """One accepted message: envelope, bytes, from which client port, and (``time.monotonic``) when its MAIL
    command came in (``started``: the client's pace, before the transfer's own duration) and when it was accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    started: float
    at: float
    client_port: int


@dataclass
class ThrottlingSmtpServer:
    """Start with :meth:`start` (or ``with``); ``arrivals`` and ``throttled`` say what happened."""

    ca: TestCA
    stage: Stage = "MAIL"
    reply: str = "421 4.7.0 Too many messages, slow down"
    throttle_first: int | None = 0
    only_recipients: tuple[str, ...] = ()
    """At RCPT: throttle only these addresses (the others are accepted)."""
    throttle_every: int = 1
    """Throttle every n-th command at ``stage`` (2: every other one), so traffic goes on while throttled."""
    data_delay: float = 0.0
    """Seconds to wait before accepting a message at DATA: a slow relay, so a deadline can fall mid-transfer."""
    arrivals: list[Arrival] = field(default_factory=list)
    commands: list[tuple[Stage, str, int]] = field(default_factory=list)
    """Every MAIL, RCPT and DATA in the order received: (stage, address or "" for DATA, reply code)."""
    throttled: int = 0
    port: int = 0
    _seen: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Any = None

    def _throttle(self, stage: Stage, address: str = "") -> str | None:
        """The throttling reply if this command is still to be throttled at ``stage``; logs the command."""
        with self._lock:
            reply = self._throttling_reply(stage, address)
            self.throttled += reply is not None
            self.commands.append((stage, address, int((reply or "250")[:3])))
            return reply

    def _throttling_reply(self, stage: Stage, address: str) -> str | None:
        if stage != self.stage or (self.throttle_first is not None and self.throttled >= self.throttle_first):
            return None
        if self.only_recipients and (stage != "RCPT" or address not in self.only_recipients):
            return None
        self._seen += 1
        return self.reply if self._seen % self.throttle_every == 0 else None

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = self._throttle("MAIL", address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        session.mail_started = time.monotonic()
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = self._throttle("RCPT", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self._throttle("DATA")
        if reply:
            return reply
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        arrival = Arrival(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            started=session.mail_started,
            at=time.monotonic(),
            client_port=int(session.peer[1]),
        )
        with self._lock:
            self.arrivals.append(arrival)
        return "250 2.0.0 queued"

    def start(self) -> ThrottlingSmtpServer:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=self.ca.server_context(),
            require_starttls=True,
            ident="ThrottlingSmtpServer",
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> ThrottlingSmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RefusingGreetingServer:
    """A loopback relay that answers every connection with a refusing greeting (``432 4.3.2``) and counts them.

    The socket then stays open until the client closes it (it reads and ignores what comes), as a relay busy
    enough to refuse may be: a client that waits for an answer to its QUIT waits for nothing.
    """

    greeting: bytes = b"432 4.3.2 Too many connections\r\n"
    accepted: int = 0
    port: int = 0
    _server: Any = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> RefusingGreetingServer:
        import socketserver

        outer = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with outer._lock:
                    outer.accepted += 1
                self.request.sendall(outer.greeting)
                self.request.settimeout(30)
                try:
                    while self.request.recv(4096):
                        pass
                except OSError:
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="refusing-greeting", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RefusingGreetingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
