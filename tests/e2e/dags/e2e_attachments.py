"""Deployment check: attachments given by a path ending in .txt or .html are data, never template files."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_secure_mail import MailPolicy, SecureEmailOperator

FOLDER = os.environ.get("E2E_ATTACHMENTS", "/tmp/e2e-attachments")

with DAG(dag_id="e2e_attachments", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:

    @task
    def write_files() -> None:
        Path(FOLDER).mkdir(parents=True, exist_ok=True)
        Path(FOLDER, "report.txt").write_text("rows: 3\n{{ not a template }}\n")
        Path(FOLDER, "summary.html").write_text("<p>Summary: 3 rows</p>\n")

    write_files() >> SecureEmailOperator(
        task_id="send_files",
        to="files@example.com",
        subject="Files {{ run_id }}",
        text_content="Two files attached.\n",
        attachments=[f"{FOLDER}/report.txt", f"{FOLDER}/summary.html"],
        policy=MailPolicy(allowed_attachment_types=("text/plain", "text/html")),
    )
