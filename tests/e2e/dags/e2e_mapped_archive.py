"""Deployment check: mapped tasks, one message each, all archived in one S3 archive sealed with Vault Transit."""

from __future__ import annotations

import os
from datetime import datetime
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

with DAG(dag_id="e2e_mapped_archive", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:
    SecureEmailOperator.partial(
        task_id="send_mapped",
        subject="Mapped report {{ run_id }} part {{ ti.map_index }}",
        text_content="One mapped copy, archived and sealed.\n",
        archive=ARCHIVE,
    ).expand(to=[f"mapped{n}@example.com" for n in range(4)])
