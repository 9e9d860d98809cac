"""``airflow-secure-mail verify FILE.eml --archive URL``: was this mail really sent by our Airflow?

Exit 0 and the archive record when an archived copy has the file's Message-ID and the same bytes (relay
header fields prepended and LF line endings accepted) and, with ``--signing-vault-path``, a PGP/MIME signature
verifies against the signer key; exit 1 with the reason otherwise; 2 for bad input.
The logic is :mod:`airflow_secure_mail.ops.verify`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from airflow_secure_mail.cli._window import archive_options, open_archive, run_reporting_errors, window
from airflow_secure_mail.errors import ConfigurationError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``verify`` on the main parser."""
    verify = sub.add_parser(
        "verify",
        parents=[archive_options()],
        help="was this .eml sent by our Airflow? exit 0 with its archive record, 1 with the reason",
        description="Searches the day folders around the file's Date: (2 days either side; --since/--until "
        "widen it) for archived copies with its Message-ID and compares the bytes.",
    )
    verify.add_argument("file", metavar="FILE.eml", help="the message as saved from a mailbox")
    verify.add_argument(
        "--signing-vault-path",
        default=None,
        metavar="PATH",
        help="KV path of the PGP signer (pgp_private_key, as Protection.signing_vault_path): check the signature",
    )


def run(args: argparse.Namespace) -> int:
    return run_reporting_errors(lambda: _verify(args))


def _verify(args: argparse.Namespace) -> int:
    from airflow_secure_mail.ops.verify import describe, verify_message

    since, until = window(args)
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {args.file}: {exc.strerror or exc}.") from None
    verdict = verify_message(
        open_archive(args),
        data,
        since=since,
        until=until,
        signing_vault_path=args.signing_vault_path,
        vault_conn_id=args.vault_conn_id,
    )
    for line in describe(verdict):
        print(line)
    return 0 if verdict.ours else 1
