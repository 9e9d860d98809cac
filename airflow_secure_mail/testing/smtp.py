"""SmtpCatcher: a real TLS SMTP server on loopback (aiosmtpd) that records every transaction.

A throwaway CA (trustme) issues the server certificate for ``localhost`` and ``127.0.0.1``; one port
speaks implicit TLS, another STARTTLS; both require AUTH over TLS. Options build deliberately broken
servers for negative tests: no STARTTLS, a certificate from another CA, old TLS only, scripted replies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_secure_mail.testing._ports import free_port


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

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
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
    """

    def __init__(
        self,
        ca: TestCA | None = None,
        *,
        users: dict[str, str] | None = None,
        offer_starttls: bool = True,
        server_context: ssl.SSLContext | None = None,
        data_size_limit: int | None = 33_554_432,
    ) -> None:
        self.ca = ca or TestCA()
        self.users = dict(users or {})
        self.tokens: dict[str, str] = {}
        self.offer_starttls = offer_starttls
        self._context = server_context
        self.data_size_limit = data_size_limit
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
        self.tls_port, self.starttls_port = free_port(), free_port()
        common: dict[str, Any] = {
            "hostname": "127.0.0.1",
            "authenticator": self._authenticator,
            "auth_required": True,
            "data_size_limit": self.data_size_limit,
            "ident": "SmtpCatcher",
        }
        controller = _controller_class(self)
        # aiosmtpd only counts STARTTLS as TLS, so on the implicit-TLS port it must be told AUTH is fine.
        implicit = controller(
            _Handler(self, self.tls_port),
            port=self.tls_port,
            ssl_context=ctx,
            auth_require_tls=False,
            **common,
        )
        if self.offer_starttls:
            starttls = controller(
                _Handler(self, self.starttls_port),
                port=self.starttls_port,
                tls_context=ctx,
                require_starttls=True,
                **common,
            )
        else:
            starttls = controller(
                _Handler(self, self.starttls_port), port=self.starttls_port, auth_require_tls=False, **common
            )
        for started in (implicit, starttls):
            started.start()
            self._controllers.append(started)
        self.connections = 0
        return self

    def stop(self) -> None:
        for controller in self._controllers:
            controller.stop()
        self._controllers.clear()

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.auth_attempts.clear()
            self.script = Script()
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

    def port(self, *, starttls: bool = False) -> int:
        return self.starttls_port if starttls else self.tls_port

    def recipients(self) -> Iterable[str]:
        return [r for m in self.messages for r in m.rcpt_tos]


def _controller_class(catcher: SmtpCatcher) -> Any:
    """A Controller whose servers count connections and obey ``catcher.script``."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class _ScriptedSMTP(SMTP):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            if self.transport is None:
                catcher.connections += 1
            super().connection_made(transport)

        async def _handle_client(self) -> None:
            if catcher.script.greeting_failures > 0:
                catcher.script.greeting_failures -= 1
                await self.push("421 4.3.2 service busy, try again later")
                if self.transport is not None:
                    self.transport.close()
                return
            await super()._handle_client()

        async def smtp_STARTTLS(self, arg: str) -> None:
            if catcher.script.refuse_starttls:
                await self.push("454 4.7.0 TLS not available due to temporary reason")
                return
            await super().smtp_STARTTLS(arg)

    class _Controller(Controller):  # type: ignore[misc]
        def factory(self) -> Any:
            return _ScriptedSMTP(self.handler, **self.SMTP_kwargs)

        def _trigger_server(self) -> None:
            # The TCP accept already ran factory(); a handshake our own probe cannot complete
            # (an old-TLS-only server, on purpose) must not fail start().
            with contextlib.suppress(ssl.SSLError):
                super()._trigger_server()

    return _Controller
