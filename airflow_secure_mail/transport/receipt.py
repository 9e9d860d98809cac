"""What a session reports: a receipt per sent message, and the negotiated TLS and server facts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class SendReceipt:
    """What the server said about one message: who was accepted or refused, over which TLS."""

    message_id: str | None
    sender: str
    accepted: tuple[str, ...]
    refused: dict[str, tuple[int, str]]
    reply: str
    tls_version: str | None
    cipher: str | None
    started_at: datetime
    finished_at: datetime
    size: int = 0
    attempts: int = 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SendReceipt:
        """Rebuild a receipt stored by :meth:`to_dict` (archive records)."""
        return cls(
            message_id=data.get("message_id"),
            sender=data.get("sender", ""),
            accepted=tuple(data.get("accepted") or ()),
            refused={k: (int(v[0]), str(v[1])) for k, v in (data.get("refused") or {}).items()},
            reply=data.get("reply", ""),
            tls_version=data.get("tls_version"),
            cipher=data.get("cipher"),
            started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=datetime.fromisoformat(data["finished_at"]),
            size=int(data.get("size") or 0),
            attempts=int(data.get("attempts") or 1),
        )

    def then(self, retry: SendReceipt) -> SendReceipt:
        """This receipt followed by ``retry``, a resend of the same bytes to some of the recipients it refused."""
        refused = {rcpt: reply for rcpt, reply in self.refused.items() if rcpt not in retry.accepted}
        return replace(
            retry,
            accepted=self.accepted + retry.accepted,
            refused=refused | retry.refused,
            started_at=self.started_at,
            attempts=self.attempts + retry.attempts,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (for XCom and the archive); never the message body."""
        return {
            "message_id": self.message_id,
            "sender": self.sender,
            "accepted": list(self.accepted),
            "refused": {rcpt: [code, text] for rcpt, (code, text) in self.refused.items()},
            "reply": self.reply,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "size": self.size,
            "attempts": self.attempts,
        }


@dataclass
class SessionInfo:
    """What a connection test reports: negotiated TLS, the server certificate, offered extensions."""

    tls_version: str | None = None
    cipher: str | None = None
    cert_subject: str | None = None
    cert_issuer: str | None = None
    cert_not_after: datetime | None = None
    auth_mechanisms: tuple[str, ...] = ()
    size_limit: int | None = None
    authenticated_as: str | None = None
