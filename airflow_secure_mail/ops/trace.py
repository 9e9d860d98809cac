"""What a time window sent and refused, from the archive's metadata only (no ``.eml`` is read or decrypted).

One event per committed message record (``messages/YYYY/MM/DD/<key>.json``), per failed attempt
(``<key>.failed-N.json``) and per refusal record (``refusals/YYYY/MM/DD/<id>.json``), oldest first. A damaged
record is reported in :attr:`Trace.damaged` and skipped; the rest of the window is still read.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow_secure_mail.archive.reader import ArchiveReader
from airflow_secure_mail.archive.record import ArchiveRecord, RecordMetadata
from airflow_secure_mail.archive.refusals import RefusalRecord
from airflow_secure_mail.errors import ArchiveError, ConfigurationError, PolicyViolation
from airflow_secure_mail.mail.addresses import normalize_domain

_PARALLEL = 8
"""Objects read at once."""
KINDS = ("sent", "partially_refused", "failed", "refused")
_ORIGIN = ("dag_id", "task_id", "run_id", "map_index", "try_number")
NOTICE_MARK = "incident_notice"
"""The key ``incident notify`` sets in a notice's ``airflow`` origin: a notice is never noticed again."""


@dataclass(frozen=True)
class TraceEvent:
    """One line of the trace: a message sent (or partly refused), a failed attempt, or a refusal."""

    kind: str
    at: datetime
    fields: Mapping[str, Any]
    record: ArchiveRecord | None = None
    """The message record behind a ``sent``/``partially_refused``/``failed`` event (None for a refusal)."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": self.at.isoformat(), **self.fields}

    @property
    def delivered_to(self) -> tuple[str, ...]:
        """The addresses the server accepted (a sent copy's envelope recipients, less the refused ones)."""
        if self.record is None or self.kind not in ("sent", "partially_refused"):
            return ()
        refused = {r.lower() for r in (self.record.meta.receipt or {}).get("refused", {}) or {}}
        return tuple(r for r in self.record.meta.recipients if r.lower() not in refused)


@dataclass
class Trace:
    events: list[TraceEvent] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    """(object name, why) of each record that could not be read."""


def trace(
    archive: ArchiveReader,
    start: datetime,
    end: datetime,
    *,
    recipient_domain: str | None = None,
    dag_id: str | None = None,
) -> Trace:
    """Every message record, failed attempt and refusal in ``[start, end)`` that passes the filters, oldest first.

    ``recipient_domain`` (IDNA, any case) keeps events with any recipient in that domain; ``dag_id`` is exact.
    """
    domain = _domain_filter(recipient_domain)
    result = Trace()
    for event in [*_message_events(archive, start, end, result), *_refusal_events(archive, start, end, result)]:
        if dag_id is not None and event.fields.get("dag_id") != dag_id:
            continue
        if domain is not None and domain not in event.fields["recipient_domains"]:
            continue
        result.events.append(event)
    result.events.sort(key=lambda e: (e.at, e.kind, str(e.fields.get("archive_object"))))
    return result


def _domain_filter(recipient_domain: str | None) -> str | None:
    if recipient_domain is None:
        return None
    try:
        return normalize_domain(recipient_domain.lstrip("@"))
    except PolicyViolation:
        raise ConfigurationError(f"--recipient-domain {recipient_domain!r} is not a valid domain name.") from None


def _message_events(archive: ArchiveReader, start: datetime, end: datetime, out: Trace) -> Iterator[TraceEvent]:
    """Committed records and failed attempts in the day folders that can hold outcomes in ``[start, end)``."""
    first = archive.first_day()
    if first is None:
        return
    for folder in _days("messages", max((start - timedelta(days=1)).date(), first), end):
        names = [n for n in archive.list_names(folder) if _outcome(n.partition(".")[2])]
        for where, raw in _read_all(archive, [f"{folder}/{n}" for n in names]):
            key, _, suffix = where.rpartition("/")[2].partition(".")
            try:
                if raw is None:
                    continue
                if isinstance(raw, ArchiveError):
                    raise raw
                meta = RecordMetadata.from_json(raw, where=where)
                at = datetime.fromisoformat(meta.committed_at or meta.staged_at)
            except (ArchiveError, ValueError) as exc:
                out.damaged.append((where, str(exc)))
                continue
            if start <= at < end:
                yield _message_event(ArchiveRecord(key, f"{folder}/{key}", meta, committed=suffix == "json"), at, where)


def _message_event(record: ArchiveRecord, at: datetime, where: str) -> TraceEvent:
    meta = record.meta
    status = meta.status.value
    kind = status if record.committed and status in ("sent", "partially_refused") else "failed"
    receipt = meta.receipt or {}
    refused = sorted((receipt.get("refused") or {}).keys())
    fields = {
        "status": status,
        "message_id": meta.message_id,
        **_origin(meta.airflow),
        "conn_id": meta.airflow.get("conn_id"),
        "sender": meta.sender,
        "recipient_count": len(meta.recipients),
        "recipient_domains": _domains(meta.recipients),
        "recipients": list(meta.recipients) if kind != "failed" else None,
        "refused_recipients": refused or None,
        "archive_key": record.key,
        "archive_prefix": record.prefix,
        "archive_object": where,
        "tls_version": (meta.tls or {}).get("version"),
        "protection": meta.protection,
        "encrypted_at_rest": bool(meta.encryption),
        "size": meta.size,
        "resend_of": meta.resend_of,
        "notice": bool(meta.airflow.get(NOTICE_MARK)),
        "malware_scan": dict(meta.malware_scan) if meta.malware_scan else None,
        "spam_scan": dict(meta.spam_scan) if meta.spam_scan else None,
        "error": meta.error,
        "rule": None,
        "reason": None,
    }
    return TraceEvent(kind, at, fields, record)


def _refusal_events(archive: ArchiveReader, start: datetime, end: datetime, out: Trace) -> Iterator[TraceEvent]:
    """Refusal records in ``[start, end)`` (the layout of ``archive/refusals.py``, a damaged one skipped)."""
    for folder in _days("refusals", start.astimezone(UTC).date(), end):
        names = [f"{folder}/{n}" for n in archive.list_names(folder) if n.endswith(".json")]
        for where, raw in _read_all(archive, names):
            try:
                if raw is None:
                    continue
                if isinstance(raw, ArchiveError):
                    raise raw
                refusal = RefusalRecord.from_json(raw, where=where)
                at = datetime.fromisoformat(refusal.at)
            except (ArchiveError, ValueError) as exc:
                out.damaged.append((where, str(exc)))
                continue
            if start <= at < end:
                yield _refusal_event(refusal, at, where)


def _refusal_event(refusal: RefusalRecord, at: datetime, where: str) -> TraceEvent:
    fields = {
        "status": "refused",
        "message_id": refusal.message_id,
        **_origin(refusal.airflow),
        "conn_id": refusal.conn_id,
        "sender": None,
        "recipient_count": refusal.recipient_count,
        "recipient_domains": sorted({normal_domain(d) for d in refusal.recipient_domains}),
        "recipients": list(refusal.recipients) if refusal.recipients is not None else None,
        "refused_recipients": None,
        "archive_key": refusal.id,
        "archive_prefix": None,
        "archive_object": where,
        "tls_version": None,
        "protection": None,
        "encrypted_at_rest": None,
        "size": None,
        "resend_of": None,
        "notice": False,
        "malware_scan": dict(refusal.malware) if refusal.malware else None,
        "spam_scan": dict(refusal.spam) if refusal.spam else None,
        "error": refusal.error_type,
        "rule": refusal.rule,
        "reason": refusal.reason,
    }
    return TraceEvent("refused", at, fields)


def _outcome(suffix: str) -> bool:
    """``<key>.json`` (committed) or ``<key>.failed-N.json`` (a failed attempt); not pending, not the .eml."""
    return suffix == "json" or (suffix.startswith("failed-") and suffix.endswith(".json"))


def _read_all(archive: ArchiveReader, names: list[str]) -> Iterator[tuple[str, bytes | ArchiveError | None]]:
    """(name, bytes, None when gone, or the read's error) of each object, in order; an object store is read
    by a few threads at once (one GET at a time made a thousand records take seconds on SeaweedFS)."""

    def read(name: str) -> bytes | ArchiveError | None:
        try:
            return archive.read(name)
        except ArchiveError as exc:
            return exc

    if len(names) < 2:
        yield from ((n, read(n)) for n in names)
        return
    with ThreadPoolExecutor(_PARALLEL, thread_name_prefix="asm-trace") as pool:
        yield from zip(names, pool.map(read, names), strict=True)


def _days(folder: str, first: date, end: datetime) -> Iterator[str]:
    day, last = first, end.astimezone(UTC).date()
    while day <= last:
        yield f"{folder}/{day:%Y/%m/%d}"
        day += timedelta(days=1)


def _origin(airflow: Mapping[str, Any]) -> dict[str, Any]:
    return {k: airflow.get(k) for k in _ORIGIN}


def _domains(addresses: tuple[str, ...]) -> list[str]:
    return sorted({normal_domain(a.rpartition("@")[2]) for a in addresses if "@" in a})


@functools.lru_cache(maxsize=4096)
def normal_domain(domain: str) -> str:
    """A domain as the filter compares it (IDNA, lower case); one that does not encode is kept lower-cased."""
    try:
        return normalize_domain(domain.strip("<>"))
    except PolicyViolation:
        return domain.strip("<>").lower()


__all__ = ["KINDS", "NOTICE_MARK", "Trace", "TraceEvent", "normal_domain", "trace"]
