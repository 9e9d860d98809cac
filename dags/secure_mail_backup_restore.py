"""Daily backup of the mail archive, then a restore of what it backed up as .eml files.

Scheduled runs need no conf: each backs up everything committed since the newest bundle in the backup
location (``@daily`` runs have an empty data interval in Airflow 3), so nothing is missed or taken twice.
A manual run may pass ``{"start": ..., "end": ...}`` (ISO 8601) as run conf to back up one interval.
It reads the archive the other examples write (same location, same Transit key) and sends no mail.

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_ARCHIVE       archive location (default file://$AIRFLOW_HOME/secure-mail/archive)
    SECURE_MAIL_ARCHIVE_CONN  Airflow connection for that location, e.g. an aws one for s3:// (default none)
    SECURE_MAIL_ARCHIVE_KEY   Vault Transit key of the archive, also seals the bundles
                              (default mail-archive; "" = not sealed)
    SECURE_MAIL_BACKUP        where bundles go (default file://$AIRFLOW_HOME/secure-mail/backup)
    SECURE_MAIL_BACKUP_CONN   Airflow connection for that location (default none)
    SECURE_MAIL_RESTORE_TO    where restored .eml files go (default file://$AIRFLOW_HOME/secure-mail/restored)
    SECURE_MAIL_RESTORE_CONN  Airflow connection for that location (default none)
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_secure_mail import MailArchive, MailBackupOperator, MailRestoreOperator

LOCAL = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "secure-mail"
ARCHIVE = MailArchive(
    os.environ.get("SECURE_MAIL_ARCHIVE", f"file://{LOCAL}/archive"),
    conn_id=os.environ.get("SECURE_MAIL_ARCHIVE_CONN", "") or None,
    transit_key=os.environ.get("SECURE_MAIL_ARCHIVE_KEY", "mail-archive") or None,
)
BACKUP = os.environ.get("SECURE_MAIL_BACKUP", f"file://{LOCAL}/backup")
BACKUP_CONN = os.environ.get("SECURE_MAIL_BACKUP_CONN", "") or None
RESTORE_TO = os.environ.get("SECURE_MAIL_RESTORE_TO", f"file://{LOCAL}/restored")
RESTORE_CONN = os.environ.get("SECURE_MAIL_RESTORE_CONN", "") or None

with DAG(
    dag_id="secure_mail_backup_restore",
    start_date=datetime(2026, 1, 1),
    schedule="@daily",  # sends no mail: its first scheduled run when unpaused backs up what is there
    catchup=False,
    tags=["example", "secure-mail"],
) as dag:
    backup = MailBackupOperator(
        task_id="backup_archive",
        archive=ARCHIVE,
        backup_location=BACKUP,
        backup_conn_id=BACKUP_CONN,
        retention_days=365,
        start="{{ dag_run.conf.get('start', '') }}",
        end="{{ dag_run.conf.get('end', '') }}",
    )
    restore = MailRestoreOperator(
        task_id="restore_from_bundle",
        archive=ARCHIVE,
        bundle_location=BACKUP,
        bundle_conn_id=BACKUP_CONN,
        mode="export",
        destination=RESTORE_TO,
        destination_conn_id=RESTORE_CONN,
        start="{{ ti.xcom_pull(task_ids='backup_archive')['start'] }}",  # what the backup took
        end="{{ ti.xcom_pull(task_ids='backup_archive')['end'] }}",
    )
    backup >> restore
