"""One sending process for the relay budget tests: ``python -m tests.integration.transport.budget_sender
'<json>'`` delivers ``count`` messages to the budget relay at ``port`` and prints one JSON line of outcomes.

The JSON: port, count, tag, recipients (per message), priority, concurrency, limits (DeliveryLimits fields).
"""

from __future__ import annotations

import asyncio
import json
import sys

from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.pipeline import budget_store
from airflow_secure_mail.transport.batch import DeliveryLimits, deliver_batch
from airflow_secure_mail.transport.budget import send_priority
from airflow_secure_mail.transport.session import SendReceipt, SmtpCredentials, SmtpSession
from airflow_secure_mail.transport.tls import TLSPolicy


def opener(port: int):  # type: ignore[no-untyped-def]
    policy = TLSPolicy(host="127.0.0.1", port=port, security="none")

    async def credentials(fresh: bool) -> SmtpCredentials:
        return SmtpCredentials(mechanism="none")

    async def open_session() -> SmtpSession:
        session = SmtpSession(policy, credentials, timeout=10)
        await session.open()
        return session

    return open_session


def messages(count: int, tag: str, recipients: int) -> list[Outgoing]:
    return [
        Outgoing(
            sender="airflow@example.com",
            recipients=tuple(f"ops+{tag}{i}r{r}@example.com" for r in range(recipients)),
            data=f"Message-ID: <{tag}{i}@test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n".encode(),
            message_id=f"<{tag}{i}@test>",
        )
        for i in range(count)
    ]


async def main(spec: dict) -> list[str]:  # type: ignore[type-arg]
    budget_store.register()
    limits = DeliveryLimits(**{"retries": 0, "retry_backoff": 0.05, "rate_key": spec["tag"], **spec["limits"]})
    items = messages(spec["count"], spec["tag"], spec.get("recipients", 1))
    with send_priority(spec.get("priority", "bulk")):
        outcomes = await deliver_batch(items, opener(spec["port"]), limits)
    return ["sent" if isinstance(o, SendReceipt) else f"error: {o}" for o in outcomes]


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
