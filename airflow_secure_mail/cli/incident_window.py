"""``airflow-secure-mail incident trace|notify``: what a time window sent and refused, and a correction notice
to its recipients. ``cli/incident.py`` registers these verbs beside freeze/unfreeze.

``trace`` prints one JSON object a line on stdout, oldest first, from the archive's metadata only (no message is
read or decrypted); a damaged record is named on stderr, skipped, and makes the exit code 1. ``notify`` renders
a Jinja2 template (sandboxed, strict) into one notice per (original message, recipient) and sends each through
the normal pipeline; ``--dry-run`` only lists them. See ``airflow_secure_mail.ops.trace`` and ``ops.notify``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from airflow_secure_mail.cli._window import archive_options, open_archive, run_reporting_errors, window
from airflow_secure_mail.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.ops.trace import Trace

VERBS = ("trace", "notify")


def add_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``trace`` and ``notify`` under ``incident``."""
    common = archive_options()
    common.add_argument("--recipient-domain", default=None, metavar="D", help="only mail to this domain (IDNA)")
    common.add_argument("--dag-id", default=None, metavar="ID", help="only mail from this DAG (exact)")
    verbs.add_parser(
        "trace", parents=[common], help="what was sent and refused in a window, as JSON lines (metadata only)"
    )
    notify = verbs.add_parser(
        "notify", parents=[common], help="send a correction notice to the recipients of a window's sent mail"
    )
    notify.add_argument("--template", required=True, metavar="FILE", help="Jinja2: 'Subject: ...', blank, body")
    notify.add_argument("--smtp-conn-id", default="secure_smtp_default", help="the connection that sends notices")
    notify.add_argument("--dry-run", action="store_true", help="list who would get which notice; send nothing")


def run(args: argparse.Namespace) -> int:
    """Run ``trace`` or ``notify`` (``args.verb``)."""
    return run_reporting_errors(lambda: _trace(args) if args.verb == "trace" else _notify(args))


def _span(args: argparse.Namespace) -> tuple[datetime, datetime]:
    since, until = window(args)
    if since is None:
        raise ConfigurationError("give --since T (ISO 8601 or a span ago such as 24h): the window to look at.")
    until = until or datetime.now(UTC)
    if since >= until:
        raise ConfigurationError(f"--since {args.since} is not before now.")
    return since, until


def _read(args: argparse.Namespace) -> tuple[MailArchive, Trace]:
    from airflow_secure_mail.ops.trace import trace

    since, until = _span(args)
    archive = open_archive(args)
    found = trace(archive, since, until, recipient_domain=args.recipient_domain, dag_id=args.dag_id)
    for where, why in found.damaged:
        print(f"error: {where}: {' '.join(why.split())} (skipped)", file=sys.stderr)
    return archive, found


def _trace(args: argparse.Namespace) -> int:
    with _logs_to_stderr() as out:
        _, found = _read(args)
    for event in found.events:
        out.write(json.dumps(event.to_dict(), sort_keys=True, default=str) + "\n")
    return 1 if found.damaged else 0


@contextlib.contextmanager
def _logs_to_stderr() -> Iterator[TextIO]:
    """stdout as it was, for the JSON lines alone: meanwhile Airflow's log handler (which writes to stdout, e.g.
    "AWS Connection ... credentials retrieved") and anything set up or printed writes to stderr."""
    out = sys.stdout
    moved = [h for h in logging.root.handlers if isinstance(h, logging.StreamHandler) and h.stream is out]
    for handler in moved:
        handler.setStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield out
    finally:
        for handler in moved:
            handler.setStream(out)


def _notify(args: argparse.Namespace) -> int:
    from airflow_secure_mail._sync import run_sync
    from airflow_secure_mail.ops.notify import NoticeOutcome, NoticeTemplate, asend_notices, plan_notices
    from airflow_secure_mail.pipeline.channel import MailChannel

    template = NoticeTemplate.from_file(args.template)  # a bad template stops here: nothing read, nothing sent
    with _logs_to_stderr() as out:
        archive, found = _read(args)
        channel = MailChannel.for_conn(args.smtp_conn_id)
        special = channel.policy(None).allow_special_use_domains
        notices = plan_notices(
            found.events,
            template,
            channel.sender(),
            recipient_domain=args.recipient_domain,
            allow_special_use_domains=special,
        )  # every notice rendered before the first is sent

        def show(outcome: NoticeOutcome) -> None:
            n, detail = outcome.notice, f"  {outcome.detail}" if outcome.detail else ""
            line = f"{outcome.status:<12} {n.recipient}  re {n.original.fields['message_id']}  {n.subject!r}{detail}"
            print(line, file=out, flush=True)

        run = asend_notices(notices, channel=channel, archive=archive, dry_run=args.dry_run, on_outcome=show)
        outcomes = run_sync(run)
    originals = sum(1 for e in found.events if e.delivered_to and not e.fields["notice"])
    counts = {s: sum(o.status == s for o in outcomes) for s in ("sent", "would_send", "already_sent", "failed")}
    summary = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if v or k in ("sent", "failed"))
    prefix = "dry run: " if args.dry_run else ""
    print(f"{prefix}{len(outcomes)} notice(s) for {originals} sent message(s) in the window: {summary}", file=out)
    return 1 if counts["failed"] or found.damaged else 0
