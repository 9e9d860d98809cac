"""Deployment check: an attachment given by a path ending in .txt is data, never a template file to load."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_secure_mail import SecureEmailOperator

FOLDER = os.environ.get("E2E_ATTACHMENTS", "/tmp/e2e-attachments")

with DAG(dag_id="e2e_attachments", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:

    @task
    def write_report() -> None:
        Path(FOLDER).mkdir(parents=True, exist_ok=True)
        Path(FOLDER, "report.txt").write_text("rows: 3\n{{ not a template }}\n")

    write_report() >> SecureEmailOperator(
        task_id="send_report",
        to="files@example.com",
        subject="Report {{ run_id }}",
        text_content="The report is attached.\n",
        attachments=[f"{FOLDER}/report.txt"],
    )
