"""Counters, timers and gauges through Airflow's own metrics (StatsD or OpenTelemetry, as deployed).

Every name is prefixed ``secure_mail.``; a metrics failure never fails a send. Airflow drops StatsD metrics
silently when the ``statsd`` package is missing: install ``airflow-secure-mail[statsd]``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
PREFIX = "secure_mail"


def _stats() -> Any:
    from airflow.sdk.observability.stats import Stats

    return Stats


def incr(name: str, count: int = 1, **tags: Any) -> None:
    """Add ``count`` to counter ``secure_mail.<name>`` (tags where the backend supports them)."""
    try:
        _stats().incr(f"{PREFIX}.{name}", count, tags=_tags(tags))
    except Exception:  # metrics never fail a send
        log.debug("metric %s not sent", name, exc_info=True)


def timing(name: str, seconds: float, **tags: Any) -> None:
    """Record a duration (seconds) under timer ``secure_mail.<name>``."""
    from datetime import timedelta

    try:
        _stats().timing(f"{PREFIX}.{name}", timedelta(seconds=seconds), tags=_tags(tags))
    except Exception:
        log.debug("metric %s not sent", name, exc_info=True)


def gauge(name: str, value: float, **tags: Any) -> None:
    """Set gauge ``secure_mail.<name>``."""
    try:
        _stats().gauge(f"{PREFIX}.{name}", value, tags=_tags(tags))
    except Exception:
        log.debug("metric %s not sent", name, exc_info=True)


def _tags(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items() if v is not None}
