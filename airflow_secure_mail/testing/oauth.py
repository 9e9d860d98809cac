"""A real OAuth2 token endpoint on loopback (client credentials and refresh token grants).

It stands in for a cloud identity provider, which cannot run here; tokens it issues are handed to an
SmtpCatcher so XOAUTH2/OAUTHBEARER logins can be checked end to end.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from airflow_secure_mail.testing.smtp import SmtpCatcher


class TokenEndpoint:
    """Issues a new random token per request and registers it with ``catcher`` for ``smtp_user``."""

    def __init__(
        self, catcher: SmtpCatcher, *, client_id: str, client_secret: str, smtp_user: str, expires_in: int = 3600
    ) -> None:
        self.catcher = catcher
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = "rt-" + secrets.token_urlsafe(16)
        self.smtp_user = smtp_user
        self.expires_in = expires_in
        self.requests: list[dict[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/token"

    def _issue(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.requests.append({k: v for k, v in form.items() if k in ("grant_type", "client_id", "scope")})
        if form.get("client_id") != self.client_id:
            return 401, {"error": "invalid_client"}
        grant = form.get("grant_type")
        if grant == "client_credentials" and form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client"}
        if grant == "refresh_token" and form.get("refresh_token") != self.refresh_token:
            return 400, {"error": "invalid_grant"}
        if grant not in ("client_credentials", "refresh_token"):
            return 400, {"error": "unsupported_grant_type"}
        token = "at-" + secrets.token_urlsafe(24)
        self.catcher.tokens[self.smtp_user] = token
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}

    def start(self) -> TokenEndpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status, body = endpoint._issue(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
