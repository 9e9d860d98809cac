"""Issue 13: alert digests driven through the API with an injectable clock, real SMTP catcher, file:// and S3."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta

import pytest

from airflow_secure_mail.alerts.digest import AlertDigest, parse_duration
from airflow_secure_mail.alerts.events import Event, Kind
from airflow_secure_mail.errors import ConfigurationError

START = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)


class Clock:
    """The digest's injectable clock: tests move time, nothing sleeps."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def _text(received) -> str:
    return _parsed(received.data).get_body(("plain",)).get_content()


def _subject(received) -> str:
    return " ".join(_parsed(received.data)["Subject"].split())


def _event(
    at: datetime,
    *,
    dag="finance_daily",
    task="load",
    run=None,
    kind=Kind.FAILURE,
    try_number=1,
    map_index=-1,
    error="RuntimeError: warehouse load failed",
):
    return Event(
        dag_id=dag,
        run_id=run or f"scheduled__{at:%H%M}",
        task_id=task,
        map_index=map_index,
        try_number=try_number,
        kind=kind,
        at=at,
        error=error,
        log_url=f"http://airflow.example/log/{task}",
        max_tries=1,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notifier_for(mail_env):
    from airflow_secure_mail import SecureEmailNotifier

    def make(digest: AlertDigest):
        return SecureEmailNotifier(to="oncall@example.com", digest=digest)

    return make


def test_durations_read_like_alertmanager():
    assert parse_duration("1h30m", "x") == timedelta(minutes=90)
    assert parse_duration("0s", "x") == timedelta(0)
    assert parse_duration(90, "x") == timedelta(seconds=90)
    with pytest.raises(ConfigurationError, match=r"AlertDigest.group_interval='15 minutes': give a duration"):
        AlertDigest(state="file:///tmp/x", group_interval="15 minutes")


def test_bad_config_names_the_field():
    with pytest.raises(ConfigurationError, match="needs a scheme"):
        AlertDigest(state="/tmp/state")
    with pytest.raises(ConfigurationError, match=r"group_by=\('owner',\): choose labels from dag_id"):
        AlertDigest(state="file:///tmp/x", group_by=("owner",))
    with pytest.raises(ConfigurationError, match="max_items=0"):
        AlertDigest(state="file:///tmp/x", max_items=0)


def test_dag_failing_every_minute_for_a_day_mails_once_then_every_repeat_interval(
    mail_env, notifier_for, clock, tmp_path
):
    digest = AlertDigest(state=f"file://{tmp_path}/state", group_interval="1h", repeat_interval="4h", clock=clock)
    notifier = notifier_for(digest)
    for minute in range(24 * 60):
        clock.now = START + timedelta(minutes=minute)
        assert digest.record(_event(clock.now))
        digest.flush(notifier, group={"dag_id": "finance_daily"})
    clock.now = START + timedelta(hours=24)
    digest.flush(notifier)
    texts = [_text(m) for m in mail_env.smtp.messages]
    stamps = [re.search(r"Digest (\S+ \S+) UTC", t).group(1) for t in texts]
    assert stamps == [f"2026-11-28 {h:02d}:00" for h in (0, 4, 8, 12, 16, 20)] + ["2026-11-29 00:00"]
    assert _subject(mail_env.smtp.messages[0]) == "[Airflow] 1 failure in 1 DAG since 00:00 UTC (finance_daily)"
    assert _subject(mail_env.smtp.messages[1]) == "[Airflow] 240 failures in 1 DAG since 00:00 UTC (finance_daily)"
    assert "x241 since 00:00, last 04:00 (240 new)" in texts[1]
    counts = [1] + [int(re.search(r"\((\d+) new\)", t).group(1)) for t in texts[1:]]
    assert sum(counts) == 1440  # every event in exactly one digest
