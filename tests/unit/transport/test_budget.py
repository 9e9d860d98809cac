"""transport/budget.py and the quota replies of transport/replies.py, in memory (issue 24 items 1-3)."""

from __future__ import annotations

import asyncio
import re

import pytest

from airflow_secure_mail.errors import ConfigurationError, DeliveryError
from airflow_secure_mail.transport.budget import (
    BudgetLimits,
    MemoryBackend,
    RelayBudget,
    current_priority,
    is_reserved,
    relay_key,
    send_priority,
    shown_url,
)
from airflow_secure_mail.transport.replies import greeting_error, is_quota_exhausted, is_throttling, reply_error


def test_a_fifth_of_the_slots_is_reserved_evenly():
    assert [k for k in range(20) if is_reserved(k, 0.2)] == [4, 9, 14, 19]
    assert not any(is_reserved(k, 0.0) for k in range(20))
    assert sum(is_reserved(k, 0.25) for k in range(1000, 1100)) == 25


def test_bulk_never_takes_a_reserved_slot_and_alerts_take_the_earliest():
    backend = MemoryBackend()
    bulk = [backend.claim_slot("r", 0, 9, 0.2, True, 60) for _ in range(8)]
    assert bulk == [0, 1, 2, 3, 5, 6, 7, 8]
    assert backend.claim_slot("r", 0, 9, 0.2, True, 60) is None  # only reserved slots left: bulk waits (or fails)
    assert backend.claim_slot("r", 0, 9, 0.2, False, 60) == 4  # alerts take the earliest free one
    assert backend.claim_slot("r", 0, 9, 0.2, False, 60) == 9
    assert backend.claim_slot("other-relay", 0, 9, 0.2, True, 60) == 0  # each relay its own budget


def test_recipients_never_pass_the_quota():
    backend = MemoryBackend()
    assert backend.add_recipients("r", "20261208", 7, 10)
    assert not backend.add_recipients("r", "20261208", 4, 10)  # nothing counted
    assert backend.add_recipients("r", "20261208", 3, 10)
    assert backend.add_recipients("r", "20261209", 10, 10)  # a new UTC day


def test_leases_and_a_lowered_cap():
    backend = MemoryBackend()
    assert backend.lease("r", "a", 2, 60) and backend.lease("r", "b", 2, 60)
    assert not backend.lease("r", "c", 2, 60)
    backend.lower_cap("r", 1, 600)
    backend.release("r", "a")
    assert not backend.lease("r", "c", 2, 60)  # b still holds the one place left
    backend.release("r", "b")
    assert backend.lease("r", "c", 2, 60)
    assert backend.held("r") == 1


def test_no_slot_for_bulk_is_a_clear_error():
    budget = RelayBudget(BudgetLimits("r", per_minute=30, reserve=0.2), MemoryBackend())
    error = budget.no_slot("bulk")
    assert str(error) == (
        "relay budget: no slot for bulk mail within the deadline (30/min, 20% kept for alerts); raise extra "
        "deadline, lower the fan-out or raise max_messages_per_minute if the relay allows it."
    )
    assert error.transient and not error.exhausted


def test_the_recipient_quota_refuses_with_exhausted():
    budget = RelayBudget(BudgetLimits("r", recipients_per_day=3), MemoryBackend())
    asyncio.run(budget.count_recipients(2))
    with pytest.raises(DeliveryError) as caught:
        asyncio.run(budget.count_recipients(2))
    assert caught.value.exhausted and not caught.value.transient


def test_exhausted_stops_bulk_only():
    budget = RelayBudget(BudgetLimits("r"), MemoryBackend())
    asyncio.run(budget.mark_exhausted())
    asyncio.run(budget.check_not_exhausted("alert"))
    with pytest.raises(DeliveryError, match="bulk mail stops until 00:00 UTC"):
        asyncio.run(budget.check_not_exhausted("bulk"))


def test_priority_is_bulk_unless_set_and_checked():
    assert current_priority() == "bulk"
    with send_priority("alert"):
        assert current_priority() == "alert"
    assert current_priority() == "bulk"
    with pytest.raises(ConfigurationError, match="priority must be 'alert' or 'bulk', not 'urgent'"):
        send_priority("urgent").__enter__()


def test_reserve_must_leave_room_for_bulk():
    with pytest.raises(ConfigurationError, match="alert_reserve must be at least 0 and below 1, not 1"):
        BudgetLimits("r", reserve=1)


def test_relay_key_and_shown_url():
    assert relay_key("SMTP.office365.com", 587, "/smtp/reports/") == "smtp.office365.com_587_smtp_reports"
    assert shown_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"),
        (550, "5.4.5 Daily user sending limit exceeded."),
        (421, "4.7.0 Daily sending quota exceeded"),
        (421, "4.7.28 Our system has detected an unusual rate; quota reached"),
    ],
)
def test_daily_quota_replies_are_exhausted_not_throttling(code, text):
    assert is_quota_exhausted(code, text)
    assert not is_throttling(code, text)
    error = reply_error("relay:587", "MAIL", code, text)
    assert error.exhausted and not error.transient and not error.throttled
    assert "refused for its daily quota at MAIL" in str(error)


def test_other_replies_are_not_quota():
    assert not is_quota_exhausted(421, "4.7.0 Too many messages, slow down")
    assert is_throttling(421, "4.7.0 Too many messages, slow down")
    assert not is_quota_exhausted(554, "5.7.1 Relay access denied")
    busy = greeting_error("relay:587", 432, "4.3.2 Too many connections")
    assert busy.throttled and busy.code == 432 and not busy.exhausted


def _settings(**extra: object):  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from airflow_secure_mail.connection.settings import SmtpSettings

    conn = SimpleNamespace(
        conn_id="relay", host="smtp.example.com", port=587, login=None, password=None,
        extra_dejson={"auth": "none", **extra},
    )  # fmt: skip
    return SmtpSettings.from_connection(conn)


def test_the_connection_extras_reach_the_batch_limits():
    settings = _settings(
        max_messages_per_minute=30, max_recipients_per_day="10000", max_connections=3,
        budget_url="redis://127.0.0.1:6379/0", alert_reserve=0.25, vault_path="smtp/reports",
    )  # fmt: skip
    budget = settings.delivery_limits("relay").budget()
    assert budget == BudgetLimits(
        relay="smtp.example.com_587_smtp_reports", per_minute=30, recipients_per_day=10000, max_connections=3,
        reserve=0.25, url="redis://127.0.0.1:6379/0",
    )  # fmt: skip
    defaults = _settings().delivery_limits("relay").budget()
    assert (defaults.url, defaults.reserve, defaults.max_connections) == (None, 0.2, None)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"alert_reserve": 1.5}, "extra alert_reserve must be at least 0 and below 1, e.g. 0.2."),
        ({"budget_url": "localhost:6379"}, "extra budget_url needs a scheme: redis://host:port/db"),
        ({"max_connections": 0}, "extra max_connections must be above 0, not 0"),
    ],
)
def test_wrong_budget_extras_say_what_to_set(extra, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        _settings(**extra)


def test_limits_refuse_a_zero_cap():
    from airflow_secure_mail.transport.batch import DeliveryLimits

    with pytest.raises(ConfigurationError, match="max_connections must be at least 1, not 0; leave it unset"):
        DeliveryLimits(max_connections=0)
