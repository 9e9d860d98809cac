"""A failing task alerted by SecureEmailNotifier: the default alert names DAG, task, run, try and error.

The task fails on purpose: the run ends ``failed`` and the alert mail is the point.

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_ALERT_TO   who gets the alert (default oncall@example.com)
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_secure_mail import SecureEmailNotifier

ALERT_TO = os.environ.get("SECURE_MAIL_ALERT_TO", "oncall@example.com")

with DAG(
    dag_id="secure_mail_failure_alert",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "secure-mail"],
) as dag:

    @task(retries=0, on_failure_callback=SecureEmailNotifier(to=ALERT_TO))
    def load_warehouse() -> None:
        raise RuntimeError("warehouse load failed: 3 rows violate NOT NULL on orders.customer_id")

    load_warehouse()
