"""What ``SecureEmailNotifier(digest=...)`` does with a callback: record the event, send the group's due digest."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.digest import AlertDigest


async def anotify(digest: AlertDigest, notifier: Any, context: Mapping[str, Any]) -> list[str]:
    """The next event after a slot ends sends that slot: flush this event's group right away."""
    from airflow_secure_mail.alerts.flush import aflush

    event = await asyncio.to_thread(digest.record_context, context)
    return await aflush(digest, notifier, group=digest.group_of(event))
