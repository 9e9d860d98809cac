"""Deployment check: an HTML file the policy allows, attached by a path ending in .html."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_secure_mail import MailPolicy, SecureEmailOperator

FOLDER = os.environ.get("E2E_ATTACHMENTS", "/tmp/e2e-attachments")

with DAG(dag_id="e2e_html_attachment", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:

    @task
    def write_summary() -> None:
        Path(FOLDER).mkdir(parents=True, exist_ok=True)
        Path(FOLDER, "summary.html").write_text(
            "<!DOCTYPE html>\n<html><head><title>Summary</title></head><body><p>3 rows</p></body></html>\n"
        )

    write_summary() >> SecureEmailOperator(
        task_id="send_summary",
        to="files@example.com",
        subject="Summary {{ run_id }}",
        text_content="The summary is attached.\n",
        attachments=[f"{FOLDER}/summary.html"],
        policy=MailPolicy(allowed_attachment_types=("text/plain", "text/html")),
    )
