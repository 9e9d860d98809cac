"""A per-recipient report: each recipient gets their own copy (no one sees the others), one SMTP session.

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_TEAM   comma-separated recipients (default ana@example.com,bo@example.com,chen@example.com)
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_secure_mail import SecureEmailOperator

RECIPIENTS = os.environ.get("SECURE_MAIL_TEAM", "ana@example.com,bo@example.com,chen@example.com").split(",")
# The run's date, also for runs triggered without a logical date (CLI, REST, UI: Airflow 3).
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="secure_mail_per_recipient",
    start_date=datetime(2026, 1, 1),
    schedule=None,  # a real deployment: "@daily" (no schedule here, so unpausing the example sends no mail)
    catchup=False,
    tags=["example", "secure-mail"],
) as dag:
    SecureEmailOperator(
        task_id="personal_reports",
        to=RECIPIENTS,
        subject=f"Your pipeline summary for {DAY}",
        text_content=f"Hello,\n\nyour datasets refreshed on {DAY}.\n",
        one_message_per_recipient=True,
    )
