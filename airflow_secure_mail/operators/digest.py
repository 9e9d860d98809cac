"""AlertDigestFlushOperator: send every alert digest whose slot is due, even when no new event arrives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.digest import AlertDigest


class AlertDigestFlushOperator(BaseOperator):
    """Run every few minutes (see dags/secure_mail_alert_digest.py) so group_wait, group_interval and
    repeat_interval are honoured without waiting for the next alert; then prunes state past ``retention``.
    Its log says how many digests (and events) it sent, how many events each silence holds and how many wait
    for which digest until when. XCom: the Message-IDs it sent and how many state objects it pruned."""

    ui_color = "#e8f0fe"

    def __init__(self, *, digest: AlertDigest, notifier: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.digest = digest
        self.notifier = notifier

    def execute(self, context: Any) -> dict[str, Any]:
        self.notifier.render_template_fields(context)
        sent = self.digest.flush(self.notifier)
        pruned = self.digest.prune()
        self.log.info("digest state objects past retention removed: %d", pruned)
        return {"message_ids": sent, "pruned": pruned}
