"""MailChannel: what a send needs from one connection id, built once and passed down explicitly.

The operator, the notifier, the email backend, ``SecureSmtpHook.send`` and restore's resend all build one
instead of assembling a hook, a sender and a policy each in their own way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_secure_mail.connection.client import SmtpClient
    from airflow_secure_mail.mail.compose import Attachment, MailRequest
    from airflow_secure_mail.mail.screen import MailPolicy


@dataclass(frozen=True)
class MailChannel:
    """The client that delivers, its Vault access, the connection's default policy and sender, the send deadline."""

    conn_id: str
    client: SmtpClient
    default_policy: MailPolicy
    from_email: str | None
    deadline: float
    server: str

    @classmethod
    def for_conn(cls, conn_id: str = "secure_smtp_default") -> MailChannel:
        """The channel of connection ``conn_id``."""
        from airflow_secure_mail.connection.client import SmtpClient

        return cls.of(SmtpClient.for_conn(conn_id))

    @classmethod
    def of(cls, client: SmtpClient) -> MailChannel:
        """The channel of a connection's client (``SecureSmtpHook.client``)."""
        from airflow_secure_mail.mail.screen import MailPolicy

        s = client.settings
        policy = MailPolicy.from_dict(s.policy_defaults) if s.policy_defaults else MailPolicy()
        return cls(client.conn_id, client, policy, s.from_email, s.deadline, f"{s.host}:{s.port}")

    @property
    def vault(self) -> Any:
        """The one Vault access object of this process for the connection's Vault (credentials, keys)."""
        return self.client.vault

    async def check_not_frozen(self) -> None:
        """Raise SendFrozen when an operator froze this connection (``incident freeze``); Vault is read at most
        once per ``freeze_check_interval``, off the event loop."""
        import asyncio

        from airflow_secure_mail.connection.freeze import check_not_frozen

        settings = self.client.settings
        if settings.freeze_path is not None:
            await asyncio.to_thread(check_not_frozen, self.conn_id, settings, self.vault)

    def sender(self, explicit: str | None = None) -> str:
        """The envelope sender: ``explicit`` if given, else the connection's ``from_email``."""
        sender = explicit or self.from_email
        if not sender:
            raise ConfigurationError(
                f"no sender: pass sender= (or From) or set extra from_email on connection {self.conn_id!r}."
            )
        return sender

    def policy(self, explicit: MailPolicy | None) -> MailPolicy:
        """``explicit`` if given, else the connection's ``policy`` extra, else the defaults."""
        return explicit if explicit is not None else self.default_policy


AUTOMATED_HEADERS = {"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"}
"""RFC 3834 (section 5) and Exchange's suppression of automatic replies, on every automated mail."""


def _with_automated(headers: dict[str, Any], automated: bool) -> dict[str, Any]:
    if not automated:
        return headers
    given = {name.lower() for name in headers}
    return {**{k: v for k, v in AUTOMATED_HEADERS.items() if k.lower() not in given}, **headers}


def request_for(
    channel: MailChannel,
    *,
    sender: str | None = None,
    to: str | Iterable[str] | None = None,
    cc: str | Iterable[str] | None = None,
    bcc: str | Iterable[str] | None = None,
    subject: str = "",
    text: str | None = None,
    html: str | None = None,
    attachments: tuple[Attachment, ...] = (),
    headers: dict[str, Any] | None = None,
    id_seed: str | None = None,
    automated: bool = False,
) -> MailRequest:
    """The request a caller (operator, notifier, email backend) asks this channel to send.

    The sender is ``sender``, else the connection's ``from_email``; ``to``/``cc``/``bcc`` may each be one
    address, a comma-separated string or a list. ``automated=True`` (alerts, digests, Deadline Alerts, HITL
    requests: mail no human wrote) adds :data:`AUTOMATED_HEADERS`, RFC 3834's ``Auto-Submitted:
    auto-generated`` and Exchange's ``X-Auto-Response-Suppress: All``, so out-of-office and other automatic
    replies never loop back into an alert inbox; a header of the same name in ``headers`` wins.
    """
    from airflow_secure_mail.mail.compose import MailRequest

    return MailRequest(
        sender=channel.sender(sender),
        to=to,  # type: ignore[arg-type]  # MailRequest normalizes each list when built
        cc=cc,  # type: ignore[arg-type]
        bcc=bcc,  # type: ignore[arg-type]
        subject=subject,
        text=text,
        html=html,
        attachments=attachments,
        headers=tuple(_with_automated(headers or {}, automated).items()),
        id_seed=id_seed,
    )


__all__ = ["AUTOMATED_HEADERS", "MailChannel", "request_for"]
