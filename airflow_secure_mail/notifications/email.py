"""SecureEmailNotifier: task and DAG callbacks (failure, retry, success) through the secure pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from airflow_secure_mail.alerts.fields import (  # alert_fields: its home since issue 20; re-exported for one release
    DAG_RUN,
    alert_fields,
    callback_scope,
    run_fields,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.digest import AlertDigest
    from airflow_secure_mail.mail.screen import MailPolicy
    from airflow_secure_mail.pipeline.result import MailResult

_TEMPLATES = Path(__file__).with_name("templates")


def _env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html.j2", "html"], default_for_string=False),
        keep_trailing_newline=True,
    )


def render_alert(context: Mapping[str, Any]) -> tuple[str, str, str]:
    """Default (subject, text, html) for a callback context; autoescaped HTML.

    A task's callback gets the task alert; a DAG run's (``on_failure_callback=`` on the DAG) its own mail: the
    run, its state, the reason in words, the task the context names and a link to the run. Subjects are ASCII
    (`` - `` between the parts), so no encoded word can put a space into them where the header is folded.
    """
    env = _env()
    if callback_scope(context) == DAG_RUN:
        fields = run_fields(context)
        subject = f"[Airflow] {fields['status']} {fields['dag_id']} - {fields['run_id']}"
        name = "run_alert"
    else:
        fields = alert_fields(context)
        subject = f"[Airflow] {fields['status']} {fields['dag_id']}.{fields['task_id']} - {fields['run_id']}"
        name = "alert"
    return (
        subject,
        env.get_template(f"{name}.txt.j2").render(**fields),
        env.get_template(f"{name}.html.j2").render(**fields),
    )


@dataclass(frozen=True)
class AlertMail:
    """One callback's mail: what it says, the seed of its retry-stable Message-ID, its archive origin, its name."""

    subject: str
    text: str | None
    html: str | None
    seed: str | None
    origin: dict[str, Any]
    what: str


def alert_mail(context: Mapping[str, Any], *, subject: str | None, text: str | None, html: str | None) -> AlertMail:
    """The notifier's whole reading of a callback context: the default alert fills what was not given.

    A DAG run's mail has its own seed and origin (the run, no task), so it never shares the Message-ID of the
    task alert the same failure sent, and the archive files it under the run.
    """
    from airflow_secure_mail.pipeline.send import identity_seed, origin_of

    if subject is None or (html is None and text is None):
        default_subject, default_text, default_html = render_alert(context)
        subject = subject or default_subject
        if html is None and text is None:
            text, html = default_text, default_html
    if callback_scope(context) == DAG_RUN:
        fields = run_fields(context)
        seed = f"{fields['dag_id']}|(run)|{fields['run_id']}|-1|notify-run|{fields['reason']}"
        origin: dict[str, Any] = {"dag_id": fields["dag_id"], "run_id": fields["run_id"]}
        return AlertMail(subject, text, html, seed, origin, f"DAG run {fields['dag_id']} {fields['run_id']}")
    task_seed = identity_seed(context)
    ti = context.get("ti") or context.get("task_instance")
    if task_seed is not None and ti is not None:
        task_seed = f"{task_seed}|notify|{getattr(ti, 'try_number', '')}"
    fields = alert_fields(context)
    return AlertMail(subject, text, html, task_seed, origin_of(context), f"{fields['dag_id']}.{fields['task_id']}")


class SecureEmailNotifier(BaseNotifier):
    """Mail for ``on_failure_callback`` / ``on_retry_callback`` / ``on_success_callback`` (task or DAG).

    Without ``subject``/``html_content`` it sends the default alert: a scannable subject and a text + HTML
    body with DAG, task, run, logical date, try, the redacted first line of the error, host and log link.
    On the DAG (``DAG(on_failure_callback=...)``) it sends a DAG-run mail instead: "[Airflow] DAG run FAILED
    <dag> - <run>" with the run, its state, the reason in words, the task Airflow named and a link to the run;
    so the same notifier on the DAG and on its tasks sends one task alert and one distinct run mail.
    Its log says where each alert went ("alert mail sent to N recipient(s)", or which digest it was folded
    into and when that digest goes out).
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
        mail = alert_mail(context, subject=self.subject, text=self.text_content, html=self.html_content)
        return mail.subject, mail.text, mail.html, mail.seed

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
        if self.digest is not None:  # fold into digests (airflow_secure_mail.alerts)
            from airflow_secure_mail.alerts.callback import anotify

            await anotify(self.digest, self, context)
            return
        mail = alert_mail(context, subject=self.subject, text=self.text_content, html=self.html_content)
        result = await self.asend(mail.subject, mail.text, mail.html, seed=mail.seed, origin=mail.origin)
        accepted = len({a for r in result.receipts for a in r.accepted})
        if result.receipts:
            ids = ", ".join(str(r.message_id) for r in result.receipts)
            log.info("alert mail sent to %d recipient(s) for %s (%s)", accepted, mail.what, ids)
        elif result.already_sent:
            log.info("alert mail for %s was already sent (the archive has it): not sent again", mail.what)

    def notify(self, context: Any) -> None:
        from airflow_secure_mail._sync import run_sync

        run_sync(self.async_notify(context))
