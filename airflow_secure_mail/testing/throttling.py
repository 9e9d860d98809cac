"""ThrottlingSmtpServer: a STARTTLS SMTP server on loopback that asks its clients to slow down.

It answers a throttling reply (e.g. ``421 4.7.0``) at MAIL, RCPT or DATA to the first ``throttle_first``
commands at that stage (``None``: to every one; at RCPT optionally only for some addresses), then accepts,
and records when each accepted message arrived, so a test can check a client's rate and that every message
arrived exactly once. No AUTH; TLS from a ``TestCA``.
"""

from __future__ import annotations

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
    arrivals: list[Arrival] = field(default_factory=list)
    commands: list[tuple[Stage, str, int]] = field(default_factory=list)
    """Every MAIL, RCPT and DATA in the order received: (stage, address or "" for DATA, reply code)."""
    throttled: int = 0
    port: int = 0
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
        return self.reply

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
