"""MailRestoreOperator's task log: where each exported message was written, and how many."""

from __future__ import annotations

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.operators.backup import MailRestoreOperator
from tests.helpers import window
from tests.integration.archive.test_store import _send


def test_restore_export_logs_each_destination_and_the_count(mail_env, tmp_path, capsys):
    """The operator's task logger (structlog in Airflow 3) writes to the captured output, not to caplog."""
    archive = MailArchive(f"file://{tmp_path}/archive")
    ids = [_send(archive, n).receipts[0].message_id for n in range(2)]
    start, end = window()
    destination = f"file://{tmp_path}/restored"
    operator = MailRestoreOperator(
        task_id="restore", archive=archive, destination=destination, start=start.isoformat(), end=end.isoformat()
    )
    capsys.readouterr()
    result = operator.execute({})  # type: ignore[arg-type]
    out = capsys.readouterr().out
    by_id = {item.record.meta.message_id: f"{item.record.key}.eml" for item in _exported(archive)}
    assert sorted(result["written"]) == sorted(by_id.values())
    for message_id in ids:
        assert (tmp_path / "restored" / by_id[message_id]).is_file()
        assert f"wrote {destination}/{by_id[message_id]}: {message_id}" in out
    assert f"restore: 2 message(s) exported to {destination}" in out


def _exported(archive: MailArchive) -> list:
    from airflow_secure_mail.archive.restore import RestoreSelection, select

    return select(archive, RestoreSelection(*window()))
