"""Restore: select verified records from the archive or a bundle, export them, or resend them verbatim."""

from __future__ import annotations

import hashlib
import mailbox
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

from airflow_secure_mail.archive.reader import committed_at
from airflow_secure_mail.archive.store import ArchiveRecord, MailArchive, ObjectStore, as_archive
from airflow_secure_mail.errors import ArchiveIntegrityError
from airflow_secure_mail.mail.outgoing import Outgoing


@dataclass(frozen=True)
class RestoreSelection:
    start: datetime | None = None
    end: datetime | None = None
    message_id: str | None = None
    recipient: str | None = None
    dag_id: str | None = None
    task_id: str | None = None

    def matches(self, record: ArchiveRecord) -> bool:
        meta = record.meta
        origin = meta.airflow or {}
        if self.message_id and meta.message_id != self.message_id:
            return False
        if self.recipient and self.recipient.lower() not in (r.lower() for r in meta.recipients):
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
                if start <= committed_at(record) < end and selection.matches(record):
                    out.append(Restored(record, data))
        return out
    return [Restored(r, store.verify(r)) for r in store.iter_records(start, end) if selection.matches(r)]


@dataclass(frozen=True)
class ArchiveCheck:
    """What :func:`verify_archive` found: how many records are intact, and each damaged one with why."""

    intact: int
    damaged: tuple[tuple[str, str], ...]
    """(record prefix, the integrity error's message)"""

    @property
    def checked(self) -> int:
        return self.intact + len(self.damaged)


def verify_archive(
    archive: MailArchive | str, start: datetime | None = None, end: datetime | None = None
) -> ArchiveCheck:
    """Check every committed record of ``[start, end)`` as backup and restore do (hash, AES-GCM tag, size, key).

    A damaged record is counted and named and the check goes on; a Vault or storage failure (no Transit key,
    no access) is not the archive's damage and is raised.
    """
    store = as_archive(archive)
    assert store is not None
    begin = start or datetime(1970, 1, 1, tzinfo=UTC)
    finish = end or datetime.now(UTC)
    intact, damaged = 0, []
    for key, prefix in store.record_refs(begin, finish):
        try:
            record = store.record_at(key, prefix)
            if not begin <= committed_at(record) < finish:
                continue
            store.verify(record)
        except ArchiveIntegrityError as exc:
            damaged.append((prefix, " ".join(str(exc).split())))
            continue
        intact += 1
    return ArchiveCheck(intact, tuple(damaged))


def export(
    found: list[Restored],
    destination: str,
    *,
    conn_id: str | None = None,
    fmt: str = "eml",
    log_fn: Callable[[str], None] | None = None,
) -> list[str]:
    """Write ``<key>.eml`` files, or one ``restored.mbox``, to ``destination``; ``log_fn`` hears each location.

    Never overwrites: an object already there with the same bytes (a cleared run exporting again) is kept,
    a different one is an ArchiveError.
    """
    target = ObjectStore(destination, conn_id)
    say = log_fn or (lambda _line: None)
    if fmt == "eml":
        for item in found:
            name = f"{item.record.key}.eml"
            fresh = target.write_once_or_same(name, item.data)
            kept = "" if fresh else " (already there, same bytes)"
            say(f"wrote {target.location}/{name}: {item.record.meta.message_id or 'no Message-ID'}{kept}")
        return [f"{item.record.key}.eml" for item in found]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "restored.mbox")
        box = mailbox.mbox(path, create=True)
        try:
            for item in found:
                entry = mailbox.mboxMessage(item.data)
                # a fixed From_ line (the commit time, not now) keeps a re-run's mbox byte-identical
                entry.set_from("MAILER-DAEMON", committed_at(item.record).astimezone(UTC).timetuple())
                box.add(entry)
            box.flush()
        finally:
            box.close()
        with open(path, "rb") as fh:
            target.write_once_or_same("restored.mbox", fh.read())
    say(f"wrote {target.location}/restored.mbox: {len(found)} message(s)")
    return ["restored.mbox"]


def resent_headers(
    resent_from: str,
    resend_to: Sequence[str],
    *,
    seed: str | None = None,
    allow_special_use_domains: bool = False,
) -> tuple[bytes, str, tuple[str, ...]]:
    """``Resent-*`` lines (RFC 5322 §3.6.6) as bytes, the Resent-Message-ID, and the validated recipients.

    ``Resent-To`` names only recipients chosen for the resend (``resend_to``); resent to the original
    envelope (an empty ``resend_to``) it is left out (it is optional), since that envelope may hold Bcc
    recipients. With ``seed`` (task identity + record key) the Resent-Message-ID is stable, so a retried
    restore finds its resend already archived and sends nothing twice.
    """
    from airflow_secure_mail.mail.addresses import parse_mailbox

    special = allow_special_use_domains
    sender = parse_mailbox(resent_from, "resent_from", allow_special_use_domains=special).addr
    rcpts = tuple(parse_mailbox(r, "resend_to", allow_special_use_domains=special).addr for r in resend_to)
    domain = sender.rpartition("@")[2]
    if seed is None:
        message_id = make_msgid(domain=domain)
    else:
        message_id = f"<{hashlib.sha256(seed.encode()).hexdigest()[:40]}@{domain}>"
    lines = [f"Resent-Date: {format_datetime(datetime.now(UTC))}", f"Resent-From: {sender}"]
    if rcpts:
        lines.append(f"Resent-To: {', '.join(rcpts)}")
    lines.append(f"Resent-Message-ID: {message_id}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii"), message_id, rcpts


def resend_copies(
    found: list[Restored],
    *,
    resent_from: str,
    resend_to: str | Sequence[str] | None = None,
    seed: str | None = None,
    allow_special_use_domains: bool = False,
) -> list[Outgoing]:
    """Each archived message verbatim, prefixed only with ``Resent-*`` lines, as a copy for the pipeline.

    Without ``resend_to`` a copy goes to the original envelope, whose recipients stay hidden (never named).
    ``allow_special_use_domains`` is the send's policy switch (``.internal`` relays and mailboxes).
    """
    from airflow_secure_mail.mail.addresses import parse_mailbox
    from airflow_secure_mail.mail.header_block import with_crlf

    override = [resend_to] if isinstance(resend_to, str) else list(resend_to or [])
    special = allow_special_use_domains
    sender = parse_mailbox(resent_from, "resent_from", allow_special_use_domains=special).addr
    copies = []
    for item in found:
        seeded = f"{seed}|{item.record.key}" if seed else None
        prefix, message_id, named = resent_headers(sender, override, seed=seeded, allow_special_use_domains=special)
        rcpts = named or item.record.meta.recipients
        hidden = () if named else rcpts
        data = prefix + with_crlf(item.data)  # archived before LF-only bytes got CRLF: what the wire carried
        copies.append(Outgoing(sender, rcpts, data, message_id, hidden=hidden, resend_of=item.record.meta.message_id))
    return copies
