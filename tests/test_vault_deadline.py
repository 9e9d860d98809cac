"""A Vault front end that answers at once but drips its body past the deadline is cut at the deadline."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from airflow_secure_mail.errors import SecureMailError, VaultSecretError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.testing._ports import free_port
from airflow_secure_mail.testing.faults import _forwarded, _read_request
from tests.helpers import plain_message


class _DripBody:
    """Forwards to OpenBao, except that requests whose target holds ``path`` get a 200 whose headers (with
    ``Connection: close``, so http.client hands the socket to the response) come at once and whose body
    comes one byte a second."""

    def __init__(self, upstream: tuple[str, int], path: str) -> None:
        self.port = free_port()
        self.dripped = 0
        stop = self.stop = threading.Event()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = _read_request(self.rfile)
                if request is None:
                    return
                method, target, headers, body = request
                if path not in target:
                    self.wfile.write(_forwarded(upstream, method, target, headers, body))
                    return
                payload = json.dumps({"data": {"data": {"username": "u", "password": "p"}}}).encode() + b" " * 40
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                self.wfile.write(head.encode() + b"Connection: close\r\n\r\n")
                self.wfile.flush()
                for byte in payload:
                    if stop.wait(1.0):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        return
                    outer.dripped += 1

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def drip(mail_env, monkeypatch) -> Iterator[_DripBody]:
    """The SMTP connection reads its credentials through the dripping front end, deadline 5 s."""
    server = _DripBody(("127.0.0.1", mail_env.bao.port), mail_env.secret_path)
    conn = {
        "conn_type": "vault",
        "host": "127.0.0.1",
        "port": server.port,
        "password": mail_env.bao.root_token,
        "extra": {"auth_type": "token", "use_tls": False},
    }
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_DRIP", json.dumps(conn))
    mail_env.set_smtp_conn(vault_conn_id="vault_drip", deadline=5)
    yield server
    server.close()


def test_body_dripped_after_connection_close_headers_is_cut_at_the_deadline(mail_env, drip):
    """http.client detaches the socket from its connection on ``Connection: close``: the socket is bounded itself."""
    from airflow_secure_mail.vault import deadline, vault_for

    started = time.monotonic()
    with deadline(5), pytest.raises(VaultSecretError, match=r"did not answer .* within 5s") as raised:
        vault_for("vault_drip").read(mail_env.secret_path, fresh=True)
    elapsed = time.monotonic() - started
    assert elapsed < 5 + 2, f"a dripping Vault held the read for {elapsed:.1f}s"  # correctness bound, not speed
    assert raised.value.path is not None and mail_env.secret_path in raised.value.path
    assert drip.dripped < 8


def test_send_whose_vault_drips_its_body_fails_at_the_deadline_without_connecting(mail_env, drip):
    started = time.monotonic()
    with pytest.raises(SecureMailError, match="within 5s|deadline of 5s"):
        SecureSmtpHook().send(plain_message())
    elapsed = time.monotonic() - started
    assert elapsed < 5 + 2, f"a dripping Vault held the send for {elapsed:.1f}s"
    assert mail_env.smtp.connections == 0
