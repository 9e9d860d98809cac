"""End-to-end protected reports: one PGP/MIME (signed + encrypted), one S/MIME (signed + encrypted).

Recipient keys live in Vault at ``secret/mail-keys/<address>`` (``pgp_public_key``,
``smime_certificate``); the signer at ``secret/mail-signing``. Both copies are archived, sealed
with the Vault Transit key ``mail-archive``.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_secure_mail import MailArchive, Protection, SecureEmailOperator

ARCHIVE = MailArchive(
    os.environ.get("SECURE_MAIL_ARCHIVE", "file:///tmp/secure-mail-archive"),
    conn_id=os.environ.get("SECURE_MAIL_ARCHIVE_CONN") or None,
    transit_key=os.environ.get("SECURE_MAIL_ARCHIVE_KEY", "mail-archive"),
)
BOARD = os.environ.get("SECURE_MAIL_BOARD", "board@example.com")
# The run's date, also for runs triggered without a logical date (CLI, REST, UI: Airflow 3).
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"

with DAG(
    dag_id="secure_mail_encrypted_report",
    start_date=datetime(2026, 1, 1),
    schedule="@monthly",
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
