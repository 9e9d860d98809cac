"""Counters, timers and gauges through Airflow's own metrics (StatsD, Datadog or OpenTelemetry, as deployed).

Every name is prefixed ``secure_mail.`` (after Airflow's own ``[metrics] statsd_prefix``/``otel_prefix``).
Plain StatsD drops tags (Airflow's ``SafeStatsdLogger`` passes only the name to ``statsd``), so the tags that
matter, ``NAME_TAGS``, are also folded into a second name: ``incr("refused", rule="spam")`` emits
``secure_mail.refused`` (the total, with ``rule=spam`` as a tag where the backend keeps tags) and
``secure_mail.refused.spam``. The names are listed in docs/metrics.md.

A metrics failure never fails a send, nor slows it: the StatsD client resolves its host once per process
(when Airflow builds it) and sends UDP without waiting; every call here swallows what the backend raises.
Airflow drops StatsD metrics when the ``statsd`` package is missing (one ERROR line from its stats module,
then nothing); :func:`check_backend` says so once, in the task log, with the fix.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)
PREFIX = "secure_mail"

NAME_TAGS = ("rule", "kind", "reason", "verdict", "outcome", "host")
"""Tags whose value is also folded into the name (in this order), for backends that drop tags."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_checked = False
_lock = threading.Lock()


def incr(name: str, count: int = 1, **tags: Any) -> None:
    """Add ``count`` to counter ``secure_mail.<name>`` (and ``secure_mail.<name>.<tag value>``, see NAME_TAGS)."""
    if count:
        _emit("incr", name, count, tags)


def timing(name: str, seconds: float, **tags: Any) -> None:
    """Record a duration (seconds; StatsD gets milliseconds) under timer ``secure_mail.<name>``."""
    _emit("timing", name, timedelta(seconds=max(seconds, 0.0)), tags)


def gauge(name: str, value: float, **tags: Any) -> None:
    """Set gauge ``secure_mail.<name>``."""
    _emit("gauge", name, value, tags)


def names(name: str, **tags: Any) -> list[str]:
    """The full names one call emits: the total, then the one with the NAME_TAGS values folded in."""
    full = f"{PREFIX}.{name}"
    parts = [_part(tags[key]) for key in NAME_TAGS if tags.get(key) is not None]
    return [full, ".".join([full, *parts])] if parts else [full]


def _emit(kind: str, name: str, value: Any, tags: dict[str, Any]) -> None:
    try:
        stats = _stats()
        clean = {k: str(v) for k, v in tags.items() if v is not None}
        for full in names(name, **tags):
            getattr(stats, kind)(full, value, tags=clean)
    except Exception:  # metrics never fail a send
        log.debug("metric %s not sent", name, exc_info=True)


def _part(value: Any) -> str:
    """A tag value as one StatsD name segment: no dots (the hierarchy), only the characters Airflow allows."""
    return _UNSAFE.sub("_", str(value))[:60] or "_"


def _stats() -> Any:
    from airflow.sdk.observability.stats import Stats

    if not _checked:
        check_backend()
    return Stats


def check_backend() -> None:
    """Once per process: make sure Airflow's Stats is configured, and say in the log when StatsD is on but
    the ``statsd`` package is missing (Airflow then drops every metric)."""
    global _checked
    with _lock:
        if _checked:
            return
        _checked = True
        try:
            _initialize_if_needed()
            missing = statsd_missing()
        except Exception:
            log.debug("could not check Airflow's metrics settings", exc_info=True)
            return
    if missing:
        log.warning(
            "[metrics] statsd_on is true but the 'statsd' package is not installed: Airflow drops every metric, "
            'ours included; install "airflow-secure-mail[statsd]" (or "apache-airflow[statsd]") on the workers.'
        )


def statsd_missing() -> bool:
    """True when ``[metrics] statsd_on`` asks for StatsD (and not Datadog) but ``statsd`` cannot be imported."""
    from airflow.sdk.configuration import conf

    if conf.getboolean("metrics", "statsd_datadog_enabled", fallback=False):
        return False
    if not conf.getboolean("metrics", "statsd_on", fallback=False):
        return False
    return importlib.util.find_spec("statsd") is None


def _initialize_if_needed() -> None:
    """Airflow configures Stats in the task runner (and when ``airflow.sdk.serde`` is imported); a process that
    did neither (a CLI, ``dag.test()`` before any XCom) would send to Airflow's no-op logger."""
    from airflow.sdk._shared.observability.metrics import stats as module

    if getattr(module, "_factory", True) is not None:
        return
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability.metrics import stats_utils

    module.initialize(
        factory=stats_utils.get_stats_factory(),
        export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
    )


def _reset_for_tests() -> None:
    global _checked
    _checked = False
