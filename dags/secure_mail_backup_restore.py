"""Daily backup of the mail archive, then a restore of what it backed up as .eml files.

Scheduled runs need no conf: each backs up everything committed since the newest bundle in the backup
location (``@daily`` runs have an empty data interval in Airflow 3), so nothing is missed or taken twice.
A manual run may pass ``{"start": ..., "end": ...}`` (ISO 8601) as run conf to back up one interval.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_secure_mail import MailArchive, MailBackupOperator, MailRestoreOperator

ARCHIVE = MailArchive(
    os.environ.get("SECURE_MAIL_ARCHIVE", "file:///tmp/secure-mail-archive"),
    conn_id=os.environ.get("SECURE_MAIL_ARCHIVE_CONN") or None,
    transit_key=os.environ.get("SECURE_MAIL_ARCHIVE_KEY") or None,  # set it when the archive is encrypted
)
BACKUP = os.environ.get("SECURE_MAIL_BACKUP", "file:///tmp/secure-mail-backup")
RESTORE_TO = os.environ.get("SECURE_MAIL_RESTORE_TO", "file:///tmp/secure-mail-restored")

with DAG(
    dag_id="secure_mail_backup_restore",
    start_date=datetime(2026, 1, 1),
    schedule="@daily",
    catchup=False,
    tags=["example", "secure-mail"],
) as dag:
    backup = MailBackupOperator(
        task_id="backup_archive",
        archive=ARCHIVE,
        backup_location=BACKUP,
        retention_days=365,
        start="{{ dag_run.conf.get('start', '') }}",
        end="{{ dag_run.conf.get('end', '') }}",
    )
    restore = MailRestoreOperator(
        task_id="restore_from_bundle",
        archive=ARCHIVE,
        bundle_location=BACKUP,
        mode="export",
        destination=RESTORE_TO,
        start="{{ ti.xcom_pull(task_ids='backup_archive')['start'] }}",  # what the backup took
        end="{{ ti.xcom_pull(task_ids='backup_archive')['end'] }}",
    )
    backup >> restore
