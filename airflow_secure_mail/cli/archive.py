"""``airflow-secure-mail archive verify|restore``: check an archive's integrity, export messages outside a DAG.

Both call the archive's own code (:mod:`airflow_secure_mail.archive.restore`), the same that
``MailBackupOperator`` and ``MailRestoreOperator`` use: every record is checked (SHA-256, AES-GCM tag,
size, key) before its bytes are trusted or written.
"""

from __future__ import annotations

import argparse
import os

from airflow_secure_mail.cli._window import archive_options, open_archive, run_reporting_errors, window
from airflow_secure_mail.errors import ConfigurationError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``archive`` and its two subcommands on the main parser."""
    archive = sub.add_parser("archive", help="verify an archive's integrity, or restore messages from it")
    verbs = archive.add_subparsers(dest="verb", required=True)
    common = archive_options()
    verbs.add_parser("verify", parents=[common], help="check every record; exit 1 naming each damaged one")
    restore = verbs.add_parser("restore", parents=[common], help="export archived messages' exact bytes")
    restore.add_argument("--message-id", default=None, help="the Message-ID, with or without <>")
    restore.add_argument("--recipient", default=None, help="only messages to this address")
    restore.add_argument("--to", required=True, metavar="DIR_OR_URL", help="a directory, file:// or s3:// URL")
    restore.add_argument("--to-conn-id", default=None, help="Airflow connection of an s3:// --to")
    restore.add_argument("--format", choices=("eml", "mbox"), default="eml")
    restore.add_argument("--bundle", default=None, metavar="URL", help="read from backup bundles at this location")
    restore.add_argument("--bundle-conn-id", default=None)


def run(args: argparse.Namespace) -> int:
    """Bad input prints one line and exits 2; storage, Vault or integrity failures one line and 1."""
    return run_reporting_errors(lambda: _verify(args) if args.verb == "verify" else _restore(args))


def _verify(args: argparse.Namespace) -> int:
    from airflow_secure_mail.archive.restore import verify_archive

    since, until = window(args)
    check = verify_archive(open_archive(args), since, until)
    for prefix, why in check.damaged:
        print(f"  DAMAGED  {prefix}  {why}")
    print(f"{args.archive}: {check.checked} record(s) checked, {check.intact} intact, {len(check.damaged)} damaged")
    return 1 if check.damaged else 0


def _restore(args: argparse.Namespace) -> int:
    from airflow_secure_mail.archive.restore import RestoreSelection, export, select

    since, until = window(args)
    if not (args.message_id or since):
        raise ConfigurationError("give --message-id ID, or --since T (and --until T) to choose what to restore.")
    message_id = args.message_id.strip() if args.message_id else None
    if message_id and not message_id.startswith("<"):
        message_id = f"<{message_id}>"
    selection = RestoreSelection(start=since, end=until, message_id=message_id, recipient=args.recipient)
    found = select(open_archive(args), selection, bundle_location=args.bundle, bundle_conn_id=args.bundle_conn_id)
    if not found:
        print(f"no archived message matches in {args.archive}")
        return 1
    destination = args.to if "://" in args.to else f"file://{os.path.abspath(args.to)}"
    if destination.startswith("file://"):
        os.makedirs(destination.removeprefix("file://"), exist_ok=True)
    export(found, destination, conn_id=args.to_conn_id, fmt=args.format, log_fn=lambda line: print(f"  {line}"))
    print(f"{len(found)} message(s) restored to {destination}")
    return 0
