"""What a send reports: the small XCom result, the one rule that turns outcomes into success or an error,
and the task-log lines (Message-IDs, counts, TLS, protection, archive location; never an address)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import DeliveryError
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.transport.batch import Outcome
from airflow_secure_mail.transport.session import SendReceipt

if TYPE_CHECKING:
    from airflow_secure_mail.archive.store import ArchiveRecord, MailArchive

log = logging.getLogger(__name__)


@dataclass
class MailResult:
    """What happened to every message of one request; ``to_xcom`` is small and never holds a body."""

    receipts: list[SendReceipt] = field(default_factory=list)
    archive_keys: list[str] = field(default_factory=list)
    protection: str | None = None
    dropped: list[str] = field(default_factory=list)
    already_sent: int = 0
    malware_scan: str | None = None
    spam_scan: dict[str, Any] | None = None
    """The spam verdict (``SpamReport.to_xcom``: verdict, score, threshold, rule names); None when not scored."""

    def to_xcom(self) -> dict[str, Any]:
        return {
            "message_ids": [r.message_id for r in self.receipts],
            "accepted": sorted({a for r in self.receipts for a in r.accepted}),
            "refused": {k: v[0] for r in self.receipts for k, v in r.refused.items()},
            "tls_version": self.receipts[0].tls_version if self.receipts else None,
            "archive_keys": list(self.archive_keys),
            "protection": self.protection,
            "dropped_for_missing_key": list(self.dropped),
            "already_sent": self.already_sent,
            "malware_scan": self.malware_scan,
            "spam_scan": self.spam_scan,
        }


def raise_for_outcomes(items: Sequence[Outgoing], outcomes: Sequence[Outcome], allow_partial: bool) -> None:
    """Raise the first failure, or a partial refusal unless allowed; Bcc recipients are never named."""
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome.refused and not allow_partial:
            shown = ", ".join(
                f"{'a Bcc recipient' if r in item.hidden else r} ({code})" for r, (code, _) in outcome.refused.items()
            )
            raise DeliveryError(
                f"{len(outcome.refused)} of {len(outcome.refused) + len(outcome.accepted)} recipients "
                f"refused: {shown}; the others received it.",
                refused=outcome.refused,
                receipt=outcome,
            )


_ALREADY = {"partially_refused": " (some recipients refused)"}


def log_already_sent(item: Outgoing, status: str) -> None:
    note = _ALREADY.get(status, "")
    log.info("already sent by an earlier try%s, not sent again: %s", note, item.message_id)


def archived_at(archive: MailArchive | None, record: ArchiveRecord | None) -> str | None:
    """Where a copy's archived bytes are (``<location>/<prefix>.eml``), None when it was not archived."""
    if archive is None or record is None:
        return None
    return f"{archive.location}/{record.prefix}.eml"


def log_outcomes(
    server: str,
    sent: Sequence[tuple[Outgoing, Outcome]],
    already: int,
    *,
    protection: str | None = None,
    archived: Sequence[str | None] = (),
    relays: Sequence[str | None] = (),
    primary: str | None = None,
) -> None:
    """One task-log line per copy sent now and one summary: server, TLS, recipient counts, Message-IDs, how the
    copy was protected (``Protection.describe()``) and where it was archived (``archived``: one per ``sent``).
    A copy a fallback relay took (``relays``: its connection id, one per ``sent``) names that connection."""
    ok, failed = [], []
    how = protection if protection and protection != "none" else "not signed or encrypted"
    places = list(archived) + [None] * (len(sent) - len(archived))
    took = list(relays) + [None] * (len(sent) - len(relays))
    for (item, outcome), place, relay in zip(sent, places, took, strict=True):
        where = f"archived at {place}" if place else "not archived"
        via = server if relay is None or relay == primary else f"fallback connection {relay}"
        if isinstance(outcome, SendReceipt):
            ok.append(item.message_id)
            refused = f", {len(outcome.refused)} refused" if outcome.refused else ""
            log.info("sent %s to %d recipient(s)%s via %s over %s; %s; %s", outcome.message_id or item.message_id,
                     len(outcome.accepted), refused, via, outcome.tls_version or "no TLS", how, where)  # fmt: skip
        else:
            failed.append(item.message_id)
            kind = "transient" if isinstance(outcome, DeliveryError) and outcome.transient else "permanent"
            log.warning("not sent: %s to %d recipient(s) (%s, %s); %s", item.message_id, len(item.recipients),
                        type(outcome).__name__, kind, where)  # fmt: skip
    total = len(sent) + already
    if not sent:
        log.info("nothing sent: all %d message(s) were already sent by an earlier try", already)
    elif failed:
        went = ", ".join(map(str, ok)) or "none"
        log.warning("%d of %d message(s) failed (%s); went out in this try: %s; already sent earlier: %d",
                    len(failed), total, ", ".join(map(str, failed)), went, already)  # fmt: skip
    else:
        log.info("%d message(s) sent, %d already sent earlier, via %s", len(ok), already, server)
