"""A task that fails and wires no alert of its own: the listener's catch-all mails it (issue 22)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

with DAG(dag_id="e2e_alert_no_callback", start_date=datetime(2026, 1, 1), schedule=None, catchup=False) as dag:

    @task(retries=0)
    def refresh_dimensions() -> None:
        raise RuntimeError("dimension refresh failed: upstream table sales.customers is empty")

    refresh_dimensions()
