"""A Deadline Alert mailed by SecureEmailNotifier: the run overruns its deadline, the triggerer sends the mail.

The DAG run must finish within ``SECURE_MAIL_DEADLINE_SECONDS`` of being queued; its one task takes twice
that long, so every run misses the deadline and ends ``success``. When the scheduler finds the deadline
missed, the triggerer runs the callback: one "[Airflow] DEADLINE MISSED <dag> - <run>" mail with the run,
the deadline, how late and a link to the run. Its Message-ID comes from the deadline's id and the mail is
archived (write-ahead), so a triggerer restarted while it sends does not send it twice.

The callback's kwargs are stored in the metadata database (and printed in the triggerer's log if it fails):
they are references only (addresses, an archive location, connection ids, a key name), never a secret.

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_ALERT_TO           who gets the deadline mail (default oncall@example.com)
    SECURE_MAIL_DEADLINE_SECONDS   seconds after the run is queued by which it must finish (default 30)
    SECURE_MAIL_ARCHIVE            archive location (default file://$AIRFLOW_HOME/secure-mail/archive)
    SECURE_MAIL_ARCHIVE_CONN       Airflow connection for that location, e.g. an aws one for s3:// (default none)
    SECURE_MAIL_ARCHIVE_KEY        Vault Transit key that seals the archive (default mail-archive; "" = not sealed)
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, DeadlineAlert, DeadlineReference, task

from airflow_secure_mail import SecureEmailNotifier

LOCAL = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "secure-mail"
ALERT_TO = os.environ.get("SECURE_MAIL_ALERT_TO", "oncall@example.com")
DEADLINE = int(os.environ.get("SECURE_MAIL_DEADLINE_SECONDS", "30"))

with DAG(
    dag_id="secure_mail_deadline",
    start_date=datetime(2026, 1, 1),
    schedule=None,  # a real deployment: its schedule, and a deadline such as 2 hours after the run is queued
    catchup=False,
    tags=["example", "secure-mail"],
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=DEADLINE),
        # AsyncCallback: the triggerer sends it. JSON references only: they are stored in the database.
        callback=SecureEmailNotifier.deadline_callback(
            to=ALERT_TO,
            archive=os.environ.get("SECURE_MAIL_ARCHIVE", f"file://{LOCAL}/archive"),
            archive_conn_id=os.environ.get("SECURE_MAIL_ARCHIVE_CONN", "") or None,
            archive_transit_key=os.environ.get("SECURE_MAIL_ARCHIVE_KEY", "mail-archive") or None,
        ),
    ),
) as dag:

    @task
    def nightly_load() -> None:
        """Stands for work that takes longer than promised: twice the deadline."""
        time.sleep(2 * DEADLINE)

    nightly_load()
