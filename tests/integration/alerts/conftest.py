"""Fixtures of the alert-digest tests: a settable clock and a notifier folding into a given digest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_secure_mail.alerts.digest import AlertDigest
from tests.integration.alerts.test_digest import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notifier_for(mail_env: Any) -> Callable[[AlertDigest], Any]:
    from airflow_secure_mail import SecureEmailNotifier

    def make(digest: AlertDigest) -> Any:
        return SecureEmailNotifier(to="oncall@example.com", digest=digest)

    return make
