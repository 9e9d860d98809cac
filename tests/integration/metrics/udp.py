"""A StatsD listener on loopback: the UDP datagrams sent to it, parsed into (name, value, type) lines.

No thread and no waiting: on loopback a datagram is in the receive buffer once ``sendto`` has returned, so
reading what is there after the sender is done sees all of it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Line:
    name: str
    value: float
    kind: str  # c (counter), ms (timer), g (gauge)


class StatsdListener:
    """Binds 127.0.0.1 on a free port at once; :attr:`lines` reads every datagram received so far."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.raw: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return
            self.raw.extend(data.decode("ascii").splitlines())

    @property
    def lines(self) -> list[Line]:
        self._drain()
        out = []
        for text in self.raw:
            name, _, rest = text.partition(":")
            value, _, kind = rest.partition("|")
            out.append(Line(name, float(value), kind.split("|")[0]))
        return out

    def total(self, name: str) -> float:
        """The sum of counter ``name`` (Airflow's prefix included, e.g. ``airflow.secure_mail.sent``)."""
        return sum(line.value for line in self.lines if line.name == name and line.kind == "c")

    def values(self, name: str, kind: str) -> list[float]:
        return [line.value for line in self.lines if line.name == name and line.kind == kind]

    def names(self) -> set[str]:
        return {line.name for line in self.lines}


@contextlib.contextmanager
def statsd_stats(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Iterator[StatsdListener]:
    """Airflow's Stats in this process sending to a new listener through its own StatsD factory (``[metrics]``
    from the environment), put back as it was afterwards."""
    from airflow.sdk._shared.observability.metrics import stats as module
    from airflow.sdk.observability.metrics import stats_utils

    from airflow_secure_mail import _metrics

    listener = StatsdListener()
    env = {"STATSD_ON": "True", "STATSD_HOST": "127.0.0.1", "STATSD_PORT": str(listener.port), **settings}
    for key, value in env.items():
        monkeypatch.setenv(f"AIRFLOW__METRICS__{key}", value)
    saved = module._factory, module._backend, module._export_legacy_names
    module.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    _metrics._reset_for_tests()
    try:
        yield listener
    finally:
        module._factory, module._backend, module._export_legacy_names = saved
        _metrics._reset_for_tests()
        listener.close()
