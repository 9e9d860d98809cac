"""What the screens refused: one metadata-only record per refused send, written once beside the messages.

Layout under the archive's location::

    refusals/YYYY/MM/DD/<id>.json    one refused send (policy, HTML, malware, spam, missing key, frozen)

A record holds no body and no address: the time, the task behind the send, the rule and the error's one line
(addresses in it cut to ``@domain``), how many recipients and their domains. ``MailPolicy(
record_refused_recipients=True)`` keeps the addresses too. ``trace`` and the security report read these.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_secure_mail.archive.objects import ObjectStore
from airflow_secure_mail.archive.record import json_object
from airflow_secure_mail.errors import ArchiveIntegrityError

REFUSAL_SCHEMA_VERSION = 1
_FOLDER = "refusals"
_ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@(?=[A-Za-z0-9\[])")
"""The local part of anything that looks like an address: cut, the domain kept (``…@example.com``)."""


@dataclass(frozen=True)
class RefusalRecord:
    """One send a screen refused before anything was sent (``refusals/YYYY/MM/DD/<id>.json``)."""

    id: str
    at: str
    """When it was refused, ISO 8601 UTC."""
    rule: str
    """The ``PolicyViolation.rule`` (``spam``, ``malware``, ``frozen``, ``html``, ...) or ``missing_key``."""
    error_type: str
    reason: str
    """The error's message with every address cut to its domain."""
    recipient_count: int
    recipient_domains: tuple[str, ...]
    airflow: Mapping[str, Any] = field(default_factory=dict)
    """dag_id, task_id, run_id, map_index, try_number of the task behind the send (empty outside a task)."""
    message_id: str | None = None
    sender_domain: str | None = None
    conn_id: str | None = None
    item: str | None = None
    """The part or attachment the rule named, when it named one."""
    malware: Mapping[str, Any] | None = None
    """``{"signature": ...}`` for a malware finding."""
    spam: Mapping[str, Any] | None = None
    """``{"score", "threshold", "rules"}`` for a spam refusal."""
    recipients: tuple[str, ...] | None = None
    """The addresses themselves: only when the policy says ``record_refused_recipients``."""
    schema_version: int = REFUSAL_SCHEMA_VERSION

    @property
    def name(self) -> str:
        """The object's name under the archive's location."""
        day = datetime.fromisoformat(self.at).astimezone(UTC)
        return f"{_FOLDER}/{day:%Y/%m/%d}/{self.id}.json"

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["airflow"] = dict(self.airflow)
        data["recipient_domains"] = list(self.recipient_domains)
        if self.recipients is None:
            del data["recipients"]
        else:
            data["recipients"] = list(self.recipients)
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, raw: bytes, *, where: str) -> RefusalRecord:
        data = json_object(raw, where=where)
        known = {f.name for f in fields(cls)}
        try:
            values = {k: v for k, v in data.items() if k in known}
            values["recipient_domains"] = tuple(values.get("recipient_domains", ()))
            if values.get("recipients") is not None:
                values["recipients"] = tuple(values["recipients"])
            return cls(**values)
        except TypeError:
            raise ArchiveIntegrityError(f"refusal record {where} is not a valid record.", key=where) from None


def refusal_from(
    error: BaseException,
    *,
    recipients: Iterable[str],
    sender: str | None = None,
    message_id: str | None = None,
    origin: Mapping[str, Any] | None = None,
    conn_id: str | None = None,
    keep_recipients: bool = False,
    at: datetime | None = None,
) -> RefusalRecord:
    """The record of ``error`` refusing a send to ``recipients`` (domains only unless ``keep_recipients``)."""
    addresses = list(dict.fromkeys(str(r) for r in recipients))
    when = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
    rule = str(getattr(error, "rule", None) or _rule_of(error))
    seed = json.dumps([when, rule, message_id, dict(origin or {}), secrets.token_hex(8)], default=str)
    malware = {"signature": error.signature} if hasattr(error, "signature") else None
    spam = None
    if hasattr(error, "score"):
        spam = {"score": error.score, "threshold": getattr(error, "threshold", None),
                "rules": list(getattr(error, "rules", ()))}  # fmt: skip
    return RefusalRecord(
        id=hashlib.sha256(seed.encode()).hexdigest()[:40],
        at=when,
        rule=rule,
        error_type=type(error).__name__,
        reason=domains_only(str(error)),
        recipient_count=len(addresses),
        recipient_domains=tuple(sorted({_domain(a) for a in addresses if "@" in a})),
        airflow={k: v for k, v in dict(origin or {}).items() if v is not None},
        message_id=message_id,
        sender_domain=_domain(sender) if sender and "@" in sender else None,
        conn_id=conn_id,
        item=getattr(error, "item", None),
        malware=malware,
        spam=spam,
        recipients=tuple(addresses) if keep_recipients else None,
    )


def write_refusal(store: ObjectStore, record: RefusalRecord) -> str:
    """Write ``record`` once under ``store``; returns its object name."""
    store.write_once(record.name, record.to_json())
    return record.name


def iter_refusals(store: ObjectStore, start: datetime, end: datetime) -> Iterator[RefusalRecord]:
    """Refusal records whose time falls in ``[start, end)``, oldest day first (a damaged one raises)."""
    day = start.astimezone(UTC).date()
    while day <= end.astimezone(UTC).date():
        folder = f"{_FOLDER}/{day:%Y/%m/%d}"
        for name in sorted(store.list_names(folder)):
            if not name.endswith(".json"):
                continue
            raw = store.read(f"{folder}/{name}")
            if raw is None:
                continue
            record = RefusalRecord.from_json(raw, where=f"{folder}/{name}")
            if start <= datetime.fromisoformat(record.at) < end:
                yield record
        day += timedelta(days=1)


def domains_only(text: str) -> str:
    """``text`` with the local part of every address replaced by ``…`` (``…@example.com``)."""
    return _ADDRESS.sub("…@", text)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip(">").lower()


def _rule_of(error: BaseException) -> str:
    """A rule name for refusals that are not PolicyViolations (a missing encryption key)."""
    return "missing_key" if type(error).__name__ == "EncryptionKeyMissing" else type(error).__name__


__all__ = ["REFUSAL_SCHEMA_VERSION", "RefusalRecord", "domains_only", "iter_refusals", "refusal_from", "write_refusal"]
