"""Flushing: claim the group's next digest slot write-once, send it through the pipeline, mark it sent.

Two workers flushing the same slot race to create ``claims/<gid>/<n>.json``; only the winner sends. A claim
left unsent past the lease is taken over (``<n>.lease-<k>.json``, also write-once) and sent from the claim's
stored view, so the mail and its Message-ID are the same; with an archive the write-ahead record then
stops a second delivery if the first claimant had in fact sent it.

Each group is flushed on its own. An event object that is missing or garbage is left out of its group's
digest with a warning naming it, and copied write-once to ``quarantine/<its name>`` (a missing one: a
``.missing`` marker; the original is never rewritten or deleted); only the first flush that meets it fails
over it, later ones find the copy and log it; a garbage claim, lease or label object, a storage error or a
failed send stops only its group. Once every other group's digest went out, :class:`DigestFlushError` names
each group that needs attention, so the flush task fails visibly instead of passing over a dropped alert.

Flush takes the digest's knobs (:class:`~airflow_secure_mail.alerts.knobs.DigestKnobs`) as a parameter and
sits below only the callback and ``digest``: ``AlertDigest.flush``/``prune`` call it, it never imports them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_secure_mail import _metrics
from airflow_secure_mail.alerts.claims import Claim
from airflow_secure_mail.alerts.plan import Decision, decide, unreported
from airflow_secure_mail.alerts.render import render_digest
from airflow_secure_mail.alerts.silences import list_silences, printable
from airflow_secure_mail.alerts.state import DigestState, IndexEntry, claim_name, group_id, stamp_of
from airflow_secure_mail.errors import ArchiveIntegrityError, DigestFlushError, SecureMailError

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.events import Event
    from airflow_secure_mail.alerts.knobs import DigestKnobs

log = logging.getLogger(__name__)


@dataclass
class _Round:
    """One flush: the claims to send, what went wrong per group, the Message-IDs sent, what each group decided."""

    state: DigestState
    claims: list[Claim] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    sent_claims: list[tuple[Claim, str]] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)

    def fail(self, gid: str, what: str) -> None:
        self.problems.setdefault(gid, []).append(" ".join(what.split()))

    def report(self) -> list[str]:
        """Where this flush's events are: sent (how many in how many digests), held by which silence, waiting
        for which knob until when. One line first, then a line per silence and per waiting group."""
        events_sent = sum(int(claim.view.get("events", 0)) for claim, _ in self.sent_claims)
        held: dict[str, tuple[Any, int]] = {}
        for decision in self.decisions.values():
            for _, silence in decision.held:
                held[silence.id] = (silence, held.get(silence.id, (silence, 0))[1] + 1)
        waiting = {gid: d for gid, d in sorted(self.decisions.items()) if d.waiting and d.claim is None}
        lines = [
            f"alert digests sent: {len(self.sent)} ({events_sent} event(s)); "
            f"held by silences: {sum(n for _, n in held.values())} event(s); "
            f"waiting: {sum(len(d.waiting) for d in waiting.values())} event(s)"
        ]
        for silence, n in held.values():
            lines.append(
                f"{n} event(s) held by silence {silence.id} ({printable(silence.reason)}) "
                f"until {silence.end:%Y-%m-%d %H:%M} UTC"
            )
        for gid, d in waiting.items():
            if d.due is not None:
                lines.append(
                    f"digest {gid}: {len(d.waiting)} event(s) wait for its {d.knob} "
                    f"(next send after {d.due:%Y-%m-%d %H:%M:%S} UTC)"
                )
            else:
                lines.append(f"digest {gid}: {len(d.waiting)} event(s) recorded that raise no new alert")
        return lines

    def result(self) -> list[str]:
        """The Message-IDs sent, or DigestFlushError naming every group with a problem (the rest went out)."""
        if not self.problems:
            return self.sent
        detail = "; ".join(f"{gid}: {', '.join(what)}" for gid, what in sorted(self.problems.items()))
        raise DigestFlushError(
            f"alert digests: {len(self.sent)} sent; {len(self.problems)} group(s) need attention: {detail}",
            problems=self.problems,
            sent=self.sent,
        )


class _Unreadable(Exception):
    """An index entry whose event object is missing or garbage: plan again without it."""

    def __init__(self, entry: IndexEntry) -> None:
        super().__init__(entry.name)
        self.entry = entry


def _claimant() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _describe(exc: BaseException) -> str:
    """Our errors say what to fix; another library's message may quote anything, so only its type is kept."""
    return str(exc) if isinstance(exc, SecureMailError) else f"{type(exc).__name__} (see the task log)"


def _log_failure(what: str, exc: BaseException) -> None:
    """Our errors are logged by their one line; anything else with its traceback, to find the bug."""
    if isinstance(exc, SecureMailError):
        log.error("%s: %s", what, exc)
    else:
        log.error("%s", what, exc_info=exc)


def due(digest: DigestKnobs, group: Mapping[str, str] | None = None) -> _Round:
    """Claim every digest that is due now (of ``group`` only, when given): the storage half of a flush.

    Each group is handled on its own: one group's garbage or unreadable state is noted against that group
    and the others still get their claims.
    """
    state = DigestState.of(digest)
    found = _Round(state)
    gids = [group_id(group)] if group is not None else state.group_ids()
    for gid in sorted(gids):
        skipped: list[str] = []
        try:
            labels = dict(group) if group is not None else state.labels(gid)
            found.claims += prepare(
                digest, state, gid, labels, digest.now(), skipped=skipped, decisions=found.decisions
            )
        except Exception as exc:  # isolate the group; the error names it once every other group is sent
            _log_failure(f"digest {gid}: not flushed", exc)
            found.fail(gid, f"not sent: {_describe(exc)}")
        for what in skipped:
            found.fail(gid, what)
    return found


async def aflush(digest: DigestKnobs, notifier: Any, *, group: Mapping[str, str] | None = None) -> list[str]:
    """Send every due digest (of ``group`` only, when given); the Message-IDs sent.

    Raises DigestFlushError after the good groups were sent if any group could not be (or skipped an event).
    """
    found = await aflush_round(digest, notifier, group=group)
    return found.result()


async def aflush_round(digest: DigestKnobs, notifier: Any, *, group: Mapping[str, str] | None = None) -> _Round:
    """:func:`aflush` without raising: the round, with what was sent and what each group decided."""
    found = await asyncio.to_thread(due, digest, group)
    await _send_all(found, notifier)
    return found


def flush(digest: DigestKnobs, notifier: Any, *, group: Mapping[str, str] | None = None) -> list[str]:
    """Sync facade of :func:`aflush` that starts no event loop when nothing is due (the common case).

    Logs where the events are: how many were sent, how many each silence holds, how many wait and until when.
    """
    from airflow_secure_mail._sync import run_sync

    found = due(digest, group)
    if found.claims:
        run_sync(_send_all(found, notifier))
    for line in found.report():
        log.info("%s", line)
    return found.result()


async def _send_all(found: _Round, notifier: Any) -> None:
    """Send each claim on its own: a failed send is noted against its group; it stays the group's latest claim
    (a takeover makes no newer one), so a later flush takes it over again once its lease runs out."""
    for claim in found.claims:
        try:
            message_id = await send_claim(found.state, notifier, claim)
        except Exception as exc:
            _log_failure(f"digest {claim.gid}/{claim.n}: not sent", exc)
            found.fail(claim.gid, f"digest {claim.n} not sent: {_describe(exc)}")
        else:
            found.sent.append(message_id)
            found.sent_claims.append((claim, message_id))
            _count_folded(claim)


def _count_folded(claim: Claim) -> None:
    """``digests_suppressed``: the events a sent digest carried beyond its one mail, split into those a silence
    had held (``silenced``) and the rest (``folded``); with ``claimed`` (below) the mails the digest saved."""
    events = int(claim.view.get("events", 0))
    held = sum(int(h.get("count", 0)) for h in claim.view.get("held", []))
    saved = max(events - 1, 0)
    silenced = min(held, saved)
    _metrics.incr("digests_suppressed", silenced, reason="silenced")
    _metrics.incr("digests_suppressed", saved - silenced, reason="folded")


def prepare(
    digest: DigestKnobs,
    state: DigestState,
    gid: str,
    labels: dict[str, str],
    now: datetime,
    *,
    skipped: list[str] | None = None,
    decisions: dict[str, Decision] | None = None,
) -> list[Claim]:
    """The claims this worker must send now: one taken over after its lease, or else the next one it won.

    Events that cannot be read are left out and described in ``skipped``; what the plan decided for the
    group (when it planned) goes into ``decisions[gid]``.
    """
    notes = skipped if skipped is not None else []
    return [c for c in _prepare(digest, state, gid, labels, now, notes, decisions) if c is not None]


def _prepare(
    digest: DigestKnobs,
    state: DigestState,
    gid: str,
    labels: dict[str, str],
    now: datetime,
    skipped: list[str],
    decisions: dict[str, Decision] | None = None,
) -> tuple[Claim | None, Claim | None]:
    claims = state.claims(gid)
    prev: Claim | None = None
    if claims:
        n = max(claims)
        prev = _read_claim(state, claim_name(gid, n))
        if prev is not None and "sent" not in claims[n]:
            if not _lease_expired(digest, state, gid, n, claims[n], prev, now):
                return None, None
            k = sum(1 for s in claims[n] if s.startswith("lease-")) + 1
            lease = {"at": now.isoformat(), "claimant": _claimant()}
            if not state.create_json(claim_name(gid, n, f"lease-{k}"), lease):
                return None, None
            log.warning("digest %s/%d: claimant did not finish within the lease; taking it over", gid, n)
            # The takeover only: claim n+1 is planned once n was sent, so a failed send of n is retried by a
            # later flush (its lease runs out again) instead of being orphaned behind a newer claim.
            return prev, None
    entries = unreported(prev, state.index(gid, prev.closed_through if prev else ""), now)
    silences = list_silences(state)
    decision = _plan_without_unreadable(
        lambda usable, load: decide(digest, gid, labels, prev, usable, silences, now, load),
        state,
        gid,
        entries,
        skipped,
    )
    if decisions is not None:
        decisions[gid] = decision
    claim = decision.claim
    if claim is None:
        return None, None
    if not state.create_json(claim_name(gid, claim.n), claim.to_json()):
        log.info("digest %s/%d: another worker claimed it first", gid, claim.n)
        _metrics.incr("digests_suppressed", reason="claimed")
        return None, None
    return None, claim


def _read_claim(state: DigestState, name: str) -> Claim | None:
    """A stored claim; garbage is our ArchiveIntegrityError naming it (the group's chain cannot go on without it)."""
    raw = state.read_json(name)
    if raw is None:
        return None
    try:
        return Claim.from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problem = type(exc).__name__
    raise ArchiveIntegrityError(f"digest state object {name} is not a readable claim ({problem}).", key=name)


def _plan_without_unreadable(
    run: Callable[[list[IndexEntry], Callable[[IndexEntry], Event]], Decision],
    state: DigestState,
    gid: str,
    entries: list[IndexEntry],
    skipped: list[str],
) -> Decision:
    """Plan; when an event turns out unreadable, note it and plan again without it (it never blocks its group)."""
    cache: dict[str, Event] = {}
    left_out: set[str] = set()

    def load(entry: IndexEntry) -> Event:
        if entry.event_id not in cache:
            event = _read_or_quarantine(state, gid, entry, skipped)
            if event is None:
                raise _Unreadable(entry)
            cache[entry.event_id] = event
        return cache[entry.event_id]

    while True:
        try:
            return run([e for e in entries if e.event_id not in left_out], load)
        except _Unreadable as unreadable:
            left_out.add(unreadable.entry.event_id)


def _read_or_quarantine(state: DigestState, gid: str, entry: IndexEntry, skipped: list[str]) -> Event | None:
    """The entry's event, or None when it is missing or garbage: noted in ``skipped`` by the first flush only.

    A garbage object is copied write-once to ``quarantine/<its name>``, a missing one leaves a write-once
    ``quarantine/<its name>.missing`` marker; the original stays where it is (nothing in the state is ever
    rewritten). The entry stays unreported, so later flushes meet it again: finding the copy already there
    means an earlier flush failed over it, and they only log it (the flush task is not red forever).
    Storage that cannot be reached is not skipped: it raises.
    """
    name = f"events/{gid}/{entry.event_id}.json"
    try:
        event = state.read_event(gid, entry.event_id)
    except ArchiveIntegrityError as exc:
        problem, culprit = str(exc), f"{name} and index/{gid}/{entry.name}"  # prune finds events by their index
    else:
        if event is not None:
            return event
        problem, culprit = f"index entry {entry.name} has no event object", f"index/{gid}/{entry.name}"
    raw = state.objects.read(name)
    where, first = _quarantine(state, name, raw)
    if not first:
        log.info("digest %s: %s was reported by an earlier flush (%s); still left out until deleted", gid, name, where)
        return None
    log.warning("digest %s: skipped unreadable %s (%s); %s", gid, name, problem, where)
    skipped.append(f"skipped unreadable {name} ({where}; delete {culprit} once inspected)")
    return None


def _quarantine(state: DigestState, name: str, raw: bytes | None) -> tuple[str, bool]:
    """Copy a garbage object write-once to ``quarantine/<name>`` (a missing one: a ``.missing`` marker) for a
    human to look at; says where it went, and False when an earlier flush had already put it there."""
    copy = f"quarantine/{name}" if raw is not None else f"quarantine/{name}.missing"
    try:
        if raw is None and state.objects.read(f"quarantine/{name}") is not None:  # garbage deleted, entry kept
            return f"already in quarantine/{name}", False
        if state.create(copy, raw if raw is not None else b""):
            return f"copied to {copy}" if raw is not None else f"noted in {copy}", True
        if raw is not None and state.objects.read(copy) != raw:  # rewritten since it was reported: report it again
            return f"differs from its earlier copy {copy}", True
    except SecureMailError as exc:  # the copy is a courtesy: its failure must not fail the group
        return f"not copied to {copy}: {exc}", True
    return f"already in {copy}", False


def _lease_expired(
    digest: DigestKnobs, state: DigestState, gid: str, n: int, suffixes: list[str], claim: Claim, now: datetime
) -> bool:
    held_since = claim.time
    for suffix in suffixes:
        if suffix.startswith("lease-"):
            lease = state.read_json(claim_name(gid, n, suffix)) or {}
            held_since = max(held_since, datetime.fromisoformat(str(lease.get("at", claim.at))))
    return now >= held_since + digest.interval("lease")


async def send_claim(state: DigestState, notifier: Any, claim: Claim) -> str:
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


def prune(digest: DigestKnobs) -> int:
    """Drop state older than ``retention`` that every digest has already reported; objects removed."""
    state = DigestState.of(digest)
    horizon = stamp_of(digest.now() - digest.interval("retention"))
    removed = 0
    for gid in state.group_ids():
        try:
            removed += _prune_group(state, gid, horizon)
        except Exception as exc:  # housekeeping: one group's garbage must not stop the others' pruning
            log.warning("digest %s: not pruned: %s", gid, _describe(exc))
    return removed


def _prune_group(state: DigestState, gid: str, horizon: str) -> int:
    claims = state.claims(gid)
    if not claims:
        return 0
    latest = _read_claim(state, claim_name(gid, max(claims)))
    if latest is None:
        return 0
    return state.prune(gid, min(horizon, latest.closed_through), max(claims))
