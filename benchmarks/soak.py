"""`make soak`: many messages from concurrent senders into one archive, through a server that fails some of them.

Issue 12's load test: 10,000 messages from 4 sender processes (like 4 Airflow tasks) into one `file://`
archive, against the STARTTLS catcher injecting 5% transient faults (421 at MAIL/RCPT/end of DATA, the
connection dropped mid-DATA; none of them ever stores a message). Each sender sends its share in batches
with ``SecureSmtpHook(conn_id).send_many(batch, concurrency=2, archive=MailArchive(...))`` and re-runs a
failed batch the way an Airflow retry would (same messages, same Message-IDs), at most ``--batch-retries``
times. Then it checks that the server received every Message-ID exactly once and that the archive holds
exactly one committed ``sent`` record per message whose bytes equal the received bytes, prints a table,
and exits non-zero on any violation. Not part of `make test`: it takes minutes.

``--no-archive`` soaks delivery alone (``send_many`` without ``archive=``): then a re-run batch resends what
its failed try already delivered, which the check reports as duplicates — the archive is what prevents that.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import multiprocessing
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENDER = "airflow@example.com"
CONN_ID = "secure_smtp_soak"
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class SenderJob:
    """One sender process's share: message numbers ``first`` to ``first + count - 1``."""

    index: int
    run: str
    first: int
    count: int
    batch: int
    concurrency: int
    batch_retries: int
    size: int
    archive: str | None


@dataclass
class SenderStats:
    index: int
    batches: int = 0
    reruns: int = 0
    failed_batches: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


def message_id(run: str, number: int) -> str:
    return f"<soak-{run}-{number:06d}@example.com>"


def build_message(run: str, number: int, size: int) -> EmailMessage:
    """Message ``number`` of this run, the same bytes every time it is built (a retry re-builds it)."""
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = f"user{number % 50:02d}@example.com"
    msg["Subject"] = f"soak message {number}"
    msg["Date"] = "Sun, 29 Nov 2026 05:00:00 +0000"
    msg["Message-ID"] = message_id(run, number)
    line = f"message {number:06d}: the nightly load finished and the totals reconciled.\n"
    msg.set_content(line * max(1, size // len(line)))
    return msg


def run_sender(job: SenderJob) -> SenderStats:
    """One sender process: every batch until it succeeds, re-run as an Airflow retry would, capped."""
    import logging

    import airflow_secure_mail.archive.store
    import airflow_secure_mail.hooks.smtp  # noqa: F401 - imported before the clock starts

    logging.getLogger("airflow_secure_mail").setLevel(logging.ERROR)
    stats = SenderStats(job.index, started=time.time())
    numbers = range(job.first, job.first + job.count)
    for start in range(0, job.count, job.batch):
        batch = numbers[start : start + job.batch]
        stats.batches += 1
        for attempt in range(job.batch_retries + 1):
            stats.reruns += attempt > 0
            try:
                _send_batch(job, [build_message(job.run, n, job.size) for n in batch])
                break
            except Exception as exc:  # an Airflow task is retried whatever it raised
                stats.errors[type(exc).__name__] += 1
                if len(stats.samples) < 3:
                    stats.samples.append(f"{type(exc).__name__}: {str(exc)[:160]}")
        else:
            stats.failed_batches += 1
    stats.finished = time.time()
    return stats


def _send_batch(job: SenderJob, messages: list[EmailMessage]) -> None:
    """One try of one batch, with a fresh hook as a new task try would have."""
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook

    hook = SecureSmtpHook(CONN_ID)
    if job.archive is None:
        hook.send_many(messages, concurrency=job.concurrency)
        return
    from airflow_secure_mail.archive.store import MailArchive

    hook.send_many(messages, concurrency=job.concurrency, archive=MailArchive(job.archive))


def run_senders(args: argparse.Namespace, run: str, archive: str | None) -> list[SenderStats]:
    """``args.senders`` processes at once (spawned: the servers' threads stay in this one)."""
    share, extra = divmod(args.messages, args.senders)
    jobs, first = [], 0
    for index in range(args.senders):
        count = share + (index < extra)
        jobs.append(
            SenderJob(index, run, first, count, args.batch, args.concurrency, args.batch_retries, args.size, archive)
        )
        first += count
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.senders, mp_context=context) as pool:
        return list(pool.map(run_sender, jobs))


def check_delivery(received: list[Any], expected: set[str]) -> tuple[list[str], dict[str, bytes]]:
    """Violations of exactly-once delivery, and the received bytes by Message-ID."""
    counts: Counter[str] = Counter()
    by_id: dict[str, bytes] = {}
    for item in received:
        found = _MESSAGE_ID.search(item.data)
        ident = found.group(1).decode() if found else "(no Message-ID)"
        counts[ident] += 1
        by_id.setdefault(ident, item.data)
    violations = []
    missing = sorted(expected - counts.keys())
    duplicated = sorted(i for i, n in counts.items() if n > 1)
    unexpected = sorted(counts.keys() - expected)
    for what, ids in (("never received", missing), ("received more than once", duplicated)):
        if ids:
            violations.append(f"{len(ids)} message(s) {what}, e.g. {', '.join(ids[:3])}")
    if unexpected:
        violations.append(f"{len(unexpected)} unexpected message(s) received, e.g. {', '.join(unexpected[:3])}")
    return violations, by_id


def archived(location: str, since: datetime) -> dict[str, list[tuple[str, Callable[[], bytes]]]]:
    """Committed records by Message-ID: (status, reader of the verified archived bytes).

    The one place that reads the archive's API (``iter_records``, ``status``, ``read_message``).
    """
    from airflow_secure_mail.archive.store import MailArchive

    archive = MailArchive(location)
    found: dict[str, list[tuple[str, Callable[[], bytes]]]] = {}
    for record in archive.iter_records(since - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1)):
        reader = functools.partial(archive.read_message, record)
        found.setdefault(str(record.meta.message_id), []).append((record.status.value, reader))
    return found


def check_archive(location: str, since: datetime, expected: set[str], received: dict[str, bytes]) -> list[str]:
    """One committed ``sent`` record per message, its archived bytes equal to the received bytes (SHA-256)."""
    records = archived(location, since)
    problems: dict[str, list[str]] = {}
    for ident in sorted(expected):
        found = records.get(ident, [])
        if not found:
            problems.setdefault("have no committed archive record", []).append(ident)
        elif len(found) > 1:
            problems.setdefault("have more than one committed record", []).append(ident)
        elif found[0][0] != "sent":
            problems.setdefault(f"are committed as {found[0][0]!r}, not 'sent'", []).append(ident)
        elif ident in received and _sha256(found[0][1]()) != _sha256(received[ident]):
            problems.setdefault("differ from the bytes the server received", []).append(ident)
    extra = sorted(records.keys() - expected)
    if extra:
        problems["are archive records of messages this run never sent"] = extra
    return [f"{len(ids)} message(s) {what}, e.g. {', '.join(ids[:3])}" for what, ids in problems.items()]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wire_connections(bao: Any, smtp: Any, password: str, args: argparse.Namespace) -> None:
    """The SMTP password only in Vault; our connection to the STARTTLS port with the test CA pinned."""
    import json

    bao.client().secrets.kv.v2.create_or_update_secret(
        path="smtp/soak", secret={"username": "airflow", "password": password}
    )
    os.environ["AIRFLOW_CONN_VAULT_DEFAULT"] = json.dumps(bao.connection_uri())
    connection = smtp.airflow_connection(
        starttls=True,
        vault_path="smtp/soak",
        from_email=SENDER,
        retries=args.smtp_retries,
        retry_backoff=args.retry_backoff,
    )
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(connection)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items())) or "none"


def print_report(args: argparse.Namespace, archive: str | None, stats: list[SenderStats], smtp: Any) -> None:
    """The soak's table: load, faults per kind, retries at both levels, time and rate."""
    injected = smtp.faults.injected
    sending = max(s.finished for s in stats) - min(s.started for s in stats)
    reruns, given_up = sum(s.reruns for s in stats), sum(s.failed_batches for s in stats)
    rows = [
        ("messages", f"{args.messages:,}: {args.senders} sender processes, batches of {args.batch}, "
                     f"send_many concurrency {args.concurrency}, ~{args.size:,} B bodies"),
        ("archive", archive or "none (--no-archive)"),
        ("received by the server", f"{len(smtp.messages):,} over {smtp.connections:,} SMTP connections"),
        ("faults injected", f"{sum(injected.values())} (rate {args.fault_rate:.1%}): {_counts(injected)}"),
        ("retries", f"{args.smtp_retries} per message inside send_many; {reruns} batch re-runs (Airflow-style), "
                    f"{given_up} batches given up"),
        ("batch failures", _counts(sum((s.errors for s in stats), Counter()))),
        ("duration", f"{sending:.1f} s sending (process start-up excluded)"),
        ("throughput", f"{args.messages / sending:.1f} msg/s"),
    ]  # fmt: skip
    print("\n| soak | |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    for sample in (s for st in stats for s in st.samples[:1]):
        print(f"  a batch failure: {sample}")


def print_verdict(violations: list[str], archived: bool) -> None:
    if not violations:
        print(
            "\nOK: every message delivered exactly once"
            + (", archived once as sent, bytes equal." if archived else ".")
        )
    for violation in violations:
        print(f"FAIL  {violation}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--senders", type=int, default=4, help="concurrent sender processes (Airflow tasks)")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of SMTP transactions that fail")
    parser.add_argument("--batch", type=int, default=100, help="messages per send_many call (one task try)")
    parser.add_argument("--concurrency", type=int, default=2, help="send_many's sessions per sender")
    parser.add_argument("--batch-retries", type=int, default=5, help="re-runs of a failed batch (task retries)")
    parser.add_argument(
        "--smtp-retries", type=int, default=1, help="the connection's retries per message inside send_many"
    )
    parser.add_argument("--retry-backoff", type=float, default=0.05, help="the connection's first retry wait (s)")
    parser.add_argument("--size", type=int, default=4_000, help="approximate body size of each message (bytes)")
    parser.add_argument("--seed", type=int, default=12, help="seed of the fault draws")
    parser.add_argument("--no-archive", action="store_true", help="send without archive= (delivery alone)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (archive, Airflow home)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="asm-soak-"))
    from airflow_secure_mail.testing.airflow_home import airflow_env

    os.environ.update(airflow_env(work / "airflow", log_level="ERROR"))
    from airflow_secure_mail.testing.openbao import OpenBaoDevServer
    from airflow_secure_mail.testing.smtp import SmtpCatcher, SmtpFaults

    run, password = secrets.token_hex(4), secrets.token_urlsafe(24)
    archive = None if args.no_archive else f"file://{work}/archive"
    faults = SmtpFaults(rate=args.fault_rate, seed=args.seed)
    try:
        with OpenBaoDevServer() as bao, SmtpCatcher(users={"airflow": password}, faults=faults) as smtp:
            wire_connections(bao, smtp, password, args)
            since = datetime.now(UTC)
            stats = run_senders(args, run, archive)
            expected = {message_id(run, n) for n in range(args.messages)}
            violations, received = check_delivery(smtp.messages, expected)
            if archive is not None:
                violations += check_archive(archive, since, expected, received)
            print_report(args, archive, stats, smtp)
            print_verdict(violations, archive is not None)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
