"""SmtpCatcher: a real TLS SMTP server on loopback (aiosmtpd) that records every transaction.

A throwaway CA (trustme) issues the server certificate for ``localhost`` and ``127.0.0.1``; one port
speaks implicit TLS, another STARTTLS; both require AUTH over TLS. Options build deliberately broken
servers for negative tests: no STARTTLS, a certificate from another CA, old TLS only, scripted replies,
and transient faults injected into a fraction of transactions (:class:`SmtpFaults`, for soak runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import ssl
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from airflow_secure_mail.testing._ports import free_ports

FAULT_KINDS = ("421_mail", "421_rcpt", "421_data", "drop_mid_data")
_FAULT_REPLY = "421 4.4.2 SmtpCatcher: injected transient fault, closing; try again later"


@dataclass
class Received:
    """One accepted transaction, as the server saw it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    port: int
    tls_version: str | None
    cipher: str | None
    auth_identity: str | None


@dataclass
class AuthAttempt:
    mechanism: str
    username: str | None
    tls: bool
    ok: bool


@dataclass
class Script:
    """Scripted misbehaviour: counters and replies are consumed before normal service resumes."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    drop_in_data: int = 0
    greeting_failures: int = 0
    refuse_starttls: bool = False
    auth_replies: list[str] = field(default_factory=list)
    """Answers to the next AUTH commands, in order: a reply line (``535 5.7.8 ...``) or ``drop``."""


@dataclass
class SmtpFaults:
    """Transient failures injected into a fraction of transactions, never after a message is stored.

    Each MAIL FROM draws (seeded: a run can be repeated): with probability ``rate`` the transaction gets
    one of ``kinds``. ``421_mail`` and ``421_rcpt`` answer that command with 421 4.4.2 and close;
    ``421_data`` reads the whole message, answers 421 4.4.2 instead of 250 and closes; ``drop_mid_data``
    closes the TCP connection after the first line of the message, before the final "." is acknowledged.
    In every kind the message is NOT stored. A fault that stored a message and then failed would make a
    correct client resend a delivered message, and exactly-once delivery could not be proven.
    ``injected`` counts the faults actually injected, per kind.
    """

    rate: float = 0.05
    seed: int | None = None
    kinds: tuple[str, ...] = FAULT_KINDS
    injected: Counter[str] = field(default_factory=Counter, init=False)
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"SmtpFaults.rate must be between 0 and 1, not {self.rate!r}.")
        unknown = sorted(set(self.kinds) - set(FAULT_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"SmtpFaults.kinds must be some of {', '.join(FAULT_KINDS)}; got {self.kinds!r}.")
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        """The fault planned for a new transaction, or None (most of the time)."""
        with self._lock:
            if self._rng.random() >= self.rate:
                return None
            return self._rng.choice(self.kinds)

    def count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1


class TestCA:
    """A throwaway certificate authority; ``pem`` is what clients pin."""

    __test__ = False

    def __init__(self) -> None:
        import trustme

        self._ca = trustme.CA()
        self.pem = self._ca.cert_pem.bytes().decode()

    def server_context(
        self,
        *identities: str,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        max_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        cert = self._ca.issue_cert(
            *(identities or ("localhost", "127.0.0.1")), not_before=not_before, not_after=not_after
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if max_version is not None:
            with warnings.catch_warnings():  # an outdated server is the point: the stdlib's warning is expected
                warnings.filterwarnings("ignore", r"ssl\.TLSVersion\.\S+ is deprecated", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                ctx.maximum_version = max_version
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        cert.configure_cert(ctx)
        return ctx

    def client_pair(self, name: str = "airflow-client") -> tuple[str, str]:
        """A client certificate chain and key (PEM) for mutual TLS."""
        cert = self._ca.issue_cert(name)
        chain = "".join(blob.bytes().decode() for blob in cert.cert_chain_pems)
        return chain, cert.private_key_pem.bytes().decode()

    def requiring_client_cert(self, ctx: ssl.SSLContext) -> ssl.SSLContext:
        """Make a server context demand a client certificate from this CA."""
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.pem)
        return ctx

    def write(self, path: str) -> str:
        with open(path, "w") as fh:
            fh.write(self.pem)
        return path


class _Handler:
    def __init__(self, catcher: SmtpCatcher, port: int) -> None:
        self.catcher = catcher
        self.port = port

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        faults = self.catcher.faults
        server.planned_fault = faults.draw() if faults is not None else None
        if server.planned_fault == "421_mail":
            return str(server.inject_fault())
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if server.planned_fault == "421_rcpt":
            return str(server.inject_fault())
        reply = self.catcher.script.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        """XOAUTH2 initial response: base64("user=U^Aauth=Bearer T^A^A")."""
        import base64

        from aiosmtpd.smtp import AuthResult, LoginPassword

        blob = args[1] if len(args) > 1 else ""
        fields = dict(part.split("=", 1) for part in base64.b64decode(blob).decode().split("\x01") if "=" in part)
        user, token = fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        return self._check_token(server, "XOAUTH2", user, token, AuthResult, LoginPassword)

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> Any:
        """RFC 7628: base64("n,a=U,^Aauth=Bearer T^A^A")."""
        import base64

        from aiosmtpd.smtp import AuthResult, LoginPassword

        text = base64.b64decode(args[1] if len(args) > 1 else "").decode()
        gs2, _, rest = text.partition("\x01")
        user = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), "")
        fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
        token = fields.get("auth", "").removeprefix("Bearer ")
        return self._check_token(server, "OAUTHBEARER", user, token, AuthResult, LoginPassword)

    def _check_token(self, server: Any, mech: str, user: str, token: str, result: Any, pair: Any) -> Any:
        tls = server.transport.get_extra_info("ssl_object") is not None
        ok = bool(user) and self.catcher.tokens.get(user) == token
        self.catcher.auth_attempts.append(AuthAttempt(mech, user, tls, ok))
        return result(success=ok, handled=False, auth_data=pair(user.encode(), b""))

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        script = self.catcher.script
        if server.planned_fault == "421_data":
            return str(server.inject_fault())
        if script.drop_in_data > 0:
            script.drop_in_data -= 1
            server.transport.close()
            return "421 dropped"
        if script.data_replies:
            return script.data_replies.pop(0)
        sslobj = server.transport.get_extra_info("ssl_object")
        auth = getattr(session, "auth_data", None)
        with self.catcher._lock:
            self.catcher.messages.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or envelope.content),
                    port=self.port,
                    tls_version=sslobj.version() if sslobj else None,
                    cipher=sslobj.cipher()[0] if sslobj else None,
                    auth_identity=getattr(auth, "login", b"").decode() if auth else None,
                )
            )
        return "250 2.0.0 queued"


class SmtpCatcher:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager).

    ``users`` maps username to password and may be changed while running (password rotation).
    ``faults`` injects transient failures into a fraction of transactions (see :class:`SmtpFaults`).
    """

    def __init__(
        self,
        ca: TestCA | None = None,
        *,
        users: dict[str, str] | None = None,
        offer_starttls: bool = True,
        server_context: ssl.SSLContext | None = None,
        data_size_limit: int | None = 33_554_432,
        faults: SmtpFaults | None = None,
    ) -> None:
        self.ca = ca or TestCA()
        self.users = dict(users or {})
        self.tokens: dict[str, str] = {}
        self.offer_starttls = offer_starttls
        self._context = server_context
        self.data_size_limit = data_size_limit
        self.faults = faults
        self.messages: list[Received] = []
        self.auth_attempts: list[AuthAttempt] = []
        self.connections = 0
        self.script = Script()
        self._lock = threading.Lock()
        self._controllers: list[Any] = []
        self.tls_port = 0
        self.starttls_port = 0

    def _authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        tls = server.transport.get_extra_info("ssl_object") is not None
        if not isinstance(data, LoginPassword):
            self.auth_attempts.append(AuthAttempt(mechanism, None, tls, False))
            return AuthResult(success=False, handled=False)
        user = data.login.decode()
        ok = self.users.get(user) == data.password.decode() and user in self.users
        self.auth_attempts.append(AuthAttempt(mechanism, user, tls, ok))
        return AuthResult(success=ok, handled=False, auth_data=data)

    def start(self) -> SmtpCatcher:
        import logging

        logging.getLogger("mail.log").setLevel(logging.ERROR)
        # aiosmtpd cannot tell implicit TLS from plaintext and warns about AUTH on that port; it is TLS.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS", category=UserWarning)
        ctx = self._context or self.ca.server_context()
        self.tls_port, self.starttls_port = free_ports(2)
        # aiosmtpd only counts STARTTLS as TLS, so on the implicit-TLS port it must be told AUTH is fine.
        self._serve(self.tls_port, ssl_context=ctx, auth_require_tls=False)
        if self.offer_starttls:
            self._serve(self.starttls_port, tls_context=ctx, require_starttls=True)
        else:
            self._serve(self.starttls_port, auth_require_tls=False)
        self.connections = 0
        return self

    def _serve(self, port: int, **options: Any) -> None:
        controller = _CatcherController(
            self,
            _Handler(self, port),
            hostname="127.0.0.1",
            port=port,
            authenticator=self._authenticator,
            auth_required=True,
            data_size_limit=self.data_size_limit,
            ident="SmtpCatcher",
            **options,
        )
        controller.start()
        self._controllers.append(controller)

    def stop(self) -> None:
        for controller in self._controllers:
            controller.stop()
        self._controllers.clear()

    def reset(self) -> None:
        """Forget what was received and clear the script and the faults (a shared server between tests)."""
        with self._lock:
            self.messages.clear()
            self.auth_attempts.clear()
            self.script = Script()
            self.faults = None
            self.connections = 0

    def __enter__(self) -> SmtpCatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connection_extra(self, *, starttls: bool = False, **extra: Any) -> dict[str, Any]:
        """The ``securesmtp`` connection extras that reach this server with its CA pinned."""
        base: dict[str, Any] = {"security": "starttls" if starttls else "tls", "ca_cert": self.ca.pem}
        base.update(extra)
        return base

    def airflow_connection(self, *, starttls: bool = False, host: str = "localhost", **extra: Any) -> dict[str, Any]:
        """A whole ``securesmtp`` Airflow connection (JSON form, e.g. for ``AIRFLOW_CONN_...``) to this server."""
        return {
            "conn_type": "securesmtp",
            "host": host,
            "port": self.port(starttls=starttls),
            "extra": self.connection_extra(starttls=starttls, **extra),
        }

    def port(self, *, starttls: bool = False) -> int:
        return self.starttls_port if starttls else self.tls_port


class _CatcherSMTP(SMTP):
    """aiosmtpd's server plus what the catcher adds: connection counting, ``catcher.script``, faults."""

    planned_fault: str | None = None
    """The fault :class:`SmtpFaults` drew for the current transaction (at MAIL FROM)."""

    def __init__(self, catcher: SmtpCatcher, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.catcher = catcher
        self._close_after_reply = False

    def connection_made(self, transport: Any) -> None:
        if self.transport is None:
            self.catcher.connections += 1
        super().connection_made(transport)

    def inject_fault(self) -> str:
        """Count the planned fault and answer it with 421 4.4.2; the connection closes after the reply."""
        assert self.catcher.faults is not None and self.planned_fault is not None
        self.catcher.faults.count(self.planned_fault)
        self.planned_fault = None
        self._close_after_reply = True
        return _FAULT_REPLY

    async def push(self, status: Any) -> None:
        await super().push(status)
        if self._close_after_reply and self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        if self.catcher.script.greeting_failures > 0:
            self.catcher.script.greeting_failures -= 1
            await self.push("421 4.3.2 service busy, try again later")
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    async def smtp_AUTH(self, arg: str) -> None:
        script = self.catcher.script
        if not script.auth_replies:
            await super().smtp_AUTH(arg)
            return
        reply = script.auth_replies.pop(0)
        self.catcher.auth_attempts.append(AuthAttempt("scripted", None, self.transport is not None, False))
        if reply != "drop":
            await self.push(reply)
        elif self.transport is not None:
            self.transport.close()

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.catcher.script.refuse_starttls:
            await self.push("454 4.7.0 TLS not available due to temporary reason")
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if self.planned_fault == "drop_mid_data" and not arg and self.envelope and self.envelope.rcpt_tos:
            await self._drop_mid_data()
            return
        await super().smtp_DATA(arg)

    async def _drop_mid_data(self) -> None:
        """Accept DATA, read the first line of the message, then cut the connection: nothing is stored."""
        assert self.catcher.faults is not None
        self.catcher.faults.count("drop_mid_data")
        self.planned_fault = None
        await super().push("354 End data with <CR><LF>.<CR><LF>")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader.readuntil(b"\r\n"), timeout=10)
        transport: Any = self.transport
        if transport is not None:
            transport.abort()


class _CatcherController(Controller):
    """A Controller whose servers are :class:`_CatcherSMTP` bound to one catcher."""

    def __init__(self, catcher: SmtpCatcher, handler: Any, **kwargs: Any) -> None:
        self.catcher = catcher
        super().__init__(handler, **kwargs)

    def factory(self) -> Any:
        return _CatcherSMTP(self.catcher, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # The TCP accept already ran factory(); a handshake our own probe cannot complete
        # (an old-TLS-only server, on purpose) must not fail start().
        with contextlib.suppress(ssl.SSLError):
            super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped
