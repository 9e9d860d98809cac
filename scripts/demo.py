"""`make demo`: start the embedded services, run the example DAGs for real, print what happened.

Delivered over which TLS version, encrypted how (and proven by gpg/openssl), archived where, backed
up, a tampered copy detected, and restored byte-identical; a received mail verified as ours and a forged
one refused (`verify`), and the security report built and mailed (`report`). Exits non-zero on any failure. Every
secret and key is generated here and lives only in the dev Vault and a temporary directory.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
FAILURES: list[str] = []


def line(label: str, value: object) -> None:
    print(f"  {label:<22} {value}")


def check(ok: bool, what: str) -> None:
    print(f"  {'OK  ' if ok else 'FAIL'}  {what}")
    if not ok:
        FAILURES.append(what)


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    home = tempfile.mkdtemp(prefix="asm-demo-airflow-")
    from airflow_secure_mail.testing.airflow_home import prepare_airflow_home

    print("== airflow-secure-mail demo ==")
    print("starting: OpenBao dev server, TLS SMTP server (throwaway CA), Airflow home (SQLite)")
    prepare_airflow_home(home, str(ROOT / "dags"), log_level="ERROR")

    from airflow_secure_mail.testing.openbao import OpenBaoDevServer
    from airflow_secure_mail.testing.smtp import SmtpCatcher

    password = secrets.token_urlsafe(24)
    bao = OpenBaoDevServer().start()
    smtp = SmtpCatcher(users={"airflow": password}).start()
    try:
        setup(bao, smtp, password)
        connection_test()
        malware_scan(smtp)
        run_dag("secure_mail_hello", smtp)
        run_dag("secure_mail_weekly_report", smtp)
        run_dag("secure_mail_per_recipient", smtp)
        run_dag("secure_mail_failure_alert", smtp, expect="failed")
        keys = seed_keys(bao)
        before = len(smtp.messages)
        run_dag("secure_mail_encrypted_report", smtp)
        prove_protection(smtp.messages[before:], keys)
        archive_backup_restore(smtp.messages[before:])
        verify_and_report(smtp.messages[before:], smtp)
    except Exception:
        traceback.print_exc()
        FAILURES.append("unexpected error")
    finally:
        smtp.stop()
        bao.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(f"\n== demo {'FAILED: ' + '; '.join(FAILURES) if FAILURES else 'passed'} ==")
    return 1 if FAILURES else 0


def setup(bao: Any, smtp: Any, password: str) -> None:
    client = bao.client()
    client.secrets.kv.v2.create_or_update_secret(
        path="smtp/airflow", secret={"username": "airflow", "password": password}
    )
    client.secrets.transit.create_key(name="mail-archive")
    os.environ["AIRFLOW_CONN_VAULT_DEFAULT"] = json.dumps(bao.connection_uri())
    os.environ["AIRFLOW_CONN_SECURE_SMTP_DEFAULT"] = json.dumps(
        {
            "conn_type": "securesmtp",
            "host": "localhost",
            "port": smtp.port(starttls=True),
            "extra": smtp.connection_extra(starttls=True, vault_path="smtp/airflow", from_email="airflow@example.com"),
        }
    )
    # Locations under .demo/ so the report can point at them (the examples' default is $AIRFLOW_HOME/secure-mail/);
    # the archive's Transit key is the examples' default, mail-archive, for the report and the backup alike.
    os.environ.update(
        SECURE_MAIL_REPORT_BASE=f"file://{WORK}/reports",
        SECURE_MAIL_ARCHIVE=f"file://{WORK}/archive",
        SECURE_MAIL_BACKUP=f"file://{WORK}/backup",
        SECURE_MAIL_RESTORE_TO=f"file://{WORK}/restored",
    )
    os.environ.pop("SECURE_MAIL_ARCHIVE_KEY", None)
    line("Vault", f"{bao.url} (dev; SMTP password only at secret/smtp/airflow)")
    line("SMTP", f"localhost:{smtp.port(starttls=True)} mandatory STARTTLS, AUTH required, CA pinned")


def connection_test() -> None:
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook

    ok, detail = SecureSmtpHook().test_connection()
    print("\n-- connection test (sends nothing)")
    check(ok, detail)


def malware_scan(smtp: Any) -> None:
    """A real clamd (private config, EICAR hash signature written here) refuses an infected zip before SMTP."""
    from airflow_secure_mail.errors import MalwareFound
    from airflow_secure_mail.mail.compose import Attachment, MailRequest
    from airflow_secure_mail.mail.screen import MailPolicy
    from airflow_secure_mail.pipeline.channel import MailChannel
    from airflow_secure_mail.pipeline.send import send_mail
    from airflow_secure_mail.scanning.clamd import ClamdScanner, eicar
    from airflow_secure_mail.testing.clamd import ClamdServer, zip_of

    print("\n-- malware scan (clamd on loopback, signature database written at start)")
    with ClamdServer() as clamd:
        policy = MailPolicy(malware_scan=ClamdScanner(clamd.tcp))
        line("clamd", f"{clamd.tcp} and {clamd.unix}")

        def request(*attachments: Any) -> Any:
            return MailRequest(
                sender="airflow@example.com", to=("ops@example.com",), subject="scan demo", text="see attached",
                attachments=attachments,
            )  # fmt: skip

        connections = smtp.connections
        try:
            send_mail(
                request(Attachment("logs.zip", zip_of("debug.txt", eicar()))),
                channel=MailChannel.for_conn(),
                policy=policy,
            )
            check(False, "infected attachment refused")
        except MalwareFound as exc:
            check(exc.item == "logs.zip", f"refused logs.zip: {exc.signature} ({exc.rule})")
        check(smtp.connections == connections, "no SMTP connection was opened for it")
        result = send_mail(
            request(Attachment("sales.csv", b"region,total\nnorth,12\n")), channel=MailChannel.for_conn(), policy=policy
        )
        check(result.to_xcom()["malware_scan"] == "clean", "a clean report is sent, verdict 'clean'")


@contextlib.contextmanager
def airflow_output_to(path: Path) -> Iterator[None]:
    """Send Airflow's own task logs to a file, so the demo prints only its report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_dag(dag_id: str, smtp: Any, expect: str = "success", conf: dict[str, Any] | None = None) -> Any:
    import runpy

    before = len(smtp.messages) if smtp is not None else 0
    namespace = runpy.run_path(str(ROOT / "dags" / f"{dag_id}.py"))
    dag = namespace["dag"]
    print(
        f"\n-- DAG {dag_id} (dag.test())"
        + ("  [its task fails on purpose: the alert is the point]" if expect == "failed" else "")
    )
    with airflow_output_to(WORK / "logs" / f"{dag_id}.log"):
        run = dag.test(run_conf=conf) if conf else dag.test()
    check(str(run.state).endswith(expect), f"run state {run.state} (Airflow log: .demo/logs/{dag_id}.log)")
    for index, received in enumerate(smtp.messages[before:] if smtp is not None else [], start=1):
        stored = WORK / "received" / f"{dag_id}-{index}.eml"
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(received.data)
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        line("to", ", ".join(received.rcpt_tos))
        line("subject", " ".join(str(parsed["Subject"]).split()))
        line("delivered over", f"{received.tls_version} {received.cipher} (AUTH as {received.auth_identity})")
        line("content", parsed.get_content_type())
        line("received copy", stored.relative_to(ROOT))
    if smtp is not None:
        check(len(smtp.messages) > before, f"{len(smtp.messages) - before} message(s) received")
    return run


def seed_keys(bao: Any) -> Any:
    from airflow_secure_mail.testing.keys import seed_vault_keys

    print("\n-- generating keys (gpg, cryptography) and storing them in Vault")
    keys = seed_vault_keys(bao.client(), "board@example.com", "airflow@example.com")
    line(
        "PGP",
        f"board {keys.recipient_pgp.fingerprint[-16:]} (Ed25519/Cv25519), signer {keys.signer_pgp.fingerprint[-16:]}",
    )
    line("S/MIME", "RSA-2048 certificates for board@ and airflow@ from a throwaway CA")
    return keys


def prove_protection(messages: list[Any], keys: Any) -> None:
    print("\n-- independent check of what the server received")
    pgp = next(m for m in messages if b"multipart/encrypted" in m.data)
    smime = next(m for m in messages if b"application/pkcs7-mime" in m.data)
    check(b"12.4M" not in pgp.data and b"12.4M" not in smime.data, "no plaintext figures on the wire")
    gpg_home = tempfile.mkdtemp(prefix="asm-demo-gpg-")
    os.chmod(gpg_home, 0o700)
    base = ["gpg", "--homedir", gpg_home, "--batch", "--status-fd", "2", "--trust-model", "always"]
    try:
        board, signer = keys.recipient_pgp, keys.signer_pgp
        subprocess.run(
            [*base, "--pinentry-mode", "loopback", "--passphrase", board.passphrase, "--import"],
            input=board.private_key.encode(),
            capture_output=True,
            check=True,
        )
        subprocess.run([*base, "--import"], input=signer.public_key.encode(), capture_output=True, check=True)
        armored = re.search(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", pgp.data, re.S)
        assert armored is not None
        out = subprocess.run(
            [*base, "--pinentry-mode", "loopback", "--passphrase", board.passphrase, "--decrypt"],
            input=armored.group(0),
            capture_output=True,
        )
        check(out.returncode == 0 and b"12.4M" in out.stdout, "gpg --decrypt: PGP/MIME body decrypts")
        check(b"GOODSIG" in out.stderr, f"gpg: good signature from {signer.fingerprint[-16:]}")
        inner = email.message_from_bytes(out.stdout, policy=email.policy.default)
        line("protected Subject", f"outer '...', inner '{inner['Subject']}'")
    finally:
        subprocess.run(["gpgconf", "--homedir", gpg_home, "--kill", "all"], capture_output=True)
        shutil.rmtree(gpg_home, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "board.crt").write_text(keys.recipient_smime.certificate)
        Path(tmp, "board.key").write_text(keys.recipient_smime.private_key)
        keys.ca.write(Path(tmp, "ca.pem"))
        dec = subprocess.run(
            ["openssl", "cms", "-decrypt", "-recip", f"{tmp}/board.crt", "-inkey", f"{tmp}/board.key"],
            input=smime.data,
            capture_output=True,
        )
        check(dec.returncode == 0, "openssl cms -decrypt: S/MIME (AES-256) decrypts")
        ver = subprocess.run(
            ["openssl", "cms", "-verify", "-CAfile", f"{tmp}/ca.pem"], input=dec.stdout, capture_output=True
        )
        check(ver.returncode == 0 and b"12.4M" in ver.stdout, "openssl cms -verify: S/MIME signature verifies")


def archive_backup_restore(messages: list[Any]) -> None:
    from airflow_secure_mail.archive.restore import RestoreSelection, select
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.errors import ArchiveIntegrityError

    print("\n-- archive, backup, tamper detection, restore")
    archive = MailArchive(f"file://{WORK}/archive", transit_key="mail-archive")
    now = datetime.now(UTC)
    window = (now - timedelta(hours=1), now + timedelta(hours=1))
    records = select(archive, RestoreSelection(*window))
    line(
        "archive",
        f"{WORK.relative_to(ROOT)}/archive/messages/... ({len(records)} records, AES-256-GCM, Transit 'mail-archive')",
    )
    received = {m.data for m in messages}
    check(
        all(r.data in received for r in records) and len(records) == len(messages),
        "archived bytes == bytes the server received",
    )
    stored_plain = any(b"12.4M" in p.read_bytes() for p in (WORK / "archive").rglob("*") if p.is_file())
    check(not stored_plain, "no plaintext in the archive (bodies or metadata)")

    run_dag("secure_mail_backup_restore", None, conf={"start": window[0].isoformat(), "end": window[1].isoformat()})
    bundles = sorted(p.name for p in (WORK / "backup" / "bundles").iterdir())
    line("backup", ", ".join(bundles))
    restored = sorted((WORK / "restored").glob("*.eml"))
    check(
        len(restored) == len(messages) and all(p.read_bytes() in received for p in restored),
        f"{len(restored)} message(s) restored from the bundle, byte-identical to what was sent",
    )

    tampered = WORK / "tampered"
    shutil.copytree(WORK / "archive", tampered)
    victim = next(tampered.rglob("*.eml"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    try:
        select(MailArchive(f"file://{tampered}", transit_key="mail-archive"), RestoreSelection(*window))
        check(False, "tampered copy detected")
    except ArchiveIntegrityError as exc:
        check(True, f"tampered copy detected: {exc}")


def verify_and_report(messages: list[Any], smtp: Any) -> None:
    """``verify`` on a received copy as a mailbox saves it (yes) and on forgeries (no); the security report."""
    import io

    from airflow_secure_mail.cli import main as cli

    def run(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli(list(args))
        return code, out.getvalue()

    print("\n-- verify: was this mail ours? (airflow-secure-mail verify FILE.eml --archive ...)")
    archive = ["--archive", f"file://{WORK}/archive", "--transit-key", "mail-archive"]
    relays = b"Received: from relay.example by mx.board.example; Tue, 8 Dec 2026 03:00:00 +0000\nX-Spam-Status: No\n"
    saved = WORK / "verify" / "received-as-saved.eml"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_bytes(relays + messages[0].data.replace(b"\r\n", b"\n"))
    code, out = run("verify", str(saved), *archive)
    for text in out.splitlines():
        print(f"    {text}")
    check(code == 0, f"{saved.relative_to(ROOT)} (relay fields prepended, LF endings): ours, exit 0")
    forgeries = {
        "forged-new-message-id.eml": messages[0].data.replace(b"Message-ID: <", b"Message-ID: <x", 1),
        "forged-second-subject.eml": b"Subject: [Airflow] Reset your password\r\n" + messages[0].data,
    }
    for name, data in forgeries.items():
        path = WORK / "verify" / name
        path.write_bytes(data)
        code, out = run("verify", str(path), *archive)
        print(f"    {out.strip()}")
        check(code == 1, f"{path.relative_to(ROOT)}: not ours, exit 1")

    print("\n-- security report (airflow-secure-mail report --archive ... --since 1h --out ...)")
    page = WORK / "security-report.html"
    code, out = run(
        "report", *archive, "--since", "1h", "--out", str(page),
        "--smtp-conn-id", "secure_smtp_default", "--signing-vault-path", "mail-signing",
    )  # fmt: skip
    for text in out.splitlines():
        print(f"    {text}")
    html = page.read_text() if page.exists() else ""
    check(code == 0 and 'data-figure="messages">' in html, f"report written: {page.relative_to(ROOT)}")
    run_dag("secure_mail_security_report", smtp)


if __name__ == "__main__":
    sys.exit(main())
