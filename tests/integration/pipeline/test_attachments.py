"""Attachments are data: a path ending in a template extension is attached, never loaded as a template."""

from __future__ import annotations

import runpy
from email import message_from_bytes, policy

ATTACHING_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow_secure_mail import MailPolicy, SecureEmailOperator

BASE = {base!r}


class RenderedAttachments(SecureEmailOperator):
    \"\"\"Returns what Airflow rendered into ``attachments`` instead of sending (no screening involved).\"\"\"

    def execute(self, context):
        return [str(a) if not isinstance(a, dict) else {{k: str(v) for k, v in a.items()}} for a in self.attachments]


with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    SecureEmailOperator(
        task_id="send",
        to="reader@example.com",
        subject="files",
        text_content="see attached",
        attachments=[BASE + "/report.txt", BASE + "/{{{{ params.day }}}}.csv"],
        params={{"day": "2026-02-03"}},
    )
    RenderedAttachments(
        task_id="rendered",
        to="reader@example.com",
        subject="files",
        text_content="see attached",
        attachments=[BASE + "/summary.html", {{"path": BASE + "/notes.j2", "filename": "{{{{ params.day }}}}.txt"}}],
        params={{"day": "2026-02-03"}},
    )
    SecureEmailOperator.partial(
        task_id="mapped", subject="mapped", text_content="one each", attachments=[BASE + "/report.txt"]
    ).expand(to=["ana@example.com", "bo@example.com"])
"""


def _write_dag(tmp_path, dag_id: str):  # type: ignore[no-untyped-def]
    from tests.conftest import DAGS

    path = DAGS / f"{dag_id}.py"
    path.write_text(ATTACHING_DAG.format(base=str(tmp_path), dag_id=dag_id))
    return runpy.run_path(str(path))["dag"]


def test_txt_attachment_by_path_and_templated_path_are_sent_also_from_mapped_tasks(mail_env, airflow_db, tmp_path):
    (tmp_path / "report.txt").write_text("quarterly numbers: 42\n")
    (tmp_path / "2026-02-03.csv").write_text("region,orders\nnorth,1204\n")
    (tmp_path / "summary.html").write_text("<p>summary</p>\n")
    (tmp_path / "notes.j2").write_text("notes {{ not a template }}\n")
    run = _write_dag(tmp_path, "attach_by_path").test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"send": "success", "rendered": "success", "mapped": "success"}
    [received] = [m for m in mail_env.smtp.messages if m.rcpt_tos == ["reader@example.com"]]
    mapped = [m for m in mail_env.smtp.messages if m.rcpt_tos != ["reader@example.com"]]
    assert sorted(m.rcpt_tos[0] for m in mapped) == ["ana@example.com", "bo@example.com"]
    for m in mapped:
        [part] = message_from_bytes(m.data, policy=policy.default).iter_attachments()
        assert (part.get_filename(), part.get_content()) == ("report.txt", "quarterly numbers: 42\n")
    parts = {
        p.get_filename(): p.get_content()
        for p in message_from_bytes(received.data, policy=policy.default).iter_attachments()
    }
    assert parts == {"report.txt": "quarterly numbers: 42\n", "2026-02-03.csv": "region,orders\nnorth,1204\n"}
    rendered = run.get_task_instance("rendered").xcom_pull(task_ids="rendered")
    assert rendered == [f"{tmp_path}/summary.html", {"path": f"{tmp_path}/notes.j2", "filename": "2026-02-03.txt"}]
