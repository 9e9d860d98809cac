"""The shared budget backends themselves (issue 24 item 1): Redis, file:// and S3 (SeaweedFS) write-once claims.

Two backend objects on one location stand for two processes; threads race them for the same slots, recipients
and connection places, and nothing is ever handed out twice.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_mail.pipeline.budget_store import ObjectStoreBackend
from airflow_secure_mail.transport.budget import RedisBackend, forget_budgets, is_reserved


@pytest.fixture(
    params=[pytest.param("redis", marks=pytest.mark.redis), "file", pytest.param("s3", marks=pytest.mark.s3)]
)
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, Any]:
    forget_budgets()
    if request.param == "redis":
        server = request.getfixturevalue("redis")
        import redis as redis_client

        redis_client.Redis.from_url(server.url).flushall()
        return RedisBackend(server.url), RedisBackend(server.url)
    if request.param == "file":
        url = f"file://{tmp_path}/budget"
    else:
        conn_id = request.getfixturevalue("s3_conn")
        url = f"s3://mail-test/budget-{time.time_ns()}?conn_id={conn_id}"
    return ObjectStoreBackend.from_url(url), ObjectStoreBackend.from_url(url)


def test_racing_processes_never_claim_one_slot_twice(backends):
    def claim(i: int) -> int | None:
        backend: Any = backends[i % 2]
        return backend.claim_slot("relay", 1000, 1019, 0.2, i % 3 != 0, 300)  # type: ignore[no-any-return]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(claim, range(24)))
    claimed = [k for k in got if k is not None]
    assert len(claimed) == len(set(claimed)) and set(claimed) <= set(range(1000, 1020))  # never one slot twice
    # who ran first decides how many there were: an alert may take a bulk slot before a bulk claim asks for it,
    # and a reserved slot then stays free. But a claim finds none only when none it may take was free.
    ordinary = {k for k in range(1000, 1020) if not is_reserved(k, 0.2)}
    if any(k is None for i, k in enumerate(got) if i % 3 != 0):
        assert ordinary <= set(claimed)  # a bulk claim found none: every ordinary slot was taken
    if any(k is None for i, k in enumerate(got) if i % 3 == 0):
        assert len(claimed) == 20  # an alert claim found none: every slot was taken


def test_racing_processes_never_pass_the_recipient_quota(backends):
    def add(i: int) -> bool:
        return bool(backends[i % 2].add_recipients("relay", "20261208", 3, 20))

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(add, range(12)))
    assert results.count(True) == 6  # 18 recipients counted; a 7th message (21) would pass the quota
    assert backends[0].add_recipients("relay", "20261208", 2, 20)  # 20: exactly the quota
    assert not backends[1].add_recipients("relay", "20261208", 1, 20)


def test_connection_leases_are_capped_and_a_dead_holders_place_comes_back(backends):
    first, second = backends
    assert first.lease("relay", "a", 2, 1.0) and second.lease("relay", "b", 2, 1.0)
    assert not second.lease("relay", "c", 2, 1.0)
    second.release("relay", "b")
    assert second.lease("relay", "c", 2, 1.0)
    # "a" dies without releasing or renewing: its place is free again once its lease has run out
    deadline = time.monotonic() + 30
    while not first.lease("relay", "d", 2, 1.0):
        assert time.monotonic() < deadline, "the dead holder's lease never expired"
        time.sleep(0.2)
    assert not second.renew("relay", "a", 1.0) or second.lease("relay", "e", 2, 1.0) is False


def test_a_lowered_cap_is_shared(backends):
    first, second = backends
    first.lower_cap("relay", 1, 600)
    assert second.lease("relay", "a", 3, 60)
    assert not first.lease("relay", "b", 3, 60)


def test_exhausted_is_shared_for_the_day(backends):
    first, second = backends
    assert not second.is_exhausted("relay", "20261208")
    first.mark_exhausted("relay", "20261208", time.time() + 60)
    assert second.is_exhausted("relay", "20261208")
    assert not second.is_exhausted("relay", "20261209")
