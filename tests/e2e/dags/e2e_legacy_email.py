"""Deployment check: ``email_on_failure`` through ``[email] email_backend = airflow_secure_mail...send_email``."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

with DAG(dag_id="e2e_legacy_email", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:

    @task(retries=0, email=["legacy-alerts@example.com"], email_on_failure=True)
    def nightly_export() -> None:
        raise RuntimeError("export failed: disk quota exceeded on /exports")

    nightly_export()
