"""End-to-end protected reports: one PGP/MIME (signed + encrypted), one S/MIME (signed + encrypted).

Recipient keys live in Vault at ``secret/mail-keys/<address>`` (``pgp_public_key``,
``smime_certificate``); the signer at ``secret/mail-signing``. Both copies are archived, sealed
with the Vault Transit key ``mail-archive``. ``airflow-secure-mail setup --example-keys board@example.com``
enables Transit, creates that key and stores TEST keys for the signer and the board (docs/examples.md).

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_BOARD         recipient (default board@example.com)
    SECURE_MAIL_ARCHIVE       archive location (default file://$AIRFLOW_HOME/secure-mail/archive)
    SECURE_MAIL_ARCHIVE_CONN  Airflow connection for that location, e.g. an aws one for s3:// (default none)
    SECURE_MAIL_ARCHIVE_KEY   Vault Transit key that seals the archive (default mail-archive; "" = not sealed)
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_secure_mail import MailArchive, Protection, SecureEmailOperator

LOCAL = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "secure-mail"
ARCHIVE = MailArchive(
    os.environ.get("SECURE_MAIL_ARCHIVE", f"file://{LOCAL}/archive"),
    conn_id=os.environ.get("SECURE_MAIL_ARCHIVE_CONN", "") or None,
    transit_key=os.environ.get("SECURE_MAIL_ARCHIVE_KEY", "mail-archive") or None,
)
BOARD = os.environ.get("SECURE_MAIL_BOARD", "board@example.com")
# The run's date, also for runs triggered without a logical date (CLI, REST, UI: Airflow 3).
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="secure_mail_encrypted_report",
    start_date=datetime(2026, 1, 1),
    schedule=None,  # a real deployment: "@monthly" (no schedule here, so unpausing the example sends no mail)
    catchup=False,
    tags=["example", "secure-mail"],
) as dag:
    SecureEmailOperator(
        task_id="pgp_report",
        to=BOARD,
        subject=f"Board pack {DAY} (PGP)",
        text_content=f"Revenue and headcount figures for {DAY} are below.\n\nRevenue: 12.4M EUR\n",
        protection=Protection(encrypt="pgp", sign=True, signing_vault_path="mail-signing", protect_headers=True),
        archive=ARCHIVE,
    )
    SecureEmailOperator(
        task_id="smime_report",
        to=BOARD,
        subject=f"Board pack {DAY} (S/MIME)",
        text_content=f"Revenue and headcount figures for {DAY} are below.\n\nRevenue: 12.4M EUR\n",
        protection=Protection(encrypt="smime", sign=True, signing_vault_path="mail-signing"),
        archive=ARCHIVE,
    )
