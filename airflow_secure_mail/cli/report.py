"""``airflow-secure-mail report --archive URL --since 7d --out report.html``: the security report.

One self-contained HTML page from the archive's metadata (never bodies); with ``--conn-id`` (repeatable) also
the relay certificate's days left, the S/MIME signer certificate's and the SMTP credential's age. The logic is
:mod:`airflow_secure_mail.ops.report`.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow_secure_mail.cli._window import archive_options, open_archive, run_reporting_errors, window
from airflow_secure_mail.errors import ConfigurationError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``report`` on the main parser."""
    report = sub.add_parser(
        "report",
        parents=[archive_options()],
        help="the security report: one HTML page of what was sent, refused and failed (metadata only)",
    )
    report.add_argument("--out", required=True, metavar="FILE.html", help="where to write the page")
    report.add_argument(
        "--smtp-conn-id",
        dest="smtp_conn_ids",
        action="append",
        default=[],
        metavar="ID",
        help="a securesmtp connection whose relay certificate and credential age to check (repeatable)",
    )
    report.add_argument(
        "--signing-vault-path",
        default=None,
        metavar="PATH",
        help="KV path of the S/MIME signer (smime_certificate), e.g. mail-signing",
    )


def run(args: argparse.Namespace) -> int:
    return run_reporting_errors(lambda: _report(args))


def _report(args: argparse.Namespace) -> int:
    from airflow_secure_mail.ops.report import build

    since, until = window(args)
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=7)
    report = build(
        open_archive(args),
        since,
        until,
        conn_ids=args.smtp_conn_ids,
        signing_vault_path=args.signing_vault_path,
    )
    try:
        Path(args.out).write_text(report.html(), encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {args.out}: {exc.strerror or exc}.") from None
    print(report.summary(), end="")
    print(f"written: {args.out}")
    return 0
