"""SecureEmailNotifier: task and DAG callbacks (failure, retry, success) through the secure pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from airflow_secure_mail.alerts.fields import alert_fields  # its home since issue 20; re-exported here for one release

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.digest import AlertDigest
    from airflow_secure_mail.mail.screen import MailPolicy
    from airflow_secure_mail.pipeline.result import MailResult

_TEMPLATES = Path(__file__).with_name("templates")


def render_alert(context: Mapping[str, Any]) -> tuple[str, str, str]:
    """Default (subject, text, html) for a callback context; autoescaped HTML."""
    import jinja2

    fields = alert_fields(context)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html.j2", "html"], default_for_string=False),
        keep_trailing_newline=True,
    )
    subject = f"[Airflow] {fields['status']} {fields['dag_id']}.{fields['task_id']} — {fields['run_id']}"
    text = env.get_template("alert.txt.j2").render(**fields)
    html = env.get_template("alert.html.j2").render(**fields)
    return subject, text, html


class SecureEmailNotifier(BaseNotifier):
    """Mail for ``on_failure_callback`` / ``on_retry_callback`` / ``on_success_callback`` (task or DAG).

    Without ``subject``/``html_content`` it sends the default alert: a scannable subject and a text + HTML
    body with DAG, task, run, logical date, try, the redacted first line of the error, host and log link.
    """

    template_fields = ("to", "cc", "bcc", "subject", "html_content", "text_content")

    def __init__(
        self,
        *,
        to: str | Sequence[str],
        cc: str | Sequence[str] | None = None,
        bcc: str | Sequence[str] | None = None,
        subject: str | None = None,
        html_content: str | None = None,
        text_content: str | None = None,
        sender: str | None = None,
        conn_id: str = "secure_smtp_default",
        policy: MailPolicy | None = None,
        protection: Any = None,
        archive: Any = None,
        digest: AlertDigest | None = None,
    ) -> None:
        super().__init__()
        self.to = to
        self.cc = cc
        self.bcc = bcc
        self.subject = subject
        self.html_content = html_content
        self.text_content = text_content
        self.sender = sender
        self.conn_id = conn_id
        self.policy = policy
        self.protection = protection
        self.archive = archive
        self.digest = digest

    def get_template_env(self, dag: Any = None) -> Any:
        """Sandboxed Jinja; also when ``dag`` is a SerializedDAG (DAG callbacks under ``dags test``,
        apache/airflow#64649), which has no template environment of its own."""
        if dag is not None and not hasattr(dag, "get_template_env"):
            dag = None
        return super().get_template_env(dag=dag)

    def _content(self, context: Mapping[str, Any]) -> tuple[str, str | None, str | None, str | None]:
        """Subject, text, HTML (the default alert fills what was not given) and the retry-stable id seed."""
        from airflow_secure_mail.pipeline.send import identity_seed

        subject, text, html = self.subject, self.text_content, self.html_content
        if subject is None or (html is None and text is None):
            default_subject, default_text, default_html = render_alert(context)
            subject = subject or default_subject
            if html is None and text is None:
                text, html = default_text, default_html
        seed = identity_seed(context)
        ti = context.get("ti")
        if seed is not None and ti is not None:
            seed = f"{seed}|notify|{getattr(ti, 'try_number', '')}"
        return subject, text, html, seed

    async def asend(
        self, subject: str, text: str | None, html: str | None, *, seed: str | None, origin: Mapping[str, Any]
    ) -> MailResult:
        """Send through the pipeline to this notifier's recipients with its policy, protection and archive."""
        from airflow_secure_mail.pipeline.channel import MailChannel, request_for
        from airflow_secure_mail.pipeline.send import asend_mail

        channel = MailChannel.for_conn(self.conn_id)
        request = request_for(
            channel, sender=self.sender, to=self.to, cc=self.cc, bcc=self.bcc, subject=subject, text=text, html=html,
            id_seed=seed,
        )  # fmt: skip
        count = len(request.to) + len(request.cc) + len(request.bcc)
        log.info("SecureEmailNotifier: sending %r to %d recipient(s)", request.subject, count)
        return await asend_mail(
            request,
            channel=channel,
            policy=self.policy,
            protection=self.protection,
            archive=self.archive,
            origin=origin,
        )

    async def async_notify(self, context: Any) -> None:
        from airflow_secure_mail.pipeline.send import origin_of

        if self.digest is not None:  # fold into digests (airflow_secure_mail.alerts)
            from airflow_secure_mail.alerts.callback import anotify

            await anotify(self.digest, self, context)
            return
        subject, text, html, seed = self._content(context)
        await self.asend(subject, text, html, seed=seed, origin=origin_of(context))

    def notify(self, context: Any) -> None:
        from airflow_secure_mail._sync import run_sync

        run_sync(self.async_notify(context))
