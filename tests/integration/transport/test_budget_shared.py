"""The relay budget shared by processes (issue 24 items 1-3): two sending processes against one loopback relay
that counts what it receives, with the budget on Redis and on a file:// object store.

Every assertion counts at the relay: messages per sliding window, recipients, sessions open at once, MAIL
commands after a quota refusal.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_mail.errors import DeliveryError
from airflow_secure_mail.pipeline import budget_store
from airflow_secure_mail.transport.batch import DeliveryLimits, deliver_batch
from airflow_secure_mail.transport.budget import forget_budgets, send_priority
from airflow_secure_mail.transport.rate import forget_rate_limits
from airflow_secure_mail.transport.session import SendReceipt
from tests.integration.transport.budget_relay import BudgetRelay
from tests.integration.transport.budget_sender import messages, opener

pytestmark = pytest.mark.smtp
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    forget_rate_limits()
    forget_budgets()
    budget_store.register()
    yield
    forget_rate_limits()
    forget_budgets()


@pytest.fixture
def relay() -> Iterator[BudgetRelay]:
    with BudgetRelay() as server:
        yield server


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "file"])
def budget_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        server = request.getfixturevalue("redis")
        server_url: str = server.url
        import redis as redis_client

        redis_client.Redis.from_url(server_url).flushall()
        return server_url
    return f"file://{tmp_path}/budget"


def _start(port: int, tag: str, count: int, limits: dict[str, Any], **spec: Any) -> subprocess.Popen[str]:
    payload = json.dumps({"port": port, "tag": tag, "count": count, "limits": limits, **spec})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.transport.budget_sender", payload],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _outcomes(proc: subprocess.Popen[str]) -> list[str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    result: list[str] = json.loads(out.strip().splitlines()[-1])
    return result


def test_two_processes_share_one_rate_evenly_spread(relay, budget_url):
    """60/min is one message a second for both processes together: never two slots' worth in one second."""
    limits = {"max_messages_per_minute": 60, "budget_url": budget_url, "budget_key": "relay-a", "deadline": 120}
    procs = [_start(relay.port, tag, 6, limits, concurrency=2) for tag in ("a", "b")]
    results = [_outcomes(p) for p in procs]
    assert results == [["sent"] * 6, ["sent"] * 6]
    assert sorted(relay.ids()) == sorted(f"<{t}{i}@test>" for t in "ab" for i in range(6))  # each once
    # Slots are a second apart: 3 seconds hold at most 3 slots (4 when a window catches two slot edges).
    assert relay.most_in_window(3.0) <= 4
    assert relay.most_in_window(1.0) <= 2  # the small burst: the end of one slot, the start of the next


def test_per_process_limits_without_budget_url_are_said_once(relay, caplog):
    limits = DeliveryLimits(max_messages_per_minute=600, budget_key="relay-local", retries=0, deadline=30)
    with caplog.at_level("INFO", logger="airflow_secure_mail.transport.budget"):
        for tag in ("x", "y"):
            asyncio.run(deliver_batch(messages(2, tag, 1), opener(relay.port), limits))
    said = [r for r in caplog.records if "per process only" in r.getMessage()]
    assert len(said) == 1
    assert len(relay.arrivals) == 4


def test_alerts_get_through_while_bulk_saturates(relay, budget_url):
    """Bulk fills every slot it may; the alerts take the reserved ones and arrive before the bulk is done."""
    limits = {"max_messages_per_minute": 60, "budget_url": budget_url, "budget_key": "relay-b", "deadline": 120}
    bulk = _start(relay.port, "bulk", 12, limits, concurrency=3, priority="bulk")
    # the alert process starts while bulk is running: wait for the first bulk arrival
    for _ in range(600):
        if relay.arrivals:
            break
        asyncio.run(asyncio.sleep(0.05))
    alert = _start(relay.port, "alert", 2, limits, priority="alert")
    assert _outcomes(alert) == ["sent", "sent"]
    assert _outcomes(bulk) == ["sent"] * 12
    at = {mid: t for t, mid, _ in relay.arrivals}
    last_bulk = max(t for mid, t in at.items() if mid.startswith("<bulk"))
    assert all(at[f"<alert{i}@test>"] < last_bulk for i in range(2))
    assert relay.most_in_window(3.0) <= 4  # alerts come out of the same budget, not on top of it


def test_recipients_per_day_never_exceeded_across_processes(relay, budget_url):
    limits = {"max_recipients_per_day": 12, "budget_url": budget_url, "budget_key": "relay-c", "deadline": 60}
    procs = [_start(relay.port, tag, 5, limits, recipients=2, concurrency=2) for tag in ("a", "b")]
    results = [o for p in procs for o in _outcomes(p)]
    assert sum(n for _, _, n in relay.arrivals) == 12  # exactly the quota, never more
    assert results.count("sent") == 6
    refused = [o for o in results if o != "sent"]
    assert (
        refused
        == [
            "error: relay budget: the daily quota of 12 recipients for this relay is used up; this message "
            "(2 recipient(s)) waits for 00:00 UTC; raise max_recipients_per_day only if the relay allows it."
        ]
        * 4
    )


def test_max_connections_never_exceeded_across_processes(budget_url):
    with BudgetRelay(data_delay=0.2) as relay:
        limits = {"max_connections": 2, "budget_url": budget_url, "budget_key": "relay-d", "deadline": 120}
        procs = [_start(relay.port, tag, 6, limits, concurrency=3) for tag in ("a", "b")]
        assert [o for p in procs for o in _outcomes(p)] == ["sent"] * 12
        assert relay.most_sessions == 2
        assert relay.refused_connections == 0


def test_too_many_connections_lowers_the_shared_cap(redis):
    """The relay takes 2 sessions; we allow 3: its 432 lowers our cap to 2, and every message still goes."""
    import redis as redis_client

    redis_client.Redis.from_url(redis.url).flushall()
    with BudgetRelay(max_sessions=2, data_delay=0.2) as relay:
        limits = DeliveryLimits(
            max_connections=3, budget_url=redis.url, budget_key="relay-e", retries=2, retry_backoff=0.05,
            deadline=60, concurrency=3,
        )  # fmt: skip
        outcomes = asyncio.run(deliver_batch(messages(9, "c", 1), opener(relay.port), limits))
        assert all(isinstance(o, SendReceipt) for o in outcomes), outcomes
        assert relay.refused_connections >= 1
        assert sorted(relay.ids()) == sorted(f"<c{i}@test>" for i in range(9))
    assert redis_client.Redis.from_url(redis.url).get("asm:budget:relay-e:cap") == b"2"


def test_daily_quota_reply_stops_bulk_and_alerts_are_still_tried(budget_url):
    with BudgetRelay(quota_after=2) as relay:
        limits = DeliveryLimits(budget_url=budget_url, budget_key="relay-f", retries=2, deadline=30)
        with send_priority("bulk"):
            outcomes = asyncio.run(deliver_batch(messages(6, "q", 1), opener(relay.port), limits))
        assert [isinstance(o, SendReceipt) for o in outcomes] == [True, True, False, False, False, False]
        first = outcomes[2]
        assert isinstance(first, DeliveryError) and first.exhausted and not first.transient
        assert str(first).startswith("127.0.0.1:") and "refused for its daily quota at MAIL (554 5.2.0" in str(first)
        for later in outcomes[3:]:
            assert isinstance(later, DeliveryError) and later.exhausted
            assert str(later) == (
                "relay budget: the relay refused for its daily quota today; bulk mail stops until 00:00 UTC "
                "(alert mail is still tried)."
            )
        assert relay.mail_commands == 3  # bulk stopped at once: no retry, no further MAIL
        # another process's bulk stops at once too, before connecting
        forget_budgets()
        budget_store.register()
        with send_priority("bulk"):
            again = asyncio.run(deliver_batch(messages(1, "r", 1), opener(relay.port), limits))
        assert isinstance(again[0], DeliveryError) and again[0].exhausted
        assert relay.mail_commands == 3
        # alert mail is still tried (the fallback relay, issue 24 item 4, takes it from there)
        with send_priority("alert"):
            alert = asyncio.run(deliver_batch(messages(1, "s", 1), opener(relay.port), limits))
        assert isinstance(alert[0], DeliveryError) and alert[0].exhausted
        assert relay.mail_commands == 4


def test_bulk_without_a_slot_before_the_deadline_fails_clearly_and_sends_nothing(relay, budget_url):
    limits = DeliveryLimits(
        max_messages_per_minute=2, budget_url=budget_url, budget_key="relay-g", deadline=5, alert_reserve=0.5,
        retries=0,
    )  # fmt: skip
    with send_priority("bulk"):
        outcomes = asyncio.run(deliver_batch(messages(3, "d", 1), opener(relay.port), limits))
    sent = [o for o in outcomes if isinstance(o, SendReceipt)]
    assert len(sent) <= 1 and len(relay.arrivals) == len(sent)
    errors = [o for o in outcomes if not isinstance(o, SendReceipt)]
    assert errors and all(
        str(e) == "relay budget: no slot for bulk mail within the deadline (2/min, 50% kept for alerts); raise "
        "extra deadline, lower the fan-out or raise max_messages_per_minute if the relay allows it."
        for e in errors
    )
