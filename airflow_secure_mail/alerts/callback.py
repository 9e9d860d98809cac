"""What ``SecureEmailNotifier(digest=...)`` does with a callback: record the event, send the group's due digest.

Recording lives here too (``AlertDigest.record`` and ``record_context`` call it): with the knobs passed in, this
module sits below ``digest`` and above flush, state and events, so nothing in the alerts wing imports back up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from airflow_secure_mail.alerts.events import Event, event_from_context
from airflow_secure_mail.alerts.flush import aflush
from airflow_secure_mail.alerts.knobs import DigestKnobs
from airflow_secure_mail.alerts.state import DigestState


def record(digest: DigestKnobs, event: Event) -> bool:
    """Store ``event`` once; True if this call stored it, False if it was already there."""
    return DigestState.of(digest).record_event(digest.group_of(event), event)


def record_context(digest: DigestKnobs, context: Mapping[str, Any]) -> Event:
    """Record the event a callback context stands for and return it."""
    event = event_from_context(context, digest.now())
    record(digest, event)
    return event


async def anotify(digest: DigestKnobs, notifier: Any, context: Mapping[str, Any]) -> list[str]:
    """The next event after a slot ends sends that slot: flush this event's group right away."""
    event = await asyncio.to_thread(record_context, digest, context)
    return await aflush(digest, notifier, group=digest.group_of(event))
