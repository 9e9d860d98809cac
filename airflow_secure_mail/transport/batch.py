"""Deliver a batch of ``Outgoing`` over a few reused sessions: one outcome per message, never one failure for all.

Transient failures are retried on a fresh session with jittered backoff; throttling replies pause every session
of the connection (a process-wide rate) and are retried without using up ``retries``; a refused greeting pauses
every session's next connect. ``deadline`` bounds it all, cancelling included: the call returns by then plus a
second or two, every wait cut to what is left of it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_secure_mail import _metrics
from airflow_secure_mail.errors import ConfigurationError, DeliveryError, SecureMailError, detached
from airflow_secure_mail.transport.budget import BudgetLimits, RelayBudget, current_priority, wall_until
from airflow_secure_mail.transport.deadline import STOP_GRACE, run_until
from airflow_secure_mail.transport.rate import RateLimiter, rate_limiter
from airflow_secure_mail.transport.receipt import SendReceipt
from airflow_secure_mail.transport.replies import is_throttling

if TYPE_CHECKING:
    from airflow_secure_mail.mail.outgoing import Outgoing
    from airflow_secure_mail.transport.session import SmtpSession

log = logging.getLogger(__name__)

Outcome = SendReceipt | SecureMailError
OutcomeCallback = Callable[[int, "Outgoing", Outcome], Awaitable[None]]
SessionOpener = Callable[[], Awaitable["SmtpSession"]]
_MAX_BACKOFF = 60.0
_MAILBOX_THROTTLES = 4
_LEASE_RENEW = 30.0
"""While a session waits for its message's slot, its connection lease is renewed this often (seconds)."""
"""Waits for a recipient throttled at RCPT (e.g. ``450 4.2.1``) before this try moves on without it."""


@dataclass(frozen=True)
class DeliveryLimits:
    """How hard a batch may push one relay; ``rate_key`` (the conn id) shares throttling pauses across a process,
    ``budget_key`` (the relay, :func:`~airflow_secure_mail.transport.budget.relay_key`) the relay budget across
    processes when ``budget_url`` is set (across this process's batches otherwise)."""

    concurrency: int = 1
    retries: int = 3
    retry_backoff: float = 1.0
    deadline: float = 300.0
    max_messages_per_minute: float | None = None
    rate_key: str = ""
    max_recipients_per_day: int | None = None
    max_connections: int | None = None
    budget_url: str | None = None
    alert_reserve: float = 0.2
    budget_key: str = ""

    def budget(self) -> BudgetLimits:
        """The relay budget these limits set."""
        return BudgetLimits(
            relay=self.budget_key or self.rate_key,
            per_minute=self.max_messages_per_minute,
            recipients_per_day=self.max_recipients_per_day,
            max_connections=self.max_connections,
            reserve=self.alert_reserve,
            url=self.budget_url,
        )

    def __post_init__(self) -> None:
        for name, value, lowest in (("concurrency", self.concurrency, 1), ("retries", self.retries, 0)):
            if value < lowest:
                raise ConfigurationError(f"{name} must be at least {lowest}, not {value}.")
        for name, number in (("deadline", self.deadline), ("max_messages_per_minute", self.max_messages_per_minute)):
            if number is not None and number <= 0:
                raise ConfigurationError(f"{name} must be above 0, not {number}.")
        if self.retry_backoff < 0:
            raise ConfigurationError(f"retry_backoff must not be negative, not {self.retry_backoff}.")
        for name, count in (("max_recipients_per_day", self.max_recipients_per_day),
                            ("max_connections", self.max_connections)):  # fmt: skip
            if count is not None and count < 1:
                raise ConfigurationError(f"{name} must be at least 1, not {count}; leave it unset for no limit.")


async def deliver_batch(
    items: Sequence[Outgoing] | AsyncIterable[Outgoing],
    open_session: SessionOpener,
    limits: DeliveryLimits,
    on_outcome: OutcomeCallback | None = None,
) -> list[Outcome]:
    """One outcome per message taken, in item order; a message's failure is its outcome, never raised.

    A message that some recipients accepted is a receipt (the others in ``refused``), never an error: a resend
    would reach the accepted ones twice. A permanent failure to open a session (TLS, AUTH) fails every message
    left without trying again, so a wrong password is tried once per batch, not once per message.

    ``on_outcome`` is awaited in its own task as soon as a message's outcome is known (while others still
    send) and is not cancelled by the deadline; if it raises, no further message is taken and the error is
    raised once the messages in flight are done. Items of an ``AsyncIterable`` are taken as they arrive; after
    the deadline no further item is taken from it (a ``Sequence`` gets a deadline error for each one left).
    """
    return await _Batch(open_session, limits, on_outcome).run(items)


class _DeadlineReached(Exception):
    """A worker found the deadline passed before its next step; it ends, and the message gets a deadline outcome."""


class _Attempts:
    """One message's tries: transient failures count against ``retries``, throttling does not."""

    def __init__(self, limits: DeliveryLimits, recipients: tuple[str, ...], end: float) -> None:
        self.limits = limits
        self.end = end
        self.total = 0
        self.failures = 0
        self.throttles = 0
        self.mailbox_throttles = 0
        self.recipients = recipients
        """Who the next try goes to: all, or those a throttling relay refused at RCPT last time."""
        self.partial: SendReceipt | None = None
        """What earlier tries delivered, when some recipients were throttled."""

    def record(self, error: DeliveryError) -> None:
        if error.throttled:
            self.throttles += 1
            self.mailbox_throttles += bool(error.refused)  # refused at RCPT: that mailbox, not the whole relay
        else:
            self.failures += 1

    def exhausted(self, _state: Any) -> bool:
        """Out of ``retries``, or a mailbox still throttled at RCPT after a few waits: this try gives up on it
        (the task's next try sends it) so one busy mailbox cannot hold every other message to the deadline."""
        return self.failures > self.limits.retries or self.mailbox_throttles > _MAILBOX_THROTTLES

    def backoff(self, count: int) -> float:
        """Exponential from ``retry_backoff``, capped, with up to one more ``retry_backoff`` of jitter."""
        base = self.limits.retry_backoff
        return min(base * 2.0 ** max(count - 1, 0), _MAX_BACKOFF) + random.uniform(0, base)

    def wait(self, state: Any) -> float:
        """Throttling waits at the shared limiter (every session pauses), a plain failure here; never past the end."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, DeliveryError) and error.throttled:
            return 0.0
        return max(min(self.backoff(self.failures), self.end - time.monotonic()), 0.0)


def _raise_for_throttled_recipients(sent: SendReceipt, tries: _Attempts) -> None:
    """Recipients a throttling relay refused at RCPT get the same bytes again; the accepted ones never do."""
    throttled = {rcpt: reply for rcpt, reply in sent.refused.items() if is_throttling(*reply)}
    if throttled:
        tries.recipients = tuple(throttled)
        codes = ", ".join(sorted({str(code) for code, _ in throttled.values()}))
        raise DeliveryError(
            f"the relay is throttling {len(throttled)} recipient(s) at RCPT ({codes}); sending to them again.",
            code=next(iter(throttled.values()))[0],
            refused=throttled,
            throttled=True,
        )


def _retryable(error: BaseException) -> bool:
    return isinstance(error, DeliveryError) and error.transient


def _count_retry(state: Any) -> None:
    """A transient failure about to be tried again (throttling is counted as ``throttled`` instead)."""
    error = state.outcome.exception() if state.outcome else None
    if not (isinstance(error, DeliveryError) and error.throttled):
        _metrics.incr("retried")


def _count(outcome: Outcome, seconds: float) -> None:
    """A copy's metrics once its outcome is final: accepted (by one recipient at least) or not, recipients,
    and the delivery latency: taken for sending → the relay's final reply (connect, retries and waits included)."""
    if not isinstance(outcome, SendReceipt):
        return
    if outcome.accepted:
        _metrics.incr("sent")
    _metrics.incr("recipients", len(outcome.accepted), outcome="accepted")
    _metrics.incr("recipients", len(outcome.refused), outcome="refused")
    _metrics.timing("delivery_latency", seconds)


class _Source:
    """The batch's items, taken one at a time by the workers, numbered in the order taken."""

    def __init__(self, items: Sequence[Outgoing] | AsyncIterable[Outgoing]) -> None:
        self._aiter: AsyncIterator[Outgoing] | None = None
        self._iter: Iterator[Outgoing] | None = None
        self.size: int | None = None
        if isinstance(items, AsyncIterable):
            self._aiter = aiter(items)
        else:
            self._iter, self.size = iter(items), len(items)
        self._lock = asyncio.Lock()
        self.taken: list[Outgoing] = []
        self.error: BaseException | None = None
        self.closed = False

    def stop(self) -> None:
        """Hand out no more messages (a callback failed)."""
        self.closed = True

    async def take(self) -> tuple[int, Outgoing] | None:
        async with self._lock:
            if self.closed:
                return None
            try:
                item = await anext(self._aiter) if self._aiter is not None else next(self._iter or iter(()))
            except (StopIteration, StopAsyncIteration):
                self.closed = True
                return None
            except Exception as exc:
                self.error, self.closed = exc, True
                return None
            self.taken.append(item)
            return len(self.taken) - 1, item

    async def left_over(self) -> Iterable[Outgoing]:
        """What a Sequence still holds; an async source is closed instead (its producer stops there, soon)."""
        self.closed = True
        if self._iter is not None:
            return list(self._iter)
        close = getattr(self._aiter, "aclose", None)
        if close is not None:
            try:
                await asyncio.wait_for(close(), timeout=STOP_GRACE)
            except TimeoutError:
                log.warning("the message source did not close within %.1fs of the deadline", STOP_GRACE)
        return ()


class _Outcomes:
    """Each message's final outcome, kept once and told to ``on_outcome`` (a task each, awaited by ``drain``)."""

    def __init__(self, on_outcome: OutcomeCallback | None) -> None:
        self.on_outcome = on_outcome
        self.results: dict[int, Outcome] = {}
        self.callbacks: list[asyncio.Task[None]] = []
        self.error: BaseException | None = None
        """The first exception a callback raised: the batch stops taking messages and raises it."""
        self.on_error: Callable[[], None] = lambda: None
        self.settled = False
        """Every outcome is final: a worker left behind can no longer report one."""

    def report(self, index: int, item: Outgoing, outcome: Outcome) -> None:
        if self.settled:  # a worker left behind after the deadline: its message already has its outcome
            return
        self.results[index] = outcome
        if self.on_outcome is None:
            return
        task = asyncio.ensure_future(self.on_outcome(index, item, outcome))
        task.add_done_callback(self._done)
        self.callbacks.append(task)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self.error is None:
            self.error = task.exception()
            self.on_error()

    async def drain(self) -> None:
        """Settle, then wait for every callback (their errors are in ``error``)."""
        self.settled = True
        await asyncio.gather(*self.callbacks, return_exceptions=True)


class _Batch:
    def __init__(self, open_session: SessionOpener, limits: DeliveryLimits, on_outcome: OutcomeCallback | None):
        self.open_session = open_session
        self.limits = limits
        # The relay budget spaces messages (evenly, alerts first); the limiter only adds throttling pauses.
        self.limiter: RateLimiter = rate_limiter(limits.rate_key, None)
        self.budget = RelayBudget(limits.budget())
        self.priority = current_priority()
        self.budget_error: DeliveryError | None = None
        """Why the budget stopped the batch (no slot or connection before the deadline): each message left gets it."""
        self.leases: dict[int, str] = {}
        """id(session) → its connection lease."""
        self.outcomes = _Outcomes(on_outcome)
        self.last_error: dict[int, DeliveryError] = {}
        self.tries: dict[int, _Attempts] = {}
        self.in_flight: set[int] = set()
        self.last_throttle: DeliveryError | None = None
        self.fatal: SecureMailError | None = None
        self.source: _Source
        self.end = 0.0  # the deadline, on time.monotonic
        self.stopped = False  # the deadline ran out (or the call was cancelled): nothing connects or sends any more

    async def run(self, items: Sequence[Outgoing] | AsyncIterable[Outgoing]) -> list[Outcome]:
        self.source = source = _Source(items)
        self.outcomes.on_error = source.stop
        workers = self.limits.concurrency if source.size is None else max(1, min(self.limits.concurrency, source.size))
        self.end = time.monotonic() + self.limits.deadline
        cut_off = await run_until((self._worker() for _ in range(workers)), self.end, self._stop)
        if cut_off or self.stopped:
            self._after_deadline(await source.left_over())
        await self.outcomes.drain()
        for error in (self.outcomes.error, source.error):
            if error is not None:
                raise error
        return [self.outcomes.results[index] for index in range(len(source.taken))]

    def _stop(self) -> None:
        self.stopped = True

    def _left(self) -> float:
        return self.end - time.monotonic()

    async def _worker(self) -> None:
        # This worker's session, reused from message to message; whoever opens one puts it here, so the
        # one opened in a try that the deadline cut off is closed below too.
        holder: list[SmtpSession | None] = [None]
        try:
            while (taken := await self.source.take()) is not None:
                index, item = taken
                started = time.monotonic()
                outcome = await self._deliver(holder, index, item)
                self.outcomes.report(index, item, outcome)
                _count(outcome, time.monotonic() - started)
        except _DeadlineReached:
            self.stopped = True
        finally:
            session = holder[0]
            if session is not None and self.stopped:
                session.abort()  # the deadline is past: no waiting for the server's answer to QUIT
                await self._release(session)
            elif session is not None:
                await session.close(timeout=min(5.0, self._left()))
                await self._release(session)

    async def _release(self, session: SmtpSession) -> None:
        """The session is closed (or gone): its connection lease goes back to the budget."""
        holder = self.leases.pop(id(session), None)
        if holder is not None:
            await asyncio.shield(self.budget.release(holder))

    async def _deliver(self, holder: list[SmtpSession | None], index: int, item: Outgoing) -> Outcome:
        """Send one message, retrying as the limits allow, on the session in ``holder`` (replaced as needed)."""
        from tenacity import AsyncRetrying, retry_if_exception

        if self.fatal is not None:
            return self.fatal
        tries = self.tries[index] = _Attempts(self.limits, item.recipients, self.end)
        error: SecureMailError | None = None
        try:
            retrying = AsyncRetrying(
                stop=tries.exhausted,
                wait=tries.wait,
                retry=retry_if_exception(_retryable),
                before_sleep=_count_retry,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    receipt = await self._attempt(holder, index, item, tries)
        except SecureMailError as exc:
            error = detached(exc)
        if error is not None and tries.partial is None:
            return error
        # Some recipients may have it already after a throttled RCPT: then that receipt is the outcome.
        return replace(tries.partial or receipt, attempts=tries.total)

    async def _attempt(
        self, holder: list[SmtpSession | None], index: int, item: Outgoing, tries: _Attempts
    ) -> SendReceipt:
        """One try on the held session (opened if needed); a failure leaves the session reusable or None."""
        tries.total += 1
        opening = False
        try:
            session = holder[0]
            if session is None or not session.is_open:
                if session is not None:  # the server closed it
                    holder[0] = None
                    await self._release(session)
                opening = True
                session = holder[0] = await self._open()
                opening = False
            await self._budget_slot(session, tries)
            if not await self.limiter.acquire(self.end) or self.stopped or self._left() <= 0:
                # Also for a worker whose cancellation was swallowed: nothing is sent after the deadline.
                raise _DeadlineReached
            self.in_flight.add(index)
            sent = await session.send(item.sender, tries.recipients, item.data, message_id=item.message_id)
            self.in_flight.discard(index)  # not in a finally: cut off by the deadline, it may have been delivered
            receipt = tries.partial = sent if tries.partial is None else tries.partial.then(sent)
            _raise_for_throttled_recipients(sent, tries)
        except DeliveryError as exc:
            self.in_flight.discard(index)
            await self._failed(holder, index, exc, tries, opening)
            raise
        self.limiter.accepted()
        return receipt

    async def _budget_slot(self, session: SmtpSession, tries: _Attempts) -> None:
        """Before a message: bulk stops while the relay is exhausted; the message's slot (waited for, the
        session's lease renewed meanwhile); its recipients counted against the daily quota."""
        await self.budget.check_not_exhausted(self.priority)
        start = await self.budget.slot(self.priority, wall_until(self.end))
        if start is None:
            self.budget_error = self.budget.no_slot(self.priority)
            raise _DeadlineReached
        holder = self.leases.get(id(session))
        while (left := start - time.time()) > 0:
            await asyncio.sleep(min(left, _LEASE_RENEW))
            if holder is not None and not await self.budget.keep(holder):
                raise self.budget.lease_lost()
        if holder is not None and not await self.budget.keep(holder):
            raise self.budget.lease_lost()
        await self.budget.count_recipients(len(tries.recipients))

    async def _open(self) -> SmtpSession:
        """A new session once the shared gate allows and the budget lends a connection; a permanent failure
        (TLS, AUTH) ends the batch."""
        if self.priority == "bulk":
            await self.budget.check_not_exhausted(self.priority)
        if not await self.limiter.before_connect(self.end) or self.stopped:
            raise _DeadlineReached
        lease = await self.budget.lease(wall_until(self.end))
        if lease is None:
            self.budget_error = self.budget.no_lease()
            raise _DeadlineReached
        started = time.monotonic()
        try:
            session = await self.open_session()
        except BaseException as exc:
            if isinstance(exc, DeliveryError) and exc.code == 432:  # too many connections: fewer, for a while
                await self.budget.too_many_connections()
            await asyncio.shield(self.budget.release(lease))
            if not isinstance(exc, SecureMailError):
                raise
            if isinstance(exc, DeliveryError) and exc.exhausted:
                await self.budget.mark_exhausted()
            if isinstance(exc, DeliveryError) and exc.throttled:
                pause = self.limiter.refused(started, self.limits.retry_backoff)
                log.warning("SMTP relay refused a connection (%s); no session connects for %.1fs", exc.code, pause)
            elif not (isinstance(exc, DeliveryError) and exc.transient):
                self.fatal = exc
            raise
        self.limiter.connected()
        self.leases[id(session)] = lease
        return session

    async def _failed(
        self, holder: list[SmtpSession | None], index: int, error: DeliveryError, tries: _Attempts, opening: bool
    ) -> None:
        """Count the failure; throttling pauses every session, another transient failure drops this one."""
        tries.record(error)
        self.last_error[index] = error
        if error.exhausted and error.code is not None:  # the relay said so (not our own count): for everyone
            await self.budget.mark_exhausted()
        if error.throttled:
            _metrics.incr("throttled")
            self.last_throttle = error
            if not opening:  # a refused connect has paused the connects already (in _open)
                pause = tries.backoff(tries.throttles)
                log.warning("SMTP relay throttling (%s); every session pauses %.1fs", error.code, pause)
                self.limiter.throttled(pause)
        elif error.transient:
            log.warning("transient SMTP failure (attempt %d): %s", tries.total, error)
            session, holder[0] = holder[0], None
            if session is not None:
                await session.close(timeout=min(5.0, self._left()))
                await self._release(session)

    def _after_deadline(self, left_over: Iterable[Outgoing]) -> None:
        """Every message without an outcome gets one saying the deadline ran out (and why, if throttled)."""
        for index, item in enumerate(self.source.taken):
            if index not in self.outcomes.results:
                partial = self.tries[index].partial if index in self.tries else None
                last = self.last_error.get(index) or self.last_throttle
                cut_off = _deadline_error(self.limits.deadline, last, index in self.in_flight)
                if self.budget_error is not None and index not in self.in_flight:
                    cut_off = self.budget_error
                self.outcomes.report(index, item, partial or cut_off)
        for item in left_over:
            self.source.taken.append(item)
            cut_off = self.budget_error or _deadline_error(self.limits.deadline, self.last_throttle)
            self.outcomes.report(len(self.source.taken) - 1, item, cut_off)
        self.outcomes.settled = True


def _deadline_error(deadline: float, last: DeliveryError | None, maybe_delivered: bool = False) -> DeliveryError:
    """A message the deadline cut off; ``last`` (its own or the batch's) says if the relay was throttling."""
    if last is not None and last.throttled:
        return DeliveryError(
            f"the relay was still throttling when the deadline of {deadline:.0f}s ran out: "
            f"{str(last).rstrip('.')}; lower max_messages_per_minute or raise extra deadline.",
            code=last.code,
            throttled=True,
            maybe_delivered=maybe_delivered,
        )
    return DeliveryError(
        f"sending did not finish within the deadline of {deadline:.0f}s; raise extra deadline or check the server.",
        transient=True,
        maybe_delivered=maybe_delivered,
    )
