"""The smallest useful DAG: one message over verified TLS with credentials read from Vault.

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_DEMO_TO   recipient (default data-team@example.com)
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_secure_mail import SecureEmailOperator

with DAG(
    dag_id="secure_mail_hello",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "secure-mail"],
) as dag:
    SecureEmailOperator(
        task_id="send_hello",
        to=os.environ.get("SECURE_MAIL_DEMO_TO", "data-team@example.com"),
        subject="Hello from {{ dag.dag_id }} ({{ run_id }})",
        html_content="<p>Sent by <b>{{ ti.task_id }}</b> over verified TLS.</p>",
        conn_id="secure_smtp_default",
    )
