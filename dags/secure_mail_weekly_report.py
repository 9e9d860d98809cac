"""A weekly report: one task writes a CSV to object storage, the next mails it as an attachment.

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_REPORT_BASE   where the CSV is written (default file://$AIRFLOW_HOME/secure-mail/reports);
                              shared storage (s3://...) when workers run on more than one machine
    SECURE_MAIL_REPORT_CONN   Airflow connection for that location, e.g. an aws one for s3:// (default none)
    SECURE_MAIL_REPORT_TO     recipient (default finance@example.com)
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, ObjectStoragePath, task

from airflow_secure_mail import MailPolicy, SecureEmailOperator

LOCAL = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "secure-mail"
REPORT_BASE = os.environ.get("SECURE_MAIL_REPORT_BASE", f"file://{LOCAL}/reports")
STORAGE_CONN = os.environ.get("SECURE_MAIL_REPORT_CONN", "") or None
REPORT_TO = os.environ.get("SECURE_MAIL_REPORT_TO", "finance@example.com")
# The run's date, also for runs triggered without a logical date (CLI, REST, UI: Airflow 3).
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="secure_mail_weekly_report",
    start_date=datetime(2026, 1, 1),
    schedule=None,  # a real deployment: "@weekly" (no schedule here, so unpausing the example sends no mail)
    catchup=False,
    tags=["example", "secure-mail"],
) as dag:

    @task
    def build_report(dag_run: Any = None) -> str:
        day = (dag_run.logical_date or dag_run.run_after).strftime("%Y-%m-%d")
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["region", "orders", "revenue_eur"])
        writer.writerows([["north", 1204, "98211.40"], ["south", 877, "70315.00"], ["west", 1530, "121004.95"]])
        base = ObjectStoragePath(REPORT_BASE, conn_id=STORAGE_CONN) if STORAGE_CONN else ObjectStoragePath(REPORT_BASE)
        target = base / f"weekly-{day}.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buffer.getvalue().encode())
        return str(target)

    report = build_report()
    SecureEmailOperator(
        task_id="mail_report",
        to=REPORT_TO,
        subject=f"Weekly sales report {DAY}",
        html_content=f"<p>Attached: weekly sales for the week ending <b>{DAY}</b>.</p>",
        attachments=["{{ ti.xcom_pull(task_ids='build_report') }}"],
        attachments_conn_id=STORAGE_CONN,
        policy=MailPolicy(allowed_attachment_types=("text/csv",), max_attachment_bytes=5_000_000),
    ).set_upstream(report)
