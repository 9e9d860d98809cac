"""SecureSmtpHook: the Airflow face of one ``securesmtp`` connection.

It owns the connection's :class:`~airflow_secure_mail.connection.client.SmtpClient` (verified sessions,
Vault credentials, delivery) and its ``send`` facades call down into the pipeline (screen, archive, deliver,
record). Nothing below imports the hook.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_secure_mail._sync import run_sync
from airflow_secure_mail.connection.client import SmtpClient
from airflow_secure_mail.connection.fields import CONN_TYPE
from airflow_secure_mail.connection.settings import SmtpSettings
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.transport.session import SendReceipt, SessionInfo
from airflow_secure_mail.transport.tls import TLSPolicy

if TYPE_CHECKING:
    from airflow_secure_mail.mail.screen import MailPolicy
    from airflow_secure_mail.pipeline.channel import MailChannel

Message = EmailMessage | bytes | Outgoing
_TESTED = "this connection"
"""How the connection test names the connection it tests (the id it runs under may be Airflow's random one)."""


class SecureSmtpHook(BaseHook):
    """Sends mail over verified TLS with credentials read from Vault at send time.

    :meth:`send` and :meth:`send_many` (async: :meth:`asend`, :meth:`asend_many`) run the pipeline (screen,
    archive, deliver, record) for messages built elsewhere, so nothing reaches the server unscreened; the
    connection's :class:`SmtpClient` (:attr:`client`) does the delivering.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "secure_smtp_default"
    conn_type = CONN_TYPE
    hook_name = "Secure SMTP"

    def __init__(self, conn_id: str = default_conn_name, *, vault: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self._vault = vault
        self._settings: SmtpSettings | None = None
        self._client: SmtpClient | None = None

    @property
    def settings(self) -> SmtpSettings:
        if self._settings is None:
            self._settings = SmtpSettings.from_connection(self.get_connection(self.conn_id))
        return self._settings

    @property
    def client(self) -> SmtpClient:
        """The connection's client: what the pipeline delivers through."""
        if self._client is None:
            self._client = SmtpClient(self.conn_id, self.settings, vault=self._vault)
        return self._client

    @property
    def vault(self) -> Any:
        """The process's one Vault access object for this connection's Vault (credentials, keys, certificates)."""
        return self.client.vault

    def tls_policy(self) -> TLSPolicy:
        """The connection's TLSPolicy, with ``vault:`` certificate references resolved."""
        return self.client.tls_policy()

    # -- facades: the whole pipeline for messages built elsewhere ------------------------------------
    async def asend(
        self,
        message: Message,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        allow_partial: bool = False,
        policy: MailPolicy | None = None,
        archive: Any = None,
    ) -> SendReceipt:
        """Screen, archive (when given) and send one message; EmailMessage, wire bytes or an Outgoing."""
        from airflow_secure_mail.pipeline.send import recording_refusals

        channel, mail_policy = _channel_and_policy(self, policy)
        who, by = tuple(recipients or ()), sender or channel.from_email
        async with recording_refusals(channel, mail_policy, archive, recipients=who, sender=by):  # parsing refuses too
            item = _as_outgoing(message, sender, recipients, channel.from_email, mail_policy.allow_special_use_domains)
        return (await _send(channel, mail_policy, [item], 1, allow_partial, archive))[0]

    def send(
        self,
        message: Message,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        allow_partial: bool = False,
        policy: MailPolicy | None = None,
        archive: Any = None,
    ) -> SendReceipt:
        """Sync facade over :meth:`asend`."""
        options = {"allow_partial": allow_partial, "policy": policy, "archive": archive}
        return run_sync(self.asend(message, sender=sender, recipients=recipients, **options))

    async def asend_many(
        self,
        messages: Iterable[Message | tuple[str, Sequence[str], bytes]],
        *,
        concurrency: int = 4,
        allow_partial: bool = False,
        policy: MailPolicy | None = None,
        archive: Any = None,
    ) -> list[SendReceipt]:
        """Screen every message first, then send them over up to ``concurrency`` sessions; raises if any failed."""
        from airflow_secure_mail.pipeline.send import recording_refusals

        channel, mail_policy = _channel_and_policy(self, policy)
        special = mail_policy.allow_special_use_domains
        async with recording_refusals(channel, mail_policy, archive, sender=channel.from_email):
            items = [_as_outgoing(m, None, None, channel.from_email, special) for m in messages]
        return await _send(channel, mail_policy, items, concurrency, allow_partial, archive)

    def send_many(
        self,
        messages: Iterable[Message | tuple[str, Sequence[str], bytes]],
        *,
        concurrency: int = 4,
        allow_partial: bool = False,
        policy: MailPolicy | None = None,
        archive: Any = None,
    ) -> list[SendReceipt]:
        """Sync facade over :meth:`asend_many`."""
        messages = _warn_if_tuples(list(messages))
        coro = self.asend_many(
            messages, concurrency=concurrency, allow_partial=allow_partial, policy=policy, archive=archive
        )
        return run_sync(coro)

    # -- connection test -------------------------------------------------------------------------
    async def atest_connection(self) -> tuple[bool, str]:
        """Connect, negotiate TLS and authenticate; send nothing. Returns (ok, one-line detail).

        The detail says "this connection", never its id: Airflow's Test button (``POST /connections/test``)
        runs this on a copy of the connection stored under a random id, which would mean nothing to the user.
        """
        from airflow_secure_mail.errors import SecureMailError

        try:
            settings = SmtpSettings.from_connection(self.get_connection(self.conn_id), name=_TESTED)
        except SecureMailError as exc:
            return False, str(exc)
        return await SmtpClient(self.conn_id, settings, vault=self._vault).check()

    def test_connection(self) -> tuple[bool, str]:
        return run_sync(self.atest_connection())

    async def aconnection_info(self) -> SessionInfo:
        return await self.client.info()


def _channel_and_policy(hook: SecureSmtpHook, policy: MailPolicy | None) -> tuple[MailChannel, MailPolicy]:
    """The hook's connection as a channel, and the send's policy (``policy``, else the connection's default).

    Known before a message built elsewhere is parsed: its envelope depends on it (special-use domains).
    """
    from airflow_secure_mail.pipeline.channel import MailChannel

    channel = MailChannel.of(hook.client)
    return channel, channel.policy(policy)


async def _send(
    channel: MailChannel, policy: MailPolicy, items: list[Outgoing], concurrency: int, allow_partial: bool, archive: Any
) -> list[SendReceipt]:
    """The pipeline's send of messages built elsewhere: screened, archived when asked, one receipt each."""
    from airflow_secure_mail.pipeline.send import asend_outgoing

    result = await asend_outgoing(
        items, channel=channel, policy=policy, archive=archive, allow_partial=allow_partial, concurrency=concurrency
    )
    return result.receipts


def _as_outgoing(
    message: Any, sender: str | None, recipients: Sequence[str] | None, from_email: str | None, special: bool
) -> Outgoing:
    """One message as an Outgoing; an Outgoing given as is is checked by the pipeline (prepare_outgoing)."""
    from airflow_secure_mail.mail.external import outgoing_from

    if isinstance(message, Outgoing):
        return message
    if isinstance(message, tuple):  # deprecated; send_many warns
        sender, recipients, message = message
    return outgoing_from(
        message, sender=sender, recipients=recipients, default_sender=from_email, allow_special_use_domains=special
    )


def _warn_if_tuples(messages: list[Any]) -> list[Any]:
    """Warn in the caller's frame (``send_many``'s): the conversion itself runs later, inside the event loop."""
    if any(isinstance(m, tuple) for m in messages):
        warnings.warn(
            "send_many((sender, recipients, bytes)) is deprecated: pass Outgoing(sender, recipients, data).",
            DeprecationWarning,
            stacklevel=3,
        )
    return messages
