"""A loopback relay that enforces nothing but records what a relay counts: when each message arrived (MAIL),
with how many recipients, how many sessions were open at once; optionally it refuses connections over a limit
(``432 4.3.2``) and answers a daily-quota refusal once it has accepted ``quota_after`` messages.

Plain SMTP on 127.0.0.1 (``security: none`` is allowed on loopback), no AUTH. Used by the relay budget tests,
and by ``budget_sender.py`` subprocesses that send to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from airflow_secure_mail.testing._ports import free_port


@dataclass
class BudgetRelay:
    max_sessions: int | None = None
    """Refuse a connection in its greeting (``432 4.3.2``) while this many sessions are open."""
    quota_after: int | None = None
    """Accept this many messages, then refuse every MAIL with ``quota_reply``."""
    quota_reply: str = "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
    data_delay: float = 0.0
    arrivals: list[tuple[float, str, int]] = field(default_factory=list)
    """(time.monotonic at MAIL, Message-ID, recipients) of each accepted message."""
    mail_commands: int = 0
    quota_refusals: int = 0
    refused_connections: int = 0
    open_sessions: int = 0
    most_sessions: int = 0
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Any = None
    _started: dict[int, float] = field(default_factory=dict)

    # -- the handler -----------------------------------------------------------------------------------------
    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        with self._lock:
            self.mail_commands += 1
            if self.quota_after is not None and len(self.arrivals) >= self.quota_after:
                self.quota_refusals += 1
                return self.quota_reply
            self._started[id(envelope)] = time.monotonic()
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        first = envelope.content.split(b"\r\n", 1)[0].decode()
        with self._lock:
            started = self._started.pop(id(envelope), time.monotonic())
            self.arrivals.append((started, first.removeprefix("Message-ID: "), len(envelope.rcpt_tos)))
        return "250 OK queued"

    # -- sessions ----------------------------------------------------------------------------------------------
    def opened(self) -> bool:
        with self._lock:
            if self.max_sessions is not None and self.open_sessions >= self.max_sessions:
                self.refused_connections += 1
                return False
            self.open_sessions += 1
            self.most_sessions = max(self.most_sessions, self.open_sessions)
            return True

    def closed(self) -> None:
        with self._lock:
            self.open_sessions -= 1

    def start(self) -> BudgetRelay:
        self.port = free_port()
        relay = self

        class _Smtp(SMTP):
            counted = False

            def connection_made(self, transport: Any) -> None:
                if not relay.opened():
                    transport.write(b"432 4.3.2 Too many connections, try again later\r\n")
                    transport.close()
                    return
                self.counted = True
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                if self.counted:
                    self.counted = False
                    relay.closed()
                with contextlib.suppress(Exception):
                    super().connection_lost(exc)

        class _Controller(Controller):
            def factory(self) -> Any:
                return _Smtp(self.handler, **self.SMTP_kwargs)

        self._controller = _Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()  # its probe connection opens and closes one session
        self.most_sessions = 0
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> BudgetRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a test asserts on ------------------------------------------------------------------------------
    def most_in_window(self, seconds: float) -> int:
        """The most messages that arrived within any ``seconds`` (a sliding window over the arrivals)."""
        times = sorted(t for t, _, _ in self.arrivals)
        most, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= seconds:
                start += 1
            most = max(most, end - start + 1)
        return most

    def ids(self) -> list[str]:
        return [mid for _, mid, _ in self.arrivals]
