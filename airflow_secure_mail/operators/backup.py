"""MailBackupOperator and MailRestoreOperator: regular backup of the archive, and recovery from it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_secure_mail.archive.store import MailArchive


def _when(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        from airflow_secure_mail.errors import ConfigurationError

        raise ConfigurationError(
            f"{value!r} is not an ISO 8601 time: give e.g. 2026-11-01 or 2026-11-01T00:00Z."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _interval(start: Any, end: Any, context: Any) -> tuple[datetime, datetime]:
    from airflow_secure_mail.errors import ConfigurationError

    begin = _when(start) or _when(context.get("data_interval_start"))
    finish = _when(end) or _when(context.get("data_interval_end"))
    if begin is None or finish is None or begin >= finish:
        raise ConfigurationError(
            "no usable interval: schedule the DAG (data interval) or pass start= and end= (ISO timestamps)."
        )
    return begin, finish


def _backup_interval(
    start: Any, end: Any, context: Any, resume: Callable[[datetime], tuple[datetime, datetime]]
) -> tuple[datetime, datetime]:
    """``start``/``end`` if given, else a non-empty data interval, else from the last backup up to this run.

    Cron-triggered runs (``@daily`` in Airflow 3) and runs triggered without a logical date have no
    interval of their own: they back up everything since the newest bundle, up to the run's time.
    """
    begin, finish = _when(start), _when(end)
    if begin is None or finish is None:
        given_start, given_end = _when(context.get("data_interval_start")), _when(context.get("data_interval_end"))
        if begin is None and finish is None and given_start and given_end and given_start < given_end:
            return given_start, given_end
        dag_run = context.get("dag_run")
        finish = finish or given_end or _when(getattr(dag_run, "run_after", None)) or datetime.now(UTC)
        if begin is None:
            begin, finish = resume(finish)
    return _interval(begin, finish, {})


class MailBackupOperator(BaseOperator):
    """Verify every archived message of an interval and write one bundle + manifest; idempotent.

    The interval: ``start``/``end`` when given, else the run's data interval, else (cron-triggered runs,
    whose interval is empty, and runs without a logical date) everything since the newest bundle in
    ``backup_location`` up to the run's time. With ``retention_days``, archive records older than that
    are removed once a verified bundle holds them.
    """

    template_fields: Sequence[str] = ("start", "end", "backup_location")
    ui_color = "#d9d2e9"

    def __init__(
        self,
        *,
        archive: MailArchive | str,
        backup_location: str,
        backup_conn_id: str | None = None,
        encrypt: bool = True,
        retention_days: int | None = None,
        start: str | None = None,
        end: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.archive = archive
        self.backup_location = backup_location
        self.backup_conn_id = backup_conn_id
        self.encrypt = encrypt
        self.retention_days = retention_days
        self.start = start
        self.end = end

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_secure_mail.archive.bundle import backup, resume_interval
        from airflow_secure_mail.archive.store import ObjectStore, as_archive

        archive = as_archive(self.archive)
        assert archive is not None
        target = ObjectStore(self.backup_location, self.backup_conn_id)
        begin, finish = _backup_interval(
            self.start, self.end, context, lambda end: resume_interval(archive, target, end)
        )
        self.log.info("backing up records committed in [%s, %s)", begin.isoformat(), finish.isoformat())
        summary = backup(
            archive,
            target,
            begin,
            finish,
            encrypt=self.encrypt,
            retention_days=self.retention_days,
            log_fn=self.log.info,
        )
        return summary.to_dict()


def _check_restore_options(mode: str, destination: str | None, export_format: str) -> None:
    from airflow_secure_mail.errors import ConfigurationError

    if mode not in ("export", "resend"):
        raise ConfigurationError("MailRestoreOperator.mode must be 'export' or 'resend'.")
    if mode == "export" and not destination:
        raise ConfigurationError("MailRestoreOperator(mode='export') needs destination=.")
    if export_format not in ("eml", "mbox"):
        raise ConfigurationError("export_format must be 'eml' or 'mbox'.")


class MailRestoreOperator(BaseOperator):
    """Select archived messages, verify and decrypt them, then export (``.eml`` files or mbox) or resend.

    Resending prepends ``Resent-*`` header lines (RFC 5322 §3.6.6) to the archived bytes, which are
    otherwise sent verbatim: a parsed message is never re-serialized.
    """

    template_fields: Sequence[str] = (
        "start", "end", "message_id", "recipient", "destination", "resend_to", "dag_id_filter", "task_id_filter",
    )  # fmt: skip
    ui_color = "#d9d2e9"

    def __init__(
        self,
        *,
        archive: MailArchive | str,
        mode: str = "export",
        destination: str | None = None,
        destination_conn_id: str | None = None,
        export_format: str = "eml",
        bundle_location: str | None = None,
        bundle_conn_id: str | None = None,
        start: str | None = None,
        end: str | None = None,
        message_id: str | None = None,
        recipient: str | None = None,
        dag_id_filter: str | None = None,
        task_id_filter: str | None = None,
        resend_to: str | Sequence[str] | None = None,
        resent_from: str | None = None,
        conn_id: str = "secure_smtp_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_restore_options(mode, destination, export_format)
        self.archive = archive
        self.mode = mode
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.export_format = export_format
        self.bundle_location = bundle_location
        self.bundle_conn_id = bundle_conn_id
        self.start = start
        self.end = end
        self.message_id = message_id
        self.recipient = recipient
        self.dag_id_filter = dag_id_filter
        self.task_id_filter = task_id_filter
        self.resend_to = resend_to
        self.resent_from = resent_from
        self.conn_id = conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_secure_mail.archive.restore import RestoreSelection, export, select

        selection = RestoreSelection(
            start=_when(self.start) or _when(context.get("data_interval_start")),
            end=_when(self.end) or _when(context.get("data_interval_end")),
            message_id=self.message_id,
            recipient=self.recipient,
            dag_id=self.dag_id_filter,
            task_id=self.task_id_filter,
        )
        found = select(
            self.archive, selection, bundle_location=self.bundle_location, bundle_conn_id=self.bundle_conn_id
        )
        self.log.info("restore: %d message(s) selected and verified", len(found))
        if self.mode == "export":
            assert self.destination
            written = export(
                found, self.destination, conn_id=self.destination_conn_id, fmt=self.export_format, log_fn=self.log.info
            )
            self.log.info("restore: %d message(s) exported to %s", len(found), self.destination)
            return {"restored": len(found), "written": written}
        resent = self._resend(found, context)
        self.log.info("restore: %d message(s) resent: %s", len(found), ", ".join(filter(None, resent)) or "none")
        return {"restored": len(found), "resent_message_ids": resent}

    def _resend(self, found: list[Any], context: Context) -> list[str | None]:
        """Through the pipeline like any send: screened, archived as a resend, recorded; a retry sends nothing twice."""
        from airflow_secure_mail._sync import run_sync
        from airflow_secure_mail.pipeline.channel import MailChannel
        from airflow_secure_mail.pipeline.send import aresend, identity_seed, origin_of

        return run_sync(
            aresend(
                found, channel=MailChannel.for_conn(self.conn_id), archive=self.archive, resent_from=self.resent_from,
                resend_to=self.resend_to, seed=identity_seed(context), origin=origin_of(context),
            )
        )  # fmt: skip
