"""Alert digests: a storm of task failures folds into one mail per group per interval; a flush DAG every
five minutes sends digests whose slot has ended even when no new alert arrives to trigger them.

The flush DAG is created unpaused (``is_paused_upon_creation=False``): digests go out only when it runs.
If it was paused before (an older copy of this file, or by hand), unpause it. The storm DAG fails on
purpose: trigger it (unpaused) to see one digest arrive after ``group_wait``.

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_ALERT_TO               who gets the digests (default oncall@example.com)
    AIRFLOW_SECURE_MAIL_DIGEST_STATE   digest state, shared by every worker
                                       (default file://$AIRFLOW_HOME/secure-mail/alert-state);
                                       the ``airflow-secure-mail silence`` CLI reads the same variable
    SECURE_MAIL_DIGEST_CONN            Airflow connection for that location, e.g. an aws one for s3:// (default none)
    SECURE_MAIL_DIGEST_GROUP_WAIT      how long a group waits for more alerts before its first digest (default 1m)
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_secure_mail import AlertDigest, AlertDigestFlushOperator, SecureEmailNotifier

LOCAL = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "secure-mail"
ALERT_TO = os.environ.get("SECURE_MAIL_ALERT_TO", "oncall@example.com")

digest = AlertDigest(
    state=os.environ.get("AIRFLOW_SECURE_MAIL_DIGEST_STATE", f"file://{LOCAL}/alert-state"),
    state_conn_id=os.environ.get("SECURE_MAIL_DIGEST_CONN", "") or None,
    group_by=("dag_id",),
    group_wait=os.environ.get("SECURE_MAIL_DIGEST_GROUP_WAIT", "1m"),  # let a run's failures arrive first
    group_interval="15m",
    repeat_interval="4h",
    send_resolved=True,
    max_items=50,
)
alert = SecureEmailNotifier(to=ALERT_TO, digest=digest)

with DAG(
    dag_id="secure_mail_alert_digest_flush",
    start_date=datetime(2026, 1, 1),
    schedule="*/5 * * * *",
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,  # it must run for digests to go out; it sends only digests that are due
    tags=["example", "secure-mail"],
) as flush_dag:
    AlertDigestFlushOperator(task_id="flush_alert_digests", digest=digest, notifier=alert, retries=2)

with DAG(
    dag_id="secure_mail_alert_storm",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    on_failure_callback=alert,  # the failed run folds its task alerts into one section (inhibition)
    tags=["example", "secure-mail"],
) as storm_dag:

    @task(retries=1, retry_delay=timedelta(seconds=1), on_failure_callback=alert, on_retry_callback=alert)
    def load_partition(partition: int) -> None:
        raise ConnectionError(f"warehouse unreachable while loading partition {partition}")

    load_partition.expand(partition=list(range(20)))
