"""``airflow-secure-mail silence add|list|expire``: Alertmanager-style silences on the digest state."""

from __future__ import annotations

import argparse
import getpass
import os
from datetime import datetime

from airflow_secure_mail.errors import ConfigurationError, SecureMailError

ENV_STATE = "AIRFLOW_SECURE_MAIL_DIGEST_STATE"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``silence`` and its three subcommands on the main parser."""
    silence = sub.add_parser("silence", help="hold alert digest mail for matching alerts until a time")
    verbs = silence.add_subparsers(dest="verb", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state", default=os.environ.get(ENV_STATE), help=f"digest state URL (or ${ENV_STATE})")
    common.add_argument("--state-conn-id", default=None, help="Airflow connection for an s3:// state")
    add = verbs.add_parser("add", parents=[common], help="add a silence")
    add.add_argument("--match", action="append", default=[], metavar="LABEL=VALUE", help="repeat to AND matchers")
    add.add_argument("--until", required=True, help="ISO 8601 end with a time zone, e.g. 2026-11-29T08:00Z")
    add.add_argument("--starts", default=None, help="ISO 8601 start (default: now)")
    add.add_argument("--reason", required=True)
    verbs.add_parser("list", parents=[common], help="list silences (active, pending and ended)")
    expire = verbs.add_parser("expire", parents=[common], help="end a silence now")
    expire.add_argument("id")


def _parse_time(text: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"--{what} {text!r} is not ISO 8601: write e.g. 2026-11-29T08:00Z.") from None


def run(args: argparse.Namespace) -> int:
    """Run one ``silence`` subcommand; bad input prints one line and exits 2, a storage failure one line and 1."""
    try:
        return _run(args)
    except ConfigurationError as exc:
        print(f"error: {_one_line(exc)}")
        return 2
    except SecureMailError as exc:  # the state could not be read or written: not the user's input
        print(f"error: {_one_line(exc)}")
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _run(args: argparse.Namespace) -> int:
    from datetime import UTC

    from airflow_secure_mail.alerts.silences import add_silence, expire_silence, list_silences, printable
    from airflow_secure_mail.alerts.state import DigestState

    if not args.state:
        raise ConfigurationError(f"give --state URL (e.g. s3://bucket/alert-state) or set {ENV_STATE}.")
    state = DigestState(args.state, args.state_conn_id)  # checks the URL before anything connects to it
    now = datetime.now(UTC)
    if args.verb == "add":
        silence = add_silence(
            state,
            args.match,
            until=_parse_time(args.until, "until"),
            starts=_parse_time(args.starts, "starts") if args.starts else None,
            reason=args.reason,
            created_by=getpass.getuser(),
        )
        print(f"{silence.id}  silences {' '.join(map(str, silence.matchers))} until {silence.end.isoformat()}")
    elif args.verb == "expire":
        silence = expire_silence(state, args.id)
        print(f"{silence.id}  expired at {silence.end.isoformat()}")
    else:
        for s in list_silences(state):  # stored text is escaped: an older silence must not print extra rows
            status = "active" if s.active(now) else ("pending" if s.starts_at > now else "ended")
            window = f"{s.starts_at:%Y-%m-%dT%H:%MZ} .. {s.end:%Y-%m-%dT%H:%MZ}"
            matchers = printable(" ".join(map(str, s.matchers)))
            print(f"{printable(s.id)}  {status:<7}  {window}  {matchers}  # {printable(s.reason)}")
    return 0
