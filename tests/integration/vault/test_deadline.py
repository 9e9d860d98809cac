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
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

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


@pytest.fixture
def tls_drip(monkeypatch) -> Iterator[str]:
    """A scripted hostile Vault on loopback (a real one cannot misbehave so): it reads the ClientHello, announces a
    16 KiB handshake record and drips it one byte per 0.5 s, so no single ``recv`` ever times out."""
    import socket

    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)  # the ClientHello
            conn.sendall(bytes([0x16, 3, 3, 0x40, 0]))  # a handshake record of 16 KiB is coming...
            while not stop.wait(0.5):
                try:
                    conn.sendall(b"\x02")
                except OSError:
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    conn = {"conn_type": "vault", "host": "127.0.0.1", "port": server.getsockname()[1], "password": "t",
            "extra": {"auth_type": "token", "use_tls": True}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_TLSDRIP", json.dumps(conn))
    yield "vault_tlsdrip"
    stop.set()
    server.close()


def test_a_tls_handshake_dripped_one_byte_at_a_time_is_cut_at_the_deadline(tls_drip):
    """The handshake's socket timeout is what is left of the call (each retry too), not the 5 s connect timeout."""
    from airflow_secure_mail.vault import deadline, vault_for

    started = time.monotonic()
    with deadline(12), pytest.raises(VaultSecretError, match=r"within 12s|deadline has passed"):
        vault_for(tls_drip).read("smtp/x", fresh=True)
    elapsed = time.monotonic() - started
    assert elapsed < 12 + 2, f"a dripped TLS handshake held the read for {elapsed:.1f}s"  # correctness bound
