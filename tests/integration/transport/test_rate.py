"""transport/batch.py and transport/rate.py under a relay that refuses or throttles: backoff before connecting,
and the deadline as a hard bound on the whole call (issue 19 items 23 and 24).

Real servers on loopback: a relay refusing every greeting (``432 4.3.2``) and the throttling STARTTLS relay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from airflow_secure_mail.errors import DeliveryError
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.testing.smtp import TestCA
from airflow_secure_mail.testing.throttling import RefusingGreetingServer, ThrottlingSmtpServer
from airflow_secure_mail.transport.batch import DeliveryLimits, Outcome, deliver_batch
from airflow_secure_mail.transport.rate import forget_rate_limits
from airflow_secure_mail.transport.session import SendReceipt, SmtpCredentials, SmtpSession
from airflow_secure_mail.transport.tls import TLSPolicy
from tests.helpers import numbered_outgoing

GRACE = 2.0
"""What the deadline may be overrun by (the API's promise): cancelling, closing, reporting."""


@pytest.fixture(autouse=True)
def _fresh_rates() -> Iterator[None]:
    forget_rate_limits()
    yield
    forget_rate_limits()


def _opener(port: int, ca: TestCA, session_class: type[SmtpSession] = SmtpSession):
    policy = TLSPolicy(host="localhost", port=port, security="starttls", ca_cert=ca.pem)

    async def credentials(fresh: bool) -> SmtpCredentials:
        return SmtpCredentials(mechanism="none")

    async def open_session() -> SmtpSession:
        session = session_class(policy, credentials, timeout=10)
        await session.open()
        return session

    return open_session


def _timed_batch(items: list[Outgoing], opener, limits: DeliveryLimits) -> tuple[list[Outcome], float]:
    started = time.monotonic()
    outcomes = asyncio.run(deliver_batch(items, opener, limits))
    return outcomes, time.monotonic() - started


def _arrived_ids(server: ThrottlingSmtpServer) -> list[str]:
    return [a.data.split(b"\r\n", 1)[0].decode().removeprefix("Message-ID: ") for a in server.arrivals]


def _assert_exactly_once(items: list[Outgoing], outcomes: list[Outcome], arrived: list[str]) -> None:
    """A receipt arrived once; an error that is not ``maybe_delivered`` never arrived (even after the call)."""
    for item, outcome in zip(items, outcomes, strict=True):
        count = arrived.count(item.message_id or "")
        if isinstance(outcome, SendReceipt):
            assert count == 1, (item.message_id, outcome)
        else:
            assert isinstance(outcome, DeliveryError) and outcome.transient
            assert count <= (1 if outcome.maybe_delivered else 0), (item.message_id, str(outcome))


# -- item 23: a relay refusing in its greeting ---------------------------------------------------------------


@pytest.fixture
def refusing() -> Iterator[RefusingGreetingServer]:
    with RefusingGreetingServer() as server:
        yield server


def test_refused_greetings_back_off_for_every_session_until_the_deadline(refusing, ca):
    limits = DeliveryLimits(concurrency=4, retries=3, retry_backoff=1.0, deadline=5.0, rate_key="refusing")
    outcomes, elapsed = _timed_batch(numbered_outgoing(6, "g"), _opener(refusing.port, ca), limits)
    # Four sessions connect at once and are refused; then one connect per pause of 1-2 s, 2-3 s, 4-5 s...:
    # within 5 s that is at most two more. Without the backoff it was hundreds.
    assert refusing.accepted <= 10
    assert elapsed < limits.deadline + GRACE
    for outcome in outcomes:
        assert isinstance(outcome, DeliveryError) and outcome.throttled and outcome.transient
        assert outcome.code == 432 and not outcome.maybe_delivered
        assert str(outcome) == (
            f"the relay was still throttling when the deadline of 5s ran out: localhost:{refusing.port} is "
            "throttling us at the greeting (432 4.3.2 Too many connections); lower max_messages_per_minute or "
            "raise extra deadline."
        )


@pytest.mark.smtp
def test_a_busy_greeting_without_an_enhanced_code_is_throttling_too(ca):
    with RefusingGreetingServer(greeting=b"421 Service not available, too busy\r\n") as server:
        limits = DeliveryLimits(concurrency=2, retries=3, retry_backoff=1.0, deadline=3.0, rate_key="busy")
        outcomes, elapsed = _timed_batch(numbered_outgoing(2, "b"), _opener(server.port, ca), limits)
    assert server.accepted <= 6 and elapsed < limits.deadline + GRACE
    assert all(isinstance(o, DeliveryError) and o.throttled and o.code == 421 for o in outcomes)


# -- item 24: the deadline bounds the whole call, cancellation included --------------------------------------


class _SwallowsOneCancel(SmtpSession):
    """A session whose send, cancelled mid-transfer, finishes it and returns instead of raising.

    Python 3.11's ``asyncio.wait_for`` (aiosmtplib reads every reply with it) does exactly this when the
    cancellation and the reply land in one turn of the loop; a race cannot be timed from a test, so this
    session loses it every time. The relay and the transfer are real.
    """

    async def send(self, *args, **kwargs) -> SendReceipt:  # type: ignore[no-untyped-def]
        inner = asyncio.ensure_future(super().send(*args, **kwargs))
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            return await inner  # a second cancel cancels the transfer too


@pytest.mark.smtp
def test_a_swallowed_cancellation_neither_overruns_the_deadline_nor_sends_after_it(ca):
    with ThrottlingSmtpServer(ca, stage="MAIL", throttle_first=None, throttle_every=2, data_delay=1.5) as server:
        limits = DeliveryLimits(concurrency=2, retries=3, retry_backoff=30.0, deadline=1.0, rate_key="swallow")
        items = numbered_outgoing(8, "s")
        outcomes, elapsed = _timed_batch(items, _opener(server.port, ca, _SwallowsOneCancel), limits)
        assert elapsed < limits.deadline + GRACE
        time.sleep(2.0)  # anything a left-over task would still send arrives by now
        _assert_exactly_once(items, outcomes, _arrived_ids(server))
    cut_off = [o for o in outcomes if isinstance(o, DeliveryError)]
    assert cut_off and all("deadline of 1s ran out" in str(o) for o in cut_off)


@pytest.mark.smtp
def test_throttled_sessions_return_by_the_deadline_every_time(ca):
    """Four sessions, a relay throttling every third MAIL: the deadline falls while replies arrive; 20 runs."""
    with ThrottlingSmtpServer(ca, stage="MAIL", throttle_first=None, throttle_every=3) as server:
        for run in range(20):
            forget_rate_limits()
            limits = DeliveryLimits(concurrency=4, retries=5, retry_backoff=0.05, deadline=1.5, rate_key="loop")
            items = numbered_outgoing(300, f"r{run}-")
            outcomes, elapsed = _timed_batch(items, _opener(server.port, ca), limits)
            assert elapsed < limits.deadline + GRACE, f"run {run} returned {elapsed:.1f}s after it started"
            _assert_exactly_once(items, outcomes, _arrived_ids(server))
