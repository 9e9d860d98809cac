"""A seeded archive for the operator's commands: synthetic records written as the archive writes them (the
metadata JSON at its place in the day folders, failed attempts as ``<key>.failed-N.json``) and refusal records,
each with what a test needs to compute the expected answer on its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from airflow_secure_mail.archive.objects import ObjectStore
from airflow_secure_mail.archive.record import ArchiveStatus, RecordMetadata, record_key
from airflow_secure_mail.archive.refusals import refusal_from, write_refusal
from airflow_secure_mail.errors import SpamRefused

DOMAINS = ("example.com", "Example.ORG", "bücher.example")
"""Recipient domains as a caller wrote them; the trace compares them IDNA-encoded and lower-cased."""
IDNA = {"example.com": "example.com", "Example.ORG": "example.org", "bücher.example": "xn--bcher-kva.example"}


@dataclass(frozen=True)
class Seeded:
    kind: str
    at: datetime
    key: str
    name: str
    dag_id: str
    domains: frozenset[str]
    recipients: tuple[str, ...] = ()


def seed_messages(
    store: ObjectStore, base: datetime, n: int, *, step: timedelta = timedelta(minutes=1)
) -> list[Seeded]:
    """``n`` message records, one per ``step`` from ``base`` (staged 30 s before): sent, partly refused
    (every 7th), failed (every 11th); every 5th to two domains; DAGs dag_a/dag_b/dag_c in turn."""
    seeded, objects = [], []
    for i in range(n):
        at = base + i * step
        staged = at - timedelta(seconds=30)
        domain = DOMAINS[i % len(DOMAINS)]
        recipients = (f"u{i}@{domain}", f"v{i}@example.net") if i % 5 == 0 else (f"u{i}@{domain}",)
        status = (
            ArchiveStatus.FAILED
            if i % 11 == 5
            else ArchiveStatus.PARTIALLY_REFUSED
            if i % 7 == 3
            else ArchiveStatus.SENT
        )
        message_id = f"<seed-{i}@example.com>"
        key = record_key(message_id, "airflow@example.com", recipients)
        prefix = f"messages/{staged:%Y/%m/%d}/{key}"
        receipt = None
        if status.delivered:
            refused = {recipients[0]: [550, "5.1.1 no such user"]} if status is ArchiveStatus.PARTIALLY_REFUSED else {}
            receipt = {"message_id": message_id, "accepted": [r for r in recipients if r not in refused],
                       "refused": refused, "tls_version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}  # fmt: skip
        meta = RecordMetadata(
            key=key,
            sender="airflow@example.com",
            recipients=recipients,
            size=100,
            stored_size=100,
            sha256="0" * 64,
            staged_at=staged.isoformat(),
            message_id=message_id,
            airflow={
                "dag_id": ("dag_a", "dag_b", "dag_c")[i % 3],
                "task_id": "t",
                "run_id": f"run{i}",
                "map_index": -1,
                "try_number": 1,
            },
        ).committed(status, at.isoformat(), receipt, None if receipt else "421 4.4.2 try again later")
        name = f"{prefix}.json" if status.delivered else f"{prefix}.failed-1.json"
        objects.append((name, meta.to_json()))
        kind = status.value if status.delivered else "failed"
        domains = frozenset(IDNA.get(r.rpartition("@")[2], r.rpartition("@")[2]) for r in recipients)
        seeded.append(Seeded(kind, at, key, name, meta.airflow["dag_id"], domains, recipients))
    for error in store.write_once_many(objects):
        assert error is None, error
    return seeded


def seed_refusals(
    store: ObjectStore, base: datetime, n: int, *, step: timedelta = timedelta(minutes=50)
) -> list[Seeded]:
    """``n`` spam refusals, one per ``step`` from ``base`` + 15 s, to one domain of :data:`DOMAINS` each."""
    seeded = []
    for i in range(n):
        at = base + i * step + timedelta(seconds=15)
        domain = DOMAINS[i % len(DOMAINS)]
        dag_id = ("dag_a", "dag_b", "dag_c")[i % 3]
        error = SpamRefused(f"score 9.1 over 5.0 for x{i}@{domain}", score=9.1, threshold=5.0, rules=("GTUBE",))
        record = refusal_from(error, recipients=[f"x{i}@{domain}"], origin={"dag_id": dag_id, "task_id": "t"}, at=at)
        name = write_refusal(store, record)
        seeded.append(Seeded("refused", at, record.id, name, dag_id, frozenset({IDNA[domain]})))
    return seeded
