"""What ``SecureEmailNotifier(digest=...)`` does with a callback: record the event, send the group's due digest.

Recording lives here too (``AlertDigest.record`` and ``record_context`` call it): with the knobs passed in, this
module sits below ``digest`` and above flush, state and events, so nothing in the alerts wing imports back up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.alerts.events import Event, alerting_kinds, event_from_context
from airflow_secure_mail.alerts.flush import aflush_round
from airflow_secure_mail.alerts.knobs import DigestKnobs
from airflow_secure_mail.alerts.silences import printable
from airflow_secure_mail.alerts.state import DigestState, group_id

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.flush import _Round

log = logging.getLogger(__name__)


def record(digest: DigestKnobs, event: Event) -> bool:
    """Store ``event`` once; True if this call stored it, False if it was already there."""
    return DigestState.of(digest).record_event(digest.group_of(event), event)


def record_context(digest: DigestKnobs, context: Mapping[str, Any]) -> Event:
    """Record the event a callback context stands for and return it."""
    event = event_from_context(context, digest.now())
    record(digest, event)
    return event


async def anotify(digest: DigestKnobs, notifier: Any, context: Mapping[str, Any]) -> list[str]:
    """The next event after a slot ends sends that slot: flush this event's group right away.

    The task log then says where the alert went: into a digest sent now, into one whose next send is due at a
    given time, or held by a silence.
    """
    event = await asyncio.to_thread(record_context, digest, context)
    found = await aflush_round(digest, notifier, group=digest.group_of(event))
    log.info("%s", where_it_went(digest, event, found))
    return found.result()


def where_it_went(digest: DigestKnobs, event: Event, found: _Round) -> str:
    """One line for the task log: which digest the event's alert went to, and when that digest goes out."""
    gid = group_id(digest.group_of(event))
    what = (
        f"alert for {event.name}"
        if event.kind in alerting_kinds(digest.notify_on_retry)
        else f"{event.kind.value} of {event.name}"
    )
    decision = found.decisions.get(gid)
    silence = next((s for e, s in decision.held if e.event_id == event.id), None) if decision else None
    if silence is not None:
        return (
            f"{what} held by silence {silence.id} ({printable(silence.reason)}) until "
            f"{silence.end:%Y-%m-%d %H:%M} UTC; a digest reports it after the silence ends"
        )
    sent = [(claim, message_id) for claim, message_id in found.sent_claims if claim.gid == gid]
    if sent:
        claim, message_id = sent[-1]
        return f"{what} folded into digest {gid} (digest {claim.n} sent now as {message_id})"
    if gid in found.problems:
        return f"{what} folded into digest {gid}, which could not be sent now (see the error that follows)"
    if decision is not None and decision.claim is not None:
        return f"{what} folded into digest {gid} (digest {decision.claim.n} is being sent by another worker)"
    if decision is not None and decision.due is not None:
        after = f"{decision.due:%Y-%m-%d %H:%M:%S} UTC"
        return f"{what} folded into digest {gid} (next send after {after}, its {decision.knob})"
    return f"{what} recorded in digest {gid} (no new alert to send)"
