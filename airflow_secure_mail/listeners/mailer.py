"""The listener's one way to send: the pipeline (screened, verified TLS, Vault), marked as automated mail.

It has the ``asend(subject, text, html, *, seed, origin)`` shape a digest flush calls, so the catch-all's
digests and the import-error mails leave through the same door. Every mail carries RFC 3834's
``Auto-Submitted: auto-generated`` and Microsoft's ``X-Auto-Response-Suppress: All``: out-of-office replies
never loop back into an alert inbox.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_secure_mail.listeners.config import ListenerSettings
    from airflow_secure_mail.pipeline.result import MailResult

log = logging.getLogger(__name__)


class ListenerMailer:
    """Send to the listener's recipients through its connection."""

    def __init__(self, settings: ListenerSettings) -> None:
        self.to = list(settings.to)
        self.conn_id = settings.conn_id

    async def asend(
        self, subject: str, text: str | None, html: str | None, *, seed: str | None, origin: Mapping[str, Any]
    ) -> MailResult:
        from airflow_secure_mail.pipeline.channel import MailChannel, request_for
        from airflow_secure_mail.pipeline.send import asend_mail

        channel = MailChannel.for_conn(self.conn_id)
        request = request_for(channel, to=self.to, subject=subject, text=text, html=html, automated=True, id_seed=seed)
        log.info("secure-mail listener: sending %r to %d recipient(s)", subject, len(self.to))
        return await asend_mail(request, channel=channel, origin=origin, priority="alert")

    def send(self, subject: str, text: str, *, seed: str, origin: Mapping[str, Any]) -> MailResult:
        from airflow_secure_mail._sync import run_sync

        return run_sync(self.asend(subject, text, None, seed=seed, origin=origin))
