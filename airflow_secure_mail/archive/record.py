"""The archive's record of one message: its status (an enum) and its metadata (a typed value, one (de)serialiser)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from airflow_secure_mail.errors import ArchiveIntegrityError

SCHEMA_VERSION = 1


class ArchiveStatus(StrEnum):
    """Where a message stands; ``delivered`` states end the story: a retry must not send again."""

    PENDING = "pending"
    SENT = "sent"
    PARTIALLY_REFUSED = "partially_refused"
    UNKNOWN = "unknown"
    """The connection dropped after DATA began and no reply came. The server takes responsibility only with
    its reply (RFC 5321 §4.1.1.4), so the next try sends the staged bytes again: a loss is never possible,
    a duplicate only if the server stored the message and then lost the connection before answering."""
    FAILED = "failed"

    @property
    def delivered(self) -> bool:
        return self in (ArchiveStatus.SENT, ArchiveStatus.PARTIALLY_REFUSED)


DELIVERED = frozenset(s for s in ArchiveStatus if s.delivered)
"""Committed states after which a retry must not send again."""


@dataclass(frozen=True)
class RecordMetadata:
    """The JSON beside each archived message (``<key>.pending.json``, ``<key>.json``, ``<key>.failed-N.json``).

    Holds no secret and no body: hashes, sizes, the envelope, the receipt, where it came from.
    """

    key: str
    sender: str
    recipients: tuple[str, ...]
    size: int
    stored_size: int
    sha256: str
    staged_at: str
    message_id: str | None = None
    content_sha256: str | None = None
    content_fingerprint: str | None = None
    """What the message says, taken before our protection (``mail/fingerprint.py``): a retry is judged by it
    without reading (or Transit-opening) the archived bytes. None in records written before it existed."""
    encryption: Mapping[str, Any] | None = None
    protection: str = "none"
    malware_scan: Mapping[str, Any] | None = None
    spam_scan: Mapping[str, Any] | None = None
    """SpamAssassin's verdict on the copy: ``{"score", "threshold", "rules"}``; None when not scored."""
    airflow: Mapping[str, Any] = field(default_factory=dict)
    resend_of: str | None = None
    status: ArchiveStatus = ArchiveStatus.PENDING
    receipt: Mapping[str, Any] | None = None
    error: str | None = None
    tls: Mapping[str, Any] | None = None
    committed_at: str | None = None
    relay: str | None = None
    """The connection id of the relay that took the message (a fallback's when the primary failed over); None in
    records written before it existed, and in records of messages that were never sent."""
    schema_version: int = SCHEMA_VERSION

    def committed(
        self, status: ArchiveStatus, at: str, receipt: Mapping[str, Any] | None, error: str | None
    ) -> RecordMetadata:
        """This record after delivery (or a failed attempt)."""
        tls = {"version": receipt.get("tls_version"), "cipher": receipt.get("cipher")} if receipt else None
        return replace(self, status=status, receipt=receipt or None, error=error, committed_at=at, tls=tls)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: asdict's deep copies cost more
        data["envelope"] = {"sender": data.pop("sender"), "recipients": list(data.pop("recipients"))}
        data["status"] = self.status.value
        for optional in ("resend_of", "relay"):
            if data[optional] is None:
                del data[optional]
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, default=str).encode()  # no indent: the C encoder

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "record") -> RecordMetadata:
        try:
            envelope = data["envelope"]
            known = {f.name for f in fields(cls)} - {"sender", "recipients", "status"}
            values = {k: v for k, v in data.items() if k in known}
            return cls(
                sender=str(envelope["sender"]),
                recipients=tuple(envelope["recipients"]),
                status=ArchiveStatus(data.get("status", "pending")),
                **values,
            )
        except (KeyError, TypeError, ValueError):
            raise ArchiveIntegrityError(f"archive metadata {where} is not a valid record.", key=where) from None

    @classmethod
    def from_json(cls, raw: bytes, *, where: str = "record") -> RecordMetadata:
        return cls.from_dict(json_object(raw, where=where), where=where)


def json_object(raw: bytes, *, where: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object; anything else is an ArchiveIntegrityError naming ``where``."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise ArchiveIntegrityError(f"archive metadata {where} is not valid JSON.", key=where) from None
    if not isinstance(data, dict):
        raise ArchiveIntegrityError(f"archive metadata {where} is not a valid record.", key=where)
    return data


@dataclass(frozen=True)
class ArchiveRecord:
    """One message's place in the archive (``prefix``) and its metadata."""

    key: str
    prefix: str
    meta: RecordMetadata
    committed: bool = False
    """Read from ``<key>.json``: final. Only delivered states are committed so; an archive written before
    "unknown" was retried may hold committed "unknown" records, which stay final too (never sent twice)."""
    staged_earlier: bool = False
    """Staged by an earlier try that stopped before its index entry: the archived bytes are what to send."""

    @property
    def status(self) -> ArchiveStatus:
        return self.meta.status

    @property
    def delivered(self) -> bool:
        return self.committed or self.meta.status.delivered

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata as the JSON dict (deprecated: read :attr:`meta`)."""
        import warnings

        warnings.warn(
            "ArchiveRecord.metadata is deprecated: read ArchiveRecord.meta.", DeprecationWarning, stacklevel=2
        )
        return self.meta.to_dict()


def record_key(message_id: str | None, sender: str, recipients: list[str] | tuple[str, ...]) -> str:
    """The archive key of one outgoing copy: stable across retries of the same task instance."""
    ident = "\x00".join([message_id or "", sender.lower(), *sorted(r.lower() for r in recipients)])
    return hashlib.sha256(ident.encode()).hexdigest()[:40]


def same_message(archived: bytes, new: bytes, *, protected_here: bool = False) -> bool:
    """True when ``new`` is another try of the message in ``archived``: equal content fingerprints.

    For records written before ``content_fingerprint`` existed. A message we encrypted (``protected_here``)
    carries fresh ciphertext at each try, and its plaintext is gone: it is judged by its headers, as then.
    """
    from airflow_secure_mail.mail.fingerprint import ENCRYPTED, fingerprint, headers_fingerprint

    if archived == new:
        return True
    if protected_here and _top_type(archived) in ENCRYPTED and _top_type(new) in ENCRYPTED:
        return headers_fingerprint(archived) == headers_fingerprint(new)
    return fingerprint(archived) == fingerprint(new)


def _top_type(data: bytes) -> str:
    from email import message_from_bytes

    return message_from_bytes(data).get_content_type()


__all__ = [
    "DELIVERED",
    "SCHEMA_VERSION",
    "ArchiveRecord",
    "ArchiveStatus",
    "RecordMetadata",
    "record_key",
    "same_message",
]
