"""A real spamd (Debian's, shipped rules, ``-L``: no network tests) once per test worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_secure_mail.testing.spamd import SpamdServer


@pytest.fixture(scope="session")
def spamd() -> Iterator[SpamdServer]:
    server = SpamdServer().start()
    yield server
    server.stop()
