"""Deliver a batch of Outgoing copies over reused sessions: one outcome per copy, retries on a fresh session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from airflow_secure_mail.errors import DeliveryError, SecureMailError, detached
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.transport.smtp import SendReceipt, SmtpSession

log = logging.getLogger(__name__)

Outcome = SendReceipt | SecureMailError
OnOutcome = Callable[[int, Outgoing, Outcome], Awaitable[None]]


@dataclass(frozen=True)
class DeliveryLimits:
    concurrency: int = 1
    retries: int = 3
    retry_backoff: float = 1.0
    deadline: float = 300.0
    max_messages_per_minute: float | None = None
    rate_key: str = ""


async def deliver_batch(
    items: Sequence[Outgoing] | AsyncIterable[Outgoing],
    open_session: Callable[[], Awaitable[SmtpSession]],
    limits: DeliveryLimits,
    on_outcome: OnOutcome | None = None,
) -> list[Outcome]:
    """One outcome per item, in item order, never raising for a single message's failure."""
    results: dict[int, Outcome] = {}
    queue: asyncio.Queue[tuple[int, Outgoing] | None] = asyncio.Queue()
    count = 0

    async def feed() -> None:
        nonlocal count
        if isinstance(items, AsyncIterable):
            async for item in items:
                queue.put_nowait((count, item))
                count += 1
        else:
            for item in items:
                queue.put_nowait((count, item))
                count += 1
        for _ in range(limits.concurrency):
            queue.put_nowait(None)

    async def worker() -> None:
        session: SmtpSession | None = None
        try:
            while (job := await queue.get()) is not None:
                index, item = job
                outcome: Outcome
                try:
                    session, outcome = await _send_with_retries(session, item, open_session, limits)
                except SecureMailError as exc:
                    outcome, session = detached(exc), None
                results[index] = outcome
                if on_outcome is not None:
                    await on_outcome(index, item, outcome)
        finally:
            if session is not None:
                await session.close()

    try:
        async with asyncio.timeout(limits.deadline):
            await asyncio.gather(feed(), *(worker() for _ in range(max(1, limits.concurrency))))
    except TimeoutError:
        pass
    timeout = DeliveryError(
        f"sending did not finish within {limits.deadline:.0f}s; raise extra deadline or check the server.",
        transient=True,
    )
    return [results.get(i, timeout) for i in range(count)]


async def _send_with_retries(
    session: SmtpSession | None,
    item: Outgoing,
    open_session: Callable[[], Awaitable[SmtpSession]],
    limits: DeliveryLimits,
) -> tuple[SmtpSession | None, SendReceipt]:
    """Transient failures get a fresh connection with jittered exponential backoff (tenacity)."""
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

    attempts = 0
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(limits.retries + 1),
        wait=wait_exponential_jitter(initial=limits.retry_backoff, max=max(limits.retry_backoff, 30.0)),
        retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.transient),
        reraise=True,
    ):
        with attempt:
            attempts += 1
            if session is None:
                session = await open_session()
            try:
                receipt = await session.send(item.sender, item.recipients, item.data, message_id=item.message_id)
            except DeliveryError as exc:
                if exc.transient:
                    log.warning("transient SMTP failure (attempt %d): %s", attempts, exc)
                await session.close()
                session = None
                raise
    return session, replace(receipt, attempts=attempts)
