"""Fixtures of the listener tests: a settable clock and a listener configured through Airflow's environment."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_secure_mail.listeners.plugin import SecureMailListener
from tests.integration.alerts.test_digest import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def listener(mail_env: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, clock: Clock) -> Iterator[Any]:
    """A listener as ``AIRFLOW__SECURE_MAIL__*`` configures it, mailing oncall@ through the test relay."""
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_TO", "oncall@example.com")
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_DIGEST_STATE", f"file://{tmp_path}/listener-state")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example.com:8080")
    made = SecureMailListener(clock=clock)
    yield made
    made.reset()
