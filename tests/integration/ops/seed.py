"""A seeded archive written fast: committed records (message, metadata) and refusal records spread over days,
with the variety the security report counts (domains, protection, TLS, scans, failed attempts, refusals).

The records are written as ``MailArchive`` writes them (same names, same JSON), without the pipeline: a
thousand real sends would take minutes. The tests send a few for real beside them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from airflow_secure_mail.archive.record import ArchiveStatus, RecordMetadata, record_key
from airflow_secure_mail.archive.refusals import RefusalRecord, write_refusal
from airflow_secure_mail.archive.store import MailArchive

DOMAINS = ("example.com", "corp.example", "partner.example", "bank.example", "mail.example", "x.example")
RULES = ("html", "malware", "spam", "missing_key", "frozen", "attachment_type")
PROTECTIONS = ("none", "signed (pgp)", "signed (smime), encrypted (smime)", "signed (pgp), encrypted (pgp)")
TLS = ("TLSv1.3", "TLSv1.3", "TLSv1.2")


def message(n: int, at: datetime, to: tuple[str, ...], tag: str = "seed") -> bytes:
    date = at.strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        f"From: Airflow <airflow@example.com>\r\nTo: {', '.join(to)}\r\nSubject: [Airflow] report {n}\r\n"
        f"Date: {date}\r\nMessage-ID: <{tag}.{n}@airflow.example.com>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
        f"Report {n}: all {n % 97} rows loaded.\r\n"
    ).encode()


@dataclass
class Seeded:
    records: list[RecordMetadata] = field(default_factory=list)
    failures: list[RecordMetadata] = field(default_factory=list)
    refusals: list[RefusalRecord] = field(default_factory=list)
    messages: dict[str, bytes] = field(default_factory=dict)
    """Message-ID -> the bytes of its (first) copy."""


def seed(
    archive: MailArchive, count: int, *, end: datetime, days: int = 7, refusals: int = 0, tag: str = "seed"
) -> Seeded:
    """``count`` committed records over the ``days`` before ``end`` (every 7th with two recipient copies,
    every 11th with a failed attempt), and ``refusals`` refusal records over the same days."""
    out = Seeded()
    objects: list[tuple[str, bytes]] = []
    step = timedelta(days=days) / max(count, 1)
    start = end - timedelta(days=days)
    for n in range(count):
        at = start + step * n + timedelta(seconds=1)
        domain = DOMAINS[(n * n) % len(DOMAINS)]
        recipients = (f"r{n}@{domain}",) if n % 5 else (f"r{n}@{domain}", f"s{n}@{DOMAINS[0]}")
        copies = [recipients] if n % 7 else [(r,) for r in recipients]
        data = message(n, at, recipients, tag)
        out.messages[f"<{tag}.{n}@airflow.example.com>"] = data
        for copy in copies:
            key = record_key(f"<{tag}.{n}@airflow.example.com>", "airflow@example.com", copy)
            digest = hashlib.sha256(data).hexdigest()
            scan = {"verdict": "found" if n % 101 == 0 else "clean", "signature": None, "scanner": "clamd"}
            if n % 101 == 0:
                scan["signature"] = "Eicar-Test-Signature"
            spam = {"score": 6.5 if n % 53 == 0 else 1.0, "threshold": 5.0, "rules": ["SEED_RULE"]}
            meta = RecordMetadata(
                key=key,
                sender="airflow@example.com",
                recipients=copy,
                size=len(data),
                stored_size=len(data),
                sha256=digest,
                content_sha256=digest,
                staged_at=at.isoformat(),
                message_id=f"<{tag}.{n}@airflow.example.com>",
                protection=PROTECTIONS[n % len(PROTECTIONS)],
                malware_scan=scan if n % 3 == 0 else None,
                spam_scan=spam if n % 2 == 0 else None,
                airflow={"dag_id": f"dag_{n % 4}", "task_id": "mail", "run_id": f"scheduled__{at:%Y-%m-%d}"},
            )
            prefix = f"messages/{at:%Y/%m/%d}/{key}"
            objects.append((f"{prefix}.eml", data))
            if n % 11 == 0:
                error = "VaultUnavailable: Vault is sealed" if n % 22 == 0 else "SmtpTemporaryError: 451 try later"
                failed = meta.committed(ArchiveStatus.FAILED, (at + timedelta(seconds=1)).isoformat(), None, error)
                objects.append((f"{prefix}.failed-1.json", failed.to_json()))
                out.failures.append(failed)
            status = ArchiveStatus.PARTIALLY_REFUSED if n % 13 == 0 else ArchiveStatus.SENT
            receipt = {"tls_version": TLS[n % len(TLS)], "cipher": "TLS_AES_256_GCM_SHA384", "refused": {}}
            committed = meta.committed(status, (at + timedelta(seconds=2)).isoformat(), receipt, None)
            objects.append((f"{prefix}.json", committed.to_json()))
            out.records.append(committed)
    failures = [e for e in archive.write_once_many(objects) if e is not None]
    assert not failures, failures[:3]
    for n in range(refusals):
        at = start + timedelta(days=days) / max(refusals, 1) * n + timedelta(seconds=3)
        rule = RULES[n % len(RULES)]
        refusal = RefusalRecord(
            id=hashlib.sha256(f"{tag} refusal {n}".encode()).hexdigest()[:40],
            at=at.astimezone(UTC).isoformat(),
            rule=rule,
            error_type="PolicyViolation",
            reason=f"refused by {rule}",
            recipient_count=1 + n % 3,
            recipient_domains=(DOMAINS[n % len(DOMAINS)],),
            airflow={"dag_id": f"dag_{n % 4}", "task_id": "mail"},
            malware={"signature": "Eicar-Test-Signature"} if rule == "malware" else None,
            spam={"score": 9.0, "threshold": 5.0, "rules": ["GTUBE"]} if rule == "spam" else None,
        )
        write_refusal(archive, refusal)
        out.refusals.append(refusal)
    return out
