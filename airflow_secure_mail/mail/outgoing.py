"""Outgoing: the one value that carries a message from compose/protect to the archive and the socket."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_secure_mail.scanning.clamd import ScanReport
    from airflow_secure_mail.scanning.spamd import SpamReport


@dataclass(frozen=True)
class Dropped:
    """A recipient left out of a copy, and why (e.g. no encryption key with ``missing_key='drop_recipient'``)."""

    address: str
    reason: str


@dataclass(frozen=True)
class Outgoing:
    """One copy exactly as it goes on the wire: envelope sender, envelope recipients, bytes, Message-ID.

    ``hidden`` are the Bcc recipients among ``recipients``: errors and logs never name them.
    ``resend_of`` is the original Message-ID when this copy is a resend of an archived message.
    ``scan`` is the malware scan of this copy's parts (None when nothing was scanned); its archive record keeps it.
    ``spam`` is the spam score of this copy before protection (None when no scanner is set); its record keeps it.
    ``fingerprint`` is the content fingerprint (``mail/fingerprint.py``) of the message before our protection;
    None until set: ``protect_all`` sets it on every protected copy, the archive computes it from the bytes.
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes = field(repr=False)
    message_id: str | None = None
    dropped: tuple[Dropped, ...] = ()
    hidden: tuple[str, ...] = ()
    resend_of: str | None = None
    scan: ScanReport | None = None
    spam: SpamReport | None = None
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.recipients, list):
            object.__setattr__(self, "recipients", tuple(self.recipients))

    @property
    def size(self) -> int:
        return len(self.data)

    def content_fingerprint(self) -> str:
        """The fingerprint set by ``protect_all``, else that of these bytes (a copy we did not protect)."""
        if self.fingerprint is not None:
            return self.fingerprint
        from airflow_secure_mail.mail.fingerprint import fingerprint

        return fingerprint(self.data)

    def with_data(self, data: bytes) -> Outgoing:
        """The same copy carrying other bytes (a staged copy found in the archive)."""
        return replace(self, data=data)


__all__ = ["Dropped", "Outgoing"]
