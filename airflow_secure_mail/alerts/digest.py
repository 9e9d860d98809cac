"""AlertDigest: the Alertmanager knobs (group_by, group_wait, group_interval, repeat_interval, ...) and its API.

The top of the alerts wing. The fields and their validation are :class:`~.knobs.DigestKnobs`; this class adds
the methods users call (``record``, ``record_context``, ``flush``, ``prune``, ``store``), each handing the knobs
(``self``) to the module that does the work. Those modules take the knobs as a parameter and never import this
one, so the wing's imports only go down. The imports sit inside the methods so that parsing a DAG that builds an
``AlertDigest`` does not load storage, planning or rendering.

``LABELS``, ``Duration``, ``STATE_SCHEMES``, ``check_state_location`` and ``parse_duration`` stay importable from
here (their homes are :mod:`.events` and :mod:`.knobs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.alerts.events import LABELS
from airflow_secure_mail.alerts.knobs import STATE_SCHEMES, DigestKnobs, Duration, check_state_location, parse_duration

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.events import Event
    from airflow_secure_mail.alerts.state import DigestState

__all__ = ["LABELS", "STATE_SCHEMES", "AlertDigest", "Duration", "check_state_location", "parse_duration"]


@dataclass(frozen=True)  # no new fields: regenerated so that it stays frozen against new attributes too
class AlertDigest(DigestKnobs):
    """Fold alert callbacks into digests, with Alertmanager's semantics and state on object storage.

    ``group_by=()`` puts every alert in one group (as an empty ``group_by`` does in Alertmanager).
    ``state`` is an ObjectStoragePath location (``s3://bucket/prefix`` with ``state_conn_id``, or ``file:///path``;
    no other scheme)
    shared by every worker. ``clock`` (tests) replaces the wall clock; it must return aware datetimes.
    Its fields and their checks are :class:`~.knobs.DigestKnobs`'.
    """

    def store(self) -> DigestState:
        from airflow_secure_mail.alerts.state import DigestState

        return DigestState.of(self)

    def record(self, event: Event) -> bool:
        """Store ``event`` once; True if this call stored it, False if it was already there."""
        from airflow_secure_mail.alerts.callback import record

        return record(self, event)

    def record_context(self, context: Mapping[str, Any]) -> Event:
        """Record the event a callback context stands for and return it."""
        from airflow_secure_mail.alerts.callback import record_context

        return record_context(self, context)

    def flush(self, notifier: Any, *, group: Mapping[str, str] | None = None) -> list[str]:
        """Send every digest that is due (only ``group``'s when given); returns the Message-IDs sent.

        Groups are flushed on their own: if one could not be sent (or left out an unreadable event), the
        others still are, then ``DigestFlushError`` names it.
        """
        from airflow_secure_mail.alerts.flush import flush

        return flush(self, notifier, group=group)

    def prune(self) -> int:
        """Delete events, index entries and claims older than ``retention`` that digests have reported."""
        from airflow_secure_mail.alerts.flush import prune

        return prune(self)
