"""The weekly security report: the last 7 days of the mail archive's metadata as one HTML page, mailed.

One task reads the archive's record metadata (never a body, so no Transit call), checks the relay's
certificate, the S/MIME signer's and the SMTP credential's age for ``secure_smtp_default``, and writes
``security-<date>.html``; the next mails a short text summary with the page attached. ``text/html`` is not
among ``MailPolicy``'s default attachment types (HTML attachments are a phishing vector): this DAG allows it
for its own page, which the HTML screen still checks (no script, no form, no external fetch).
The command line builds the same page: ``airflow-secure-mail report --archive URL --since 7d --out FILE``.

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_ARCHIVE             archive to report on (default file://$AIRFLOW_HOME/secure-mail/archive)
    SECURE_MAIL_ARCHIVE_CONN        Airflow connection for that location, e.g. an aws one for s3:// (default none)
    SECURE_MAIL_ARCHIVE_KEY         its Vault Transit key (default mail-archive; "" = not sealed); the report
                                    reads metadata only and never opens a sealed message
    SECURE_MAIL_REPORT_BASE         where the page is written (default file://$AIRFLOW_HOME/secure-mail/reports)
    SECURE_MAIL_REPORT_CONN         Airflow connection for that location (default none)
    SECURE_MAIL_SECURITY_REPORT_TO  recipient (default security@example.com)
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, ObjectStoragePath, task

from airflow_secure_mail import MailArchive, MailPolicy, SecureEmailOperator

LOCAL = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "secure-mail"
ARCHIVE = MailArchive(
    os.environ.get("SECURE_MAIL_ARCHIVE", f"file://{LOCAL}/archive"),
    conn_id=os.environ.get("SECURE_MAIL_ARCHIVE_CONN", "") or None,
    transit_key=os.environ.get("SECURE_MAIL_ARCHIVE_KEY", "mail-archive") or None,
)
REPORT_BASE = os.environ.get("SECURE_MAIL_REPORT_BASE", f"file://{LOCAL}/reports")
STORAGE_CONN = os.environ.get("SECURE_MAIL_REPORT_CONN", "") or None
REPORT_TO = os.environ.get("SECURE_MAIL_SECURITY_REPORT_TO", "security@example.com")
SMTP_CONN = "secure_smtp_default"
BUILT = "ti.xcom_pull(task_ids='build_security_report')"

with DAG(
    dag_id="secure_mail_security_report",
    start_date=datetime(2026, 1, 1),
    schedule=None,  # a real deployment: "@weekly" (no schedule here, so unpausing the example sends no mail)
    catchup=False,
    tags=["example", "secure-mail"],
) as dag:

    @task
    def build_security_report(dag_run: Any = None) -> dict[str, Any]:
        from airflow_secure_mail.ops.report import build

        until = dag_run.logical_date or dag_run.run_after
        report = build(
            ARCHIVE, until - timedelta(days=7), until, conn_ids=[SMTP_CONN], signing_vault_path="mail-signing"
        )
        base = ObjectStoragePath(REPORT_BASE, conn_id=STORAGE_CONN) if STORAGE_CONN else ObjectStoragePath(REPORT_BASE)
        target = base / f"security-{until:%Y-%m-%d}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(report.html().encode())
        return {"path": str(target), "summary": report.summary(), "headline": report.headline()}

    built = build_security_report()
    SecureEmailOperator(
        task_id="mail_security_report",
        to=REPORT_TO,
        subject="Mail security report, week to {{ (dag_run.logical_date or dag_run.run_after) | ds }}",
        text_content="{{ " + BUILT + "['summary'] }}\nThe page is attached: open it in a browser.\n",
        attachments=["{{ " + BUILT + "['path'] }}"],
        attachments_conn_id=STORAGE_CONN,
        conn_id=SMTP_CONN,
        policy=MailPolicy(allowed_attachment_types=("text/html",), max_attachment_bytes=2_000_000),
    ).set_upstream(built)
