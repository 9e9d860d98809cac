"""Restore: select verified records from the archive or a bundle, export them, or resend them verbatim."""

from __future__ import annotations

import mailbox
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any

from airflow_secure_mail.archive.store import ArchiveRecord, MailArchive, ObjectStore, as_archive


@dataclass(frozen=True)
class RestoreSelection:
    start: datetime | None = None
    end: datetime | None = None
    message_id: str | None = None
    recipient: str | None = None
    dag_id: str | None = None
    task_id: str | None = None

    def matches(self, record: ArchiveRecord) -> bool:
        meta = record.metadata
        origin = meta.get("airflow") or {}
        if self.message_id and meta.get("message_id") != self.message_id:
            return False
        if self.recipient and self.recipient.lower() not in (r.lower() for r in meta["envelope"]["recipients"]):
            return False
        if self.dag_id and origin.get("dag_id") != self.dag_id:
            return False
        return not (self.task_id and origin.get("task_id") != self.task_id)


@dataclass
class Restored:
    record: ArchiveRecord
    data: bytes


def select(
    archive: MailArchive | str,
    selection: RestoreSelection,
    *,
    bundle_location: str | None = None,
    bundle_conn_id: str | None = None,
) -> list[Restored]:
    """Matching records, each verified (hash, AEAD tag, size) and decrypted."""
    from airflow_secure_mail.archive.bundle import manifests_overlapping, records_in_bundle

    store = as_archive(archive)
    assert store is not None
    start = selection.start or datetime(1970, 1, 1, tzinfo=UTC)
    end = selection.end or datetime.now(UTC)
    if bundle_location:
        target = ObjectStore(bundle_location, bundle_conn_id)
        out = []
        for manifest in manifests_overlapping(target, start, end):
            for record, data in records_in_bundle(store, target, manifest):
                stamp = datetime.fromisoformat(str(record.metadata["committed_at"]))
                if start <= stamp < end and selection.matches(record):
                    out.append(Restored(record, data))
        return out
    return [Restored(r, store.verify(r)) for r in store.iter_records(start, end) if selection.matches(r)]


def export(found: list[Restored], destination: str, *, conn_id: str | None = None, fmt: str = "eml") -> list[str]:
    """Write ``<key>.eml`` files, or one ``restored.mbox``, to ``destination``.

    Never overwrites: an object already there with the same bytes (a cleared run exporting again) is kept,
    a different one is an ArchiveError.
    """
    target = ObjectStore(destination, conn_id)
    if fmt == "eml":
        for item in found:
            target.write_once_or_same(f"{item.record.key}.eml", item.data)
        return [f"{item.record.key}.eml" for item in found]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "restored.mbox")
        box = mailbox.mbox(path, create=True)
        try:
            for item in found:
                entry = mailbox.mboxMessage(item.data)
                # a fixed From_ line (the commit time, not now) keeps a re-run's mbox byte-identical
                stamp = datetime.fromisoformat(
                    str(item.record.metadata.get("committed_at") or "1970-01-01T00:00:00+00:00")
                )
                entry.set_from("MAILER-DAEMON", stamp.astimezone(UTC).timetuple())
                box.add(entry)
            box.flush()
        finally:
            box.close()
        with open(path, "rb") as fh:
            target.write_once_or_same("restored.mbox", fh.read())
    return ["restored.mbox"]


def resent_headers(resent_from: str, resend_to: Sequence[str]) -> tuple[bytes, str, str, list[str]]:
    """``Resent-*`` lines (RFC 5322 §3.6.6) as bytes, with validated addresses only."""
    from airflow_secure_mail.mail.addresses import parse_mailbox

    sender = parse_mailbox(resent_from, "resent_from").addr
    rcpts = [parse_mailbox(r, "resend_to").addr for r in resend_to]
    message_id = make_msgid(domain=sender.rpartition("@")[2])
    lines = [
        f"Resent-Date: {format_datetime(datetime.now(UTC))}",
        f"Resent-From: {sender}",
        f"Resent-To: {', '.join(rcpts)}",
        f"Resent-Message-ID: {message_id}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii"), message_id, sender, rcpts


def resend(
    found: list[Restored],
    *,
    conn_id: str = "secure_smtp_default",
    resent_from: str | None = None,
    resend_to: str | Sequence[str] | None = None,
) -> list[str]:
    """Resend each archived message verbatim, only prefixed with ``Resent-*`` lines."""
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook

    hook = SecureSmtpHook(conn_id=conn_id)
    sender = hook.sender(resent_from)
    override = [resend_to] if isinstance(resend_to, str) else list(resend_to or [])
    envelopes: list[Any] = []
    ids = []
    for item in found:
        rcpts = override or list(item.record.metadata["envelope"]["recipients"])
        prefix, message_id, envelope_from, envelope_to = resent_headers(sender, rcpts)
        envelopes.append((envelope_from, envelope_to, prefix + item.data))
        ids.append(message_id)
    hook.send_many(envelopes, concurrency=1)
    return ids
