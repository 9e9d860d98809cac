"""Flushing: claim the group's next digest slot write-once, send it through the pipeline, mark it sent.

Two workers flushing the same slot race to create ``claims/<gid>/<n>.json``; only the winner sends. A claim
left unsent past the lease is taken over (``<n>.lease-<k>.json``, also write-once) and sent from the claim's
stored view, so the mail and its Message-ID are the same; with an archive the write-ahead record then
stops a second delivery if the first claimant had in fact sent it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.alerts.plan import Claim, plan, unreported
from airflow_secure_mail.alerts.state import DigestState, IndexEntry, claim_name, group_id

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.digest import AlertDigest
    from airflow_secure_mail.alerts.events import Event

log = logging.getLogger(__name__)


def _claimant() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def due(digest: AlertDigest, group: Mapping[str, str] | None = None) -> tuple[DigestState, list[Claim]]:
    """Claim every digest that is due now (of ``group`` only, when given): the storage half of a flush."""
    state = digest.store()
    groups = {group_id(group): dict(group)} if group is not None else state.groups()
    return state, [
        c for gid, labels in sorted(groups.items()) for c in prepare(digest, state, gid, labels, digest.now())
    ]


async def aflush(digest: AlertDigest, notifier: Any, *, group: Mapping[str, str] | None = None) -> list[str]:
    """Send every due digest (of ``group`` only, when given); the Message-IDs sent."""
    state, claims = await asyncio.to_thread(due, digest, group)
    return await _send_all(state, notifier, claims)


def flush(digest: AlertDigest, notifier: Any, *, group: Mapping[str, str] | None = None) -> list[str]:
    """Sync facade of :func:`aflush` that starts no event loop when nothing is due (the common case)."""
    from airflow_secure_mail._sync import run_sync

    state, claims = due(digest, group)
    return run_sync(_send_all(state, notifier, claims)) if claims else []


async def _send_all(state: DigestState, notifier: Any, claims: list[Claim]) -> list[str]:
    return [await send_claim(state, notifier, claim) for claim in claims]


def prepare(digest: AlertDigest, state: DigestState, gid: str, labels: dict[str, str], now: datetime) -> list[Claim]:
    """The claims this worker must send now: one taken over after its lease, and/or the next one it won."""
    return [c for c in _prepare(digest, state, gid, labels, now) if c is not None]


def _prepare(
    digest: AlertDigest, state: DigestState, gid: str, labels: dict[str, str], now: datetime
) -> tuple[Claim | None, Claim | None]:
    from airflow_secure_mail.alerts.silences import list_silences

    claims = state.claims(gid)
    prev: Claim | None = None
    takeover: Claim | None = None
    if claims:
        n = max(claims)
        raw = state.read_json(claim_name(gid, n))
        prev = Claim.from_json(raw) if raw else None
        if prev is not None and "sent" not in claims[n]:
            if not _lease_expired(digest, state, gid, n, claims[n], prev, now):
                return None, None
            k = sum(1 for s in claims[n] if s.startswith("lease-")) + 1
            lease = {"at": now.isoformat(), "claimant": _claimant()}
            if not state.create_json(claim_name(gid, n, f"lease-{k}"), lease):
                return None, None
            log.warning("digest %s/%d: claimant did not finish within the lease; taking it over", gid, n)
            takeover = prev
    entries = unreported(prev, state.index(gid, prev.closed_through if prev else ""), now)
    cache: dict[str, Event] = {}

    def load(entry: IndexEntry) -> Event:
        if entry.event_id not in cache:
            event = state.read_event(gid, entry.event_id)
            if event is None:
                raise LookupError(f"digest state: index entry {entry.name} has no event object")
            cache[entry.event_id] = event
        return cache[entry.event_id]

    claim = plan(digest, gid, labels, prev, entries, list_silences(state), now, load)
    if claim is None:
        return takeover, None
    if not state.create_json(claim_name(gid, claim.n), claim.to_json()):
        log.info("digest %s/%d: another worker claimed it first", gid, claim.n)
        return takeover, None
    return takeover, claim


def _lease_expired(
    digest: AlertDigest, state: DigestState, gid: str, n: int, suffixes: list[str], claim: Claim, now: datetime
) -> bool:
    held_since = claim.time
    for suffix in suffixes:
        if suffix.startswith("lease-"):
            lease = state.read_json(claim_name(gid, n, suffix)) or {}
            held_since = max(held_since, datetime.fromisoformat(str(lease.get("at", claim.at))))
    return now >= held_since + digest.interval("lease")


async def send_claim(state: DigestState, notifier: Any, claim: Claim) -> str:
    from airflow_secure_mail.alerts.render import render_digest

    subject, text, html = render_digest(claim.view)
    seed = f"airflow-secure-mail-digest|{state.location}|{claim.gid}|{claim.n}"
    result = await notifier.asend(subject, text, html, seed=seed, origin={"digest": claim.gid})  # the one send path
    message_id = str(result.receipts[0].message_id if result.receipts else "")
    await asyncio.to_thread(
        state.create_json,
        claim_name(claim.gid, claim.n, "sent"),
        {"message_id": message_id, "sent_by": _claimant()},
    )
    log.info("digest %s/%d sent as %s", claim.gid, claim.n, message_id)
    return message_id


def prune(digest: AlertDigest) -> int:
    """Drop state older than ``retention`` that every digest has already reported; objects removed."""
    from airflow_secure_mail.alerts.state import stamp_of

    state = digest.store()
    horizon = stamp_of(digest.now() - digest.interval("retention"))
    removed = 0
    for gid in state.groups():
        claims = state.claims(gid)
        if not claims:
            continue
        latest = state.read_json(claim_name(gid, max(claims)))
        if latest is not None:
            removed += state.prune(gid, min(horizon, str(latest["closed_through"])), max(claims))
    return removed
