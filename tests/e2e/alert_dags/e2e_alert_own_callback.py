"""A task that fails with its own SecureEmailNotifier: only that mail goes out, the listener stays silent."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_secure_mail import SecureEmailNotifier

with DAG(dag_id="e2e_alert_own_callback", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:

    @task(retries=0, on_failure_callback=SecureEmailNotifier(to="owner@example.com"))
    def rebuild_index() -> None:
        raise RuntimeError("index rebuild failed: disk quota exceeded on /data/index")

    rebuild_index()
