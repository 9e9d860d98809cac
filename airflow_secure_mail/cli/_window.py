"""What every archive-reading command shares: the archive options, a time window (ISO 8601 or ``7d``/``24h``/
``30m`` ago), the archive it names, and one-line errors (bad input exit 2, storage/Vault/integrity exit 1)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_secure_mail.errors import ConfigurationError, SecureMailError

if TYPE_CHECKING:
    from airflow_secure_mail.archive.store import MailArchive

_AGO = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def archive_options(*, window: bool = True) -> argparse.ArgumentParser:
    """A parent parser: ``--archive`` and how to open it, and (``window``) ``--since``/``--until``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--archive", required=True, metavar="URL", help="e.g. s3://bucket/archive or file:///path")
    common.add_argument("--conn-id", default=None, help="Airflow connection of the archive's storage (s3://)")
    common.add_argument("--transit-key", default=None, help="Vault Transit key of an encrypted archive")
    common.add_argument("--vault-conn-id", default="vault_default", help="Vault connection for --transit-key")
    if window:
        since = "ISO 8601 (2026-11-01, 2026-11-01T08:00Z) or a span ago (7d, 24h, 30m)"
        common.add_argument("--since", default=None, metavar="T", help=since)
        common.add_argument("--until", default=None, metavar="T", help="as --since; exclusive, default now")
    return common


def open_archive(args: argparse.Namespace) -> MailArchive:
    """The archive the options name (nothing is read yet)."""
    from airflow_secure_mail.archive.store import MailArchive

    return MailArchive(args.archive, args.conn_id, args.transit_key, args.vault_conn_id)


def window(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """``--since``/``--until`` as aware datetimes (None when not given); since must come before until."""
    since = parse_time(args.since, "since") if args.since else None
    until = parse_time(args.until, "until") if args.until else None
    if since and until and since >= until:
        raise ConfigurationError(f"--since {args.since} is not before --until {args.until}.")
    return since, until


def parse_time(text: str, what: str, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive = UTC) or a span ago (``7d``, ``24h``, ``30m``)."""
    ago = _AGO.match(text.strip())
    if ago:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"--{what} {text!r} is neither ISO 8601 nor a span ago: write e.g. 2026-11-01, 2026-11-01T08:00Z or 7d."
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run_reporting_errors(body: Callable[[], int]) -> int:
    """``body()``, with our errors as one line: bad input exit 2, storage, Vault or integrity failures exit 1."""
    try:
        return body()
    except ConfigurationError as exc:
        print(f"error: {one_line(exc)}")
        return 2
    except SecureMailError as exc:
        print(f"error: {one_line(exc)}")
        return 1


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
