"""transport/batch.py: deliver_batch against real STARTTLS servers on loopback (no hook, no Vault).

Sessions get their credentials from a callback, as the hook's would come from Vault.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from airflow_secure_mail.errors import (
    ArchiveError,
    ConfigurationError,
    DeliveryError,
    PolicyViolation,
    SmtpAuthError,
)
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.testing.smtp import SmtpCatcher, TestCA
from airflow_secure_mail.testing.throttling import ThrottlingSmtpServer
from airflow_secure_mail.transport.batch import DeliveryLimits, deliver_batch
from airflow_secure_mail.transport.rate import forget_rate_limits
from airflow_secure_mail.transport.session import SendReceipt, SmtpCredentials, SmtpSession
from airflow_secure_mail.transport.tls import TLSPolicy
from tests.helpers import numbered_outgoing


@pytest.fixture(autouse=True)
def _fresh_rates() -> Iterator[None]:
    forget_rate_limits()
    yield
    forget_rate_limits()


def _opener(port: int, ca: TestCA, creds: SmtpCredentials | None = None, opened: list[int] | None = None):
    policy = TLSPolicy(host="localhost", port=port, security="starttls", ca_cert=ca.pem)

    async def credentials(fresh: bool) -> SmtpCredentials:
        return creds or SmtpCredentials(mechanism="none")

    async def open_session() -> SmtpSession:
        session = SmtpSession(policy, credentials, timeout=10)
        await session.open()
        if opened is not None:
            opened.append(1)
        return session

    return open_session


def _limits(**kw) -> DeliveryLimits:
    return DeliveryLimits(**{"retries": 0, "retry_backoff": 0.01, "deadline": 30.0, "rate_key": "test", **kw})


def _ids(server: ThrottlingSmtpServer) -> list[str]:
    return sorted(a.data.split(b"\r\n", 1)[0].decode().removeprefix("Message-ID: ") for a in server.arrivals)


@pytest.fixture
def throttler(ca: TestCA) -> Iterator[ThrottlingSmtpServer]:
    with ThrottlingSmtpServer(ca) as server:
        yield server


@pytest.fixture
def catcher(ca: TestCA) -> Iterator[tuple[SmtpCatcher, SmtpCredentials]]:
    password = secrets.token_urlsafe(12)
    with SmtpCatcher(ca, users={"airflow": password}) as server:
        yield server, SmtpCredentials("password", "airflow", password)


# -- throttling --------------------------------------------------------------------------------------------


def test_throttled_mail_from_is_retried_and_every_message_arrives_once(throttler, ca):
    throttler.throttle_first = 3
    items = numbered_outgoing(5)
    outcomes = asyncio.run(deliver_batch(items, _opener(throttler.port, ca), _limits(concurrency=2)))
    assert [type(o) for o in outcomes] == [SendReceipt] * 5  # retries=0: throttling did not use them up
    assert _ids(throttler) == sorted(i.message_id for i in items)
    assert throttler.throttled == 3
    assert sum(o.attempts for o in outcomes if isinstance(o, SendReceipt)) == 5 + 3


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("RCPT", "450 4.2.1 The user you are trying to contact is receiving mail too quickly"),
        ("DATA", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"),
        ("MAIL", "454 Throttling failure: Maximum sending rate exceeded."),
    ],
)
def test_throttling_reply_at_each_stage_is_retried_without_failing(throttler, ca, stage, reply):
    throttler.stage, throttler.reply, throttler.throttle_first = stage, reply, 2
    outcomes = asyncio.run(deliver_batch(numbered_outgoing(3), _opener(throttler.port, ca), _limits()))
    assert all(isinstance(o, SendReceipt) for o in outcomes), outcomes
    assert len(throttler.arrivals) == 3 and throttler.throttled == 2


def test_relay_that_throttles_forever_fails_at_the_deadline_naming_both(throttler, ca):
    throttler.throttle_first = None
    outcomes = asyncio.run(
        deliver_batch(numbered_outgoing(2), _opener(throttler.port, ca), _limits(deadline=1.0, retries=5))
    )
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, DeliveryError)
        assert outcome.throttled and outcome.transient and outcome.code == 421
        assert not outcome.maybe_delivered  # refused at MAIL: the message never went out
        assert str(outcome) == (
            f"the relay was still throttling when the deadline of 1s ran out: localhost:{throttler.port} is "
            "throttling us at MAIL (421 4.7.0 Too many messages, slow down); lower max_messages_per_minute or "
            "raise extra deadline."
        )
    assert throttler.arrivals == [] and throttler.throttled >= 2


def _multi(*recipients: str) -> Outgoing:
    return Outgoing("airflow@example.com", recipients, b"Subject: many\r\n\r\nbody\r\n", "<multi@test>")


def test_recipients_throttled_at_rcpt_get_it_again_and_the_accepted_never_twice(throttler, ca):
    throttler.stage, throttler.reply, throttler.throttle_first = "RCPT", "450 4.2.1 Slow down", 1
    item = _multi("a@example.com", "b@example.com", "c@example.com")
    [receipt] = asyncio.run(deliver_batch([item], _opener(throttler.port, ca), _limits()))
    assert isinstance(receipt, SendReceipt) and receipt.attempts == 2
    assert sorted(receipt.accepted) == list(item.recipients) and receipt.refused == {}
    assert [a.rcpt_tos for a in throttler.arrivals] == [("b@example.com", "c@example.com"), ("a@example.com",)]


def test_recipient_throttled_until_the_deadline_is_refused_in_the_receipt_of_the_others(throttler, ca):
    throttler.stage, throttler.reply, throttler.throttle_first = "RCPT", "450 4.2.1 Slow down", None
    throttler.only_recipients = ("a@example.com",)
    item = _multi("a@example.com", "b@example.com")
    [receipt] = asyncio.run(deliver_batch([item], _opener(throttler.port, ca), _limits(deadline=1.0)))
    assert isinstance(receipt, SendReceipt)  # b has it: never reported as undelivered (a resend would repeat it)
    assert receipt.accepted == ("b@example.com",) and receipt.refused == {"a@example.com": (450, "4.2.1 Slow down")}
    assert [a.rcpt_tos for a in throttler.arrivals] == [("b@example.com",)]
    assert throttler.throttled >= 2


def _accepted(rcpt: str) -> list[tuple[str, str, int]]:
    """The commands a server logs for one message to ``rcpt`` accepted at once."""
    return [("MAIL", "airflow@example.com", 250), ("RCPT", rcpt, 250), ("DATA", "", 250)]


def test_one_mailbox_throttled_at_rcpt_does_not_hold_the_other_messages(throttler, ca):
    """A busy mailbox gets a few waits, then this try moves on (its next try sends it); the others go out now."""
    throttler.stage, throttler.reply, throttler.throttle_first = "RCPT", "450 4.2.1 mailbox busy", None
    throttler.only_recipients = ("busy@example.com",)
    items = [Outgoing("airflow@example.com", (rcpt,), b"Subject: each\r\n\r\nbody\r\n", f"<{rcpt}>")
             for rcpt in ("keep1@example.com", "busy@example.com", "keep2@example.com")]  # fmt: skip
    outcomes = asyncio.run(deliver_batch(items, _opener(throttler.port, ca), _limits(deadline=60.0)))
    assert [type(o) for o in outcomes] == [SendReceipt, DeliveryError, SendReceipt]
    busy = outcomes[1]
    assert isinstance(busy, DeliveryError) and busy.throttled and busy.transient and not busy.maybe_delivered
    assert (
        str(busy)
        == "every recipient was refused: 1 recipient(s), SMTP code(s) 450; the server is throttling us at RCPT"
    )
    busy_try = [("MAIL", "airflow@example.com", 250), ("RCPT", "busy@example.com", 450)]
    assert throttler.commands == [
        *_accepted("keep1@example.com"),
        *busy_try * 5,  # the first try and four waits, each a MAIL transaction of its own
        *_accepted("keep2@example.com"),
    ]
    assert [a.rcpt_tos for a in throttler.arrivals] == [("keep1@example.com",), ("keep2@example.com",)]
    assert throttler.throttled == 5


# -- the relay's rate --------------------------------------------------------------------------------------


def _gaps(server: ThrottlingSmtpServer) -> list[float]:
    times = sorted(a.started for a in server.arrivals)
    return [b - a for a, b in itertools.pairwise(times)]


def test_rate_is_honoured_across_two_concurrent_sessions(throttler, ca):
    opened: list[int] = []
    limits = _limits(concurrency=2, max_messages_per_minute=150)  # one message every 0.4 s
    outcomes = asyncio.run(deliver_batch(numbered_outgoing(6), _opener(throttler.port, ca, opened=opened), limits))
    assert all(isinstance(o, SendReceipt) for o in outcomes)
    assert len(opened) == 2 and len({a.client_port for a in throttler.arrivals}) == 2
    # Lower bounds only: they hold however fast or slow the machine is.
    assert min(_gaps(throttler)) > 0.2
    assert sum(_gaps(throttler)) > 5 * 0.4 - 0.2


def test_rate_is_shared_by_batches_on_two_threads(throttler, ca):
    """run_sync may run batches of one connection on other threads and loops: they share one rate."""
    limits = _limits(max_messages_per_minute=150)
    outcomes: list[object] = []

    def batch(tag: str) -> None:
        outcomes.extend(asyncio.run(deliver_batch(numbered_outgoing(3, tag), _opener(throttler.port, ca), limits)))

    threads = [threading.Thread(target=batch, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 6 and all(isinstance(o, SendReceipt) for o in outcomes)
    assert len(throttler.arrivals) == 6 and min(_gaps(throttler)) > 0.2


def test_throttling_widens_the_shared_spacing_then_it_recovers():
    from airflow_secure_mail.transport.rate import RateLimiter

    limiter = RateLimiter(per_minute=60)
    assert limiter.interval == 1.0
    limiter.throttled(pause=5.0)
    assert limiter.interval == 5.0
    limiter.throttled(pause=0.1)
    assert limiter.interval == 10.0
    for _ in range(100):
        limiter.accepted()
    assert limiter.interval == 1.0


def test_deadline_gives_messages_left_a_transient_deadline_error(throttler, ca):
    # The second message's slot is a minute away (no slot kept for alerts, so the first one is free now).
    limits = _limits(max_messages_per_minute=1, deadline=1.0, alert_reserve=0.0)
    outcomes = asyncio.run(deliver_batch(numbered_outgoing(3), _opener(throttler.port, ca), limits))
    assert isinstance(outcomes[0], SendReceipt)
    for outcome in outcomes[1:]:
        assert isinstance(outcome, DeliveryError) and outcome.transient and not outcome.throttled
        assert str(outcome) == (
            "relay budget: no slot for bulk mail within the deadline (1/min, 0% kept for alerts); raise extra "
            "deadline, lower the fan-out or raise max_messages_per_minute if the relay allows it."
        )
    assert len(throttler.arrivals) == 1


# -- outcomes as they come ---------------------------------------------------------------------------------


async def _until(condition, what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_on_outcome_runs_while_later_messages_still_send(throttler, ca):
    seen: list[tuple[int, str | None]] = []

    async def on_outcome(index: int, item: Outgoing, outcome: object) -> None:
        if index == 0:  # a slow archive commit: sending (and the next outcomes) must go on meanwhile
            # Their outcomes, not their arrival at the server: the client reads the last reply a moment later.
            await _until(lambda: {1, 2} <= {i for i, _ in seen}, "messages 1 and 2 sent during the first commit")
            assert len(throttler.arrivals) == 3
        assert isinstance(outcome, SendReceipt)
        seen.append((index, outcome.message_id))

    asyncio.run(deliver_batch(numbered_outgoing(3), _opener(throttler.port, ca), _limits(), on_outcome))
    assert sorted(seen) == [(0, "<m0@test>"), (1, "<m1@test>"), (2, "<m2@test>")]
    assert seen[-1][0] == 0


def test_failing_on_outcome_stops_taking_messages_and_is_raised(throttler, ca):
    async def on_outcome(index: int, item: Outgoing, outcome: object) -> None:
        raise ArchiveError("archive is read-only", key=str(index))

    with pytest.raises(ArchiveError, match="archive is read-only"):
        asyncio.run(deliver_batch(numbered_outgoing(5), _opener(throttler.port, ca), _limits(), on_outcome))
    assert 1 <= len(throttler.arrivals) <= 2  # the first, and at most the one already in flight


def test_async_iterable_items_are_sent_as_they_arrive(throttler, ca):
    items = numbered_outgoing(3)

    async def staged() -> AsyncIterator[Outgoing]:
        for number, item in enumerate(items):
            await _until(lambda n=number: len(throttler.arrivals) >= n, "the previous message sent before the next")
            yield item

    outcomes = asyncio.run(deliver_batch(staged(), _opener(throttler.port, ca), _limits(concurrency=2)))
    assert [o.message_id for o in outcomes if isinstance(o, SendReceipt)] == [i.message_id for i in items]
    assert _ids(throttler) == ["<m0@test>", "<m1@test>", "<m2@test>"]


def test_failing_item_source_is_raised_after_the_messages_taken(throttler, ca):
    items = numbered_outgoing(2)
    reported: list[int] = []

    async def staged() -> AsyncIterator[Outgoing]:
        yield items[0]
        yield items[1]
        raise PolicyViolation("attachment type not allowed", rule="attachment_type", item="x.exe")

    async def on_outcome(index: int, item: Outgoing, outcome: object) -> None:
        reported.append(index)

    with pytest.raises(PolicyViolation, match="attachment type not allowed"):
        asyncio.run(deliver_batch(staged(), _opener(throttler.port, ca), _limits(), on_outcome))
    assert _ids(throttler) == ["<m0@test>", "<m1@test>"] and sorted(reported) == [0, 1]


# -- failures that are one message's outcome ---------------------------------------------------------------


def test_permanent_refusal_is_that_messages_outcome_only(catcher, ca):
    server, creds = catcher
    items = numbered_outgoing(3)
    server.script.rcpt_replies[items[1].recipients[0]] = "550 5.1.1 no such user"
    outcomes = asyncio.run(deliver_batch(items, _opener(server.starttls_port, ca, creds), _limits(retries=3)))
    assert isinstance(outcomes[0], SendReceipt) and isinstance(outcomes[2], SendReceipt)
    refused = outcomes[1]
    assert isinstance(refused, DeliveryError) and not refused.transient and not refused.throttled
    assert refused.refused == {items[1].recipients[0]: (550, "5.1.1 no such user")}
    assert [m.rcpt_tos for m in server.messages] == [list(items[0].recipients), list(items[2].recipients)]
    assert server.connections == 1  # the session carried on after the refusal


def test_transient_failure_is_retried_on_a_fresh_session(catcher, ca):
    server, creds = catcher
    server.script.data_replies = ["451 4.3.0 try again later"]
    [outcome] = asyncio.run(
        deliver_batch(numbered_outgoing(1), _opener(server.starttls_port, ca, creds), _limits(retries=2))
    )
    assert isinstance(outcome, SendReceipt) and outcome.attempts == 2
    assert server.connections == 2 and len(server.messages) == 1


def test_transient_failures_beyond_retries_are_the_outcome(catcher, ca):
    server, creds = catcher
    server.script.data_replies = ["451 4.3.0 try again later"] * 5
    [outcome] = asyncio.run(
        deliver_batch(numbered_outgoing(1), _opener(server.starttls_port, ca, creds), _limits(retries=2))
    )
    assert isinstance(outcome, DeliveryError) and outcome.transient and outcome.code == 451
    assert (
        str(outcome)
        == f"localhost:{server.starttls_port} answered 451 '4.3.0 try again later' at DATA; try again later."
    )
    assert server.connections == 3 and server.messages == []


def test_connection_lost_after_data_started_is_maybe_delivered(catcher, ca):
    server, creds = catcher
    server.script.drop_in_data = 5
    [outcome] = asyncio.run(
        deliver_batch(numbered_outgoing(1), _opener(server.starttls_port, ca, creds), _limits(retries=1))
    )
    assert isinstance(outcome, DeliveryError) and outcome.maybe_delivered and outcome.transient
    assert str(outcome).startswith(f"connection to localhost:{server.starttls_port} lost at DATA (")


def test_rejected_credentials_fail_every_message_after_one_login(catcher, ca):
    server, _ = catcher
    wrong = SmtpCredentials("password", "airflow", secrets.token_urlsafe(12))
    outcomes = asyncio.run(
        deliver_batch(numbered_outgoing(4), _opener(server.starttls_port, ca, wrong), _limits(retries=3))
    )
    assert all(isinstance(o, SmtpAuthError) and o.code == 535 for o in outcomes)
    assert len(server.auth_attempts) == 2  # one try and one re-read after the 535: no lock-out by hammering
    assert server.messages == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"concurrency": 0}, "concurrency must be at least 1, not 0."),
        ({"retries": -1}, "retries must be at least 0, not -1."),
        ({"deadline": 0}, "deadline must be above 0, not 0."),
        ({"max_messages_per_minute": -5}, "max_messages_per_minute must be above 0, not -5."),
        ({"retry_backoff": -1}, "retry_backoff must not be negative, not -1."),
    ],
)
def test_bad_limits_are_refused_naming_the_field(kw, message):
    with pytest.raises(ConfigurationError) as info:
        DeliveryLimits(**kw)
    assert str(info.value) == message
