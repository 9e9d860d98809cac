"""SecureEmailOperator: the secure counterpart of ``EmailOperator``; thin, all work in the pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.mail.screen import MailPolicy


class _PathTemplate:
    """An attachment path or URI as a template *string*: Airflow renders it and never loads it as a template file.

    ``template_ext`` makes Airflow read any templated string ending in ``.txt``/``.html``/``.j2`` as a
    template file; a path is data, so attachment strings reach Airflow as this object, which it resolves.
    """

    def __init__(self, template: str) -> None:
        self.template = template

    def resolve(self, context: Any) -> str:
        if "{{" not in self.template and "{%" not in self.template:
            return self.template
        from airflow.sdk.definitions.context import render_template_to_string

        env = context["task"].get_template_env()
        return render_template_to_string(env.from_string(self.template), context)

    def __str__(self) -> str:
        return self.template

    def __repr__(self) -> str:
        return repr(self.template)


def _as_path_templates(value: Any) -> Any:
    if isinstance(value, str):
        return _PathTemplate(value)
    if isinstance(value, dict):
        return {k: _as_path_templates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_path_templates(v) for v in value]
    return value  # an XComArg or an Attachment: Airflow resolves it as usual


def _plain(value: Any) -> Any:
    """Attachment specs with any unrendered template (execute called without rendering) back as strings."""
    if isinstance(value, _PathTemplate):
        return value.template
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class SecureEmailOperator(BaseOperator):
    """Send an email over verified TLS with credentials from Vault; XCom is a small dict, never the body.

    ``attachments`` are local paths or object-storage URIs (``s3://``, ``file://``), templated as strings:
    a path ending in ``.txt`` or ``.html`` is attached, never read as a template file.
    """

    template_fields: Sequence[str] = (
        "to", "cc", "bcc", "subject", "html_content", "text_content", "attachments", "headers", "sender",
    )  # fmt: skip
    template_ext: Sequence[str] = (".html", ".txt", ".j2")
    template_fields_renderers = {"html_content": "html", "text_content": "txt"}
    ui_color = "#c7e9c0"

    def __init__(
        self,
        *,
        to: str | Sequence[str],
        subject: str,
        cc: str | Sequence[str] | None = None,
        bcc: str | Sequence[str] | None = None,
        html_content: str | None = None,
        text_content: str | None = None,
        attachments: str | Sequence[Any] | None = None,
        headers: Mapping[str, str] | None = None,
        sender: str | None = None,
        conn_id: str = "secure_smtp_default",
        policy: MailPolicy | None = None,
        protection: Protection | None = None,
        archive: Any = None,
        one_message_per_recipient: bool = False,
        allow_partial: bool = False,
        attachments_conn_id: str | None = None,
        priority: str = "bulk",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if priority not in ("alert", "bulk"):  # checked here, not by importing the budget: DAG parsing stays cheap
            from airflow_secure_mail.errors import ConfigurationError

            raise ConfigurationError(f"priority must be 'alert' or 'bulk', not {priority!r}.")
        self.priority = priority  # "alert": the relay budget's reserved share, never behind bulk
        self.to = to
        self.cc = cc
        self.bcc = bcc
        self.subject = subject
        self.html_content = html_content
        self.text_content = text_content
        self.attachments = _as_path_templates(
            [attachments] if isinstance(attachments, str | dict) else attachments or []
        )
        self.headers = dict(headers or {})
        self.sender = sender
        self.conn_id = conn_id
        self.policy = policy
        self.protection = protection
        self.archive = archive
        self.one_message_per_recipient = one_message_per_recipient
        self.allow_partial = allow_partial
        self.attachments_conn_id = attachments_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_secure_mail.pipeline.attachments import load_attachments
        from airflow_secure_mail.pipeline.channel import MailChannel, request_for
        from airflow_secure_mail.pipeline.send import identity_seed, origin_of, send_mail

        channel = MailChannel.for_conn(self.conn_id)
        request = request_for(
            channel,
            sender=self.sender,
            to=self.to,
            cc=self.cc,
            bcc=self.bcc,
            subject=self.subject,
            text=self.text_content,
            html=self.html_content,
            attachments=load_attachments(_plain(self.attachments), conn_id=self.attachments_conn_id),
            headers=self.headers,
            id_seed=identity_seed(context),
        )
        result = send_mail(
            request,
            channel=channel,
            policy=self.policy,
            protection=self.protection,
            archive=self.archive,
            one_message_per_recipient=self.one_message_per_recipient,
            allow_partial=self.allow_partial,
            origin=origin_of(context),
            priority=self.priority,
        )
        return result.to_xcom()  # the pipeline logged what was sent, already sent or failed
