"""Deployment check: one copy per recipient; the server refuses one on the first try; Airflow retries."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_secure_mail import MailArchive, SecureEmailOperator

# The archive the example DAGs write, read the way they read it (dags/secure_mail_encrypted_report.py).
LOCAL = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "secure-mail"
ARCHIVE = MailArchive(
    os.environ.get("SECURE_MAIL_ARCHIVE", f"file://{LOCAL}/archive"),
    conn_id=os.environ.get("SECURE_MAIL_ARCHIVE_CONN", "") or None,
    transit_key=os.environ.get("SECURE_MAIL_ARCHIVE_KEY", "mail-archive") or None,
)

with DAG(dag_id="e2e_partial_refusal", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:
    SecureEmailOperator(
        task_id="send_each",
        to=["keep1@example.com", "busy@example.com", "keep2@example.com"],
        subject="Per-recipient notice {{ run_id }}",
        text_content="Your copy.\n",
        one_message_per_recipient=True,
        archive=ARCHIVE,
        retries=1,
        retry_delay=timedelta(seconds=int(os.environ.get("E2E_RETRY_DELAY", "20"))),
    )
