"""``airflow-secure-mail doctor --conn-id ID``: a pass/warn/fail checklist of a connection's security posture
(``doctor --coverage``, which DAGs' alerts reach secure mail, is in :mod:`airflow_secure_mail.cli.coverage`)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_secure_mail.connection.settings import SmtpSettings

Check = tuple[str, str, str]  # (status, what, detail)


def _static_checks(conn: Any) -> tuple[list[Check], SmtpSettings | None]:
    """What the connection's settings say, without opening any connection; the settings when they parse."""
    from airflow_secure_mail.connection.fields import read_extras
    from airflow_secure_mail.connection.settings import SmtpSettings
    from airflow_secure_mail.transport.tls import default_security

    try:
        settings = SmtpSettings.from_connection(conn)
    except Exception as exc:
        return [("FAIL", "connection", str(exc))], None
    checks: list[Check] = [("PASS", "secrets not stored in the connection", "login, password and secret extras empty")]
    checks += [("WARN", "extra names", note) for note in read_extras(conn.extra_dejson or {})[1]]
    mode = settings.security or default_security(settings.port)
    if mode == "none":
        checks.append(("WARN", "TLS mode", "none (loopback only)"))
    else:
        checks.append(("PASS", "TLS mode", "implicit TLS" if mode == "tls" else "mandatory STARTTLS"))
    checks.append(("PASS", "minimum TLS version", settings.min_tls_version))
    checks.append(
        ("PASS", "CA pinning", "ca_cert replaces the system store")
        if settings.ca_cert
        else ("WARN", "CA pinning", "system trust store (set ca_cert to pin your relay's CA)")
    )
    checks.append(_vault_tls_check(settings.vault_conn_id))
    return checks, settings


def _live_checks(settings: SmtpSettings) -> list[Check]:
    """Open one session with the settings already read (the connection is not looked up again); send nothing."""
    from airflow_secure_mail._sync import run_sync
    from airflow_secure_mail.connection.client import session_info
    from airflow_secure_mail.transport.describe import certificate_expiry
    from airflow_secure_mail.vault import vault_for

    try:
        info = run_sync(session_info(settings, vault_for(settings.vault_conn_id)))
    except Exception as exc:
        return [("FAIL", "live connection", str(exc))]
    checks: list[Check] = [
        ("PASS", "TLS negotiated", f"{info.tls_version} {info.cipher}"),
        ("PASS", "server certificate", f"{info.cert_subject} (issuer {info.cert_issuer})"),
    ]
    expiry = certificate_expiry(info)
    if expiry is not None:
        checks.append(("WARN" if expiry.renew_soon else "PASS", "certificate expiry", f"{expiry.days_left} days left"))
    checks.append(("PASS", "AUTH", f"authenticated; offered {', '.join(info.auth_mechanisms) or 'none'}"))
    if info.size_limit:
        checks.append(("PASS", "SIZE limit", str(info.size_limit)))
    return checks


def _vault_tls_check(vault_conn_id: str) -> Check:
    """Judge the Vault address the client will really use (the same scheme rule as ``vault.py``)."""
    from airflow.sdk import BaseHook

    from airflow_secure_mail.transport.tls import is_loopback
    from airflow_secure_mail.vault import vault_url
    from airflow_secure_mail.vault._login import _flag

    try:
        vault = BaseHook.get_connection(vault_conn_id)
    except Exception as exc:
        return ("FAIL", "Vault connection", f"{vault_conn_id}: {type(exc).__name__}")
    if vault_url(vault).startswith("https://"):
        return ("PASS", "Vault over TLS", f"{vault_conn_id} uses https")
    if is_loopback(vault.host or ""):
        return ("WARN", "Vault over TLS", f"{vault_conn_id} is plain http on loopback")
    if _flag(vault.extra_dejson.get("allow_insecure_http")):  # the client accepts it too: say so, do not fail
        return ("WARN", "Vault over TLS", f"{vault_conn_id} is plain http, allowed by allow_insecure_http")
    return ("FAIL", "Vault over TLS", f"{vault_conn_id} is plain http: set use_tls=true")


@contextlib.contextmanager
def _read_connections_like_airflow_cli() -> Iterator[None]:
    """Look connections up in the metadata database too, as ``airflow connections test`` does (``doctor``, and
    ``silence`` for its ``--state-conn-id``: without it an aws connection kept in the database is not found).

    Outside a task the Task SDK only reads environment variables and custom secrets backends; the
    metadata database joins the search path when the process says it is a server-side one.
    """
    previous = os.environ.get("_AIRFLOW_PROCESS_CONTEXT")
    os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "server"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("_AIRFLOW_PROCESS_CONTEXT", None)
        else:
            os.environ["_AIRFLOW_PROCESS_CONTEXT"] = previous


def doctor(conn_id: str) -> int:
    """Print the checklist; exit 1 if anything failed, 0 otherwise (warnings included); 2 for a connection
    that is not ``securesmtp`` (its login and password are not ours to judge).

    The connection is looked up once: the static and the live checks judge the same settings.
    """
    from airflow_secure_mail.cli._conn import securesmtp_connection
    from airflow_secure_mail.scanning.clamd import scanner_checks
    from airflow_secure_mail.scanning.spamd import spam_checks

    conn = securesmtp_connection(conn_id, "doctor", fail="FAIL ")
    if isinstance(conn, int):
        return conn
    checks, settings = _static_checks(conn)
    if settings is not None and not any(status == "FAIL" for status, _, _ in checks):
        checks += _live_checks(settings)
    if settings is not None:
        from airflow_secure_mail.cli.setup import freeze_check

        checks.append(freeze_check(settings))
    checks += scanner_checks(conn.extra_dejson.get("policy"))
    checks += spam_checks(conn.extra_dejson.get("policy"))
    print(f"airflow-secure-mail doctor: {conn_id}")
    for status, what, detail in checks:
        print(f"  {status:<4}  {what:<38} {detail}")
    return 1 if any(status == "FAIL" for status, _, _ in checks) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow-secure-mail")
    sub = parser.add_subparsers(dest="command", required=True)
    from airflow_secure_mail.cli import archive as archive_cli
    from airflow_secure_mail.cli import coverage_report as coverage_cli
    from airflow_secure_mail.cli import incident as incident_cli
    from airflow_secure_mail.cli import report as report_cli
    from airflow_secure_mail.cli import setup as setup_cli
    from airflow_secure_mail.cli import silence as silence_cli
    from airflow_secure_mail.cli import verify as verify_cli

    doc = sub.add_parser("doctor", help="check a securesmtp connection's security posture (or --coverage)")
    setup_cli.add_options(doc)
    doc.add_argument("--fix", action="store_true", help="run `setup` first (same options), then the checklist")
    doc.add_argument("--coverage", action="store_true", help=coverage_cli.HELP)
    doc.add_argument("--dags-folder", metavar="PATH", help="with --coverage: the DAGs folder ([core] dags_folder)")
    doc.add_argument("--json", action="store_true", help="with --coverage: print JSON instead of the table")
    setup_cli.add_parser(sub)
    silence_cli.add_parser(sub)
    archive_cli.add_parser(sub)
    verify_cli.add_parser(sub)
    incident_cli.add_parser(sub)
    report_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "doctor" and args.coverage:
        if args.fix:
            parser.error("doctor: --coverage checks DAGs, --fix a connection: run them one at a time")
        return coverage_cli.run(args.dags_folder, args.json)
    if args.command == "doctor" and (args.dags_folder or args.json):
        parser.error("doctor: --dags-folder and --json go with --coverage")
    with _read_connections_like_airflow_cli():  # all read connections as `airflow connections` does
        if args.command == "setup":
            return setup_cli.setup(args.conn_id, args.transit_key, args.example_keys)
        if args.command == "doctor":
            if not args.fix:
                return doctor(args.conn_id)
            fixed = setup_cli.setup(args.conn_id, args.transit_key, args.example_keys)
            if fixed == 2:  # not a securesmtp connection: said once
                return fixed
            print()
            return max(fixed, doctor(args.conn_id))
        runs = {"archive": archive_cli.run, "verify": verify_cli.run, "incident": incident_cli.run,
                "report": report_cli.run, "silence": silence_cli.run}  # fmt: skip
        return runs[args.command](args)
