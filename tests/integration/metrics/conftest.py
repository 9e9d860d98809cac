from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.metrics.udp import StatsdListener, statsd_stats


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdListener]:
    """Airflow's Stats in this process sends to a StatsD listener on loopback (restored afterwards)."""
    with statsd_stats(monkeypatch) as listener:
        yield listener
