"""A human-in-the-loop approval requested by SecureEmailNotifier: the request mail links to the UI's page.

``ApprovalOperator`` waits for someone to choose Approve or Reject (in the UI's Required Actions, or through
the REST API: ``PATCH /api/v2/dags/<dag>/dagRuns/<run>/taskInstances/<task>/-1/hitlDetails``). When the
request is made, its notifier sends one "[Airflow] INPUT REQUIRED <dag>.<task>: <subject>" mail with the
body, the options and the link to the required-action page ([api] base_url must be the address users
open). On Approve, ``publish`` runs; on Reject it is skipped.

A run waits for an answer for up to ``SECURE_MAIL_APPROVAL_TIMEOUT_MINUTES``; after that the request is
answered with its default, Reject.

Settings (environment variables, read when the file is parsed: set them for the dag-processor and workers):
    SECURE_MAIL_APPROVERS                 who gets the request (default approvers@example.com)
    SECURE_MAIL_APPROVAL_TIMEOUT_MINUTES  minutes before the default (Reject) is taken (default 1440)
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, task

from airflow_secure_mail import SecureEmailNotifier

APPROVERS = os.environ.get("SECURE_MAIL_APPROVERS", "approvers@example.com")
TIMEOUT = timedelta(minutes=int(os.environ.get("SECURE_MAIL_APPROVAL_TIMEOUT_MINUTES", "1440")))

with DAG(
    dag_id="secure_mail_approval",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["example", "secure-mail"],
) as dag:
    approve = ApprovalOperator(
        task_id="approve_release",
        subject="Publish the weekly figures?",
        body="The weekly figures are ready. Approve to publish them to the partners' portal.",
        defaults="Reject",
        response_timeout=TIMEOUT,
        notifiers=[SecureEmailNotifier(to=APPROVERS)],
    )

    @task
    def publish() -> str:
        """Runs only after Approve."""
        return "published"

    approve >> publish()
