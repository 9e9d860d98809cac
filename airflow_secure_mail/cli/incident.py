"""``airflow-secure-mail incident``: the kill switch (``freeze``/``unfreeze``) and, from
:mod:`airflow_secure_mail.cli.incident_window`, ``trace`` and ``notify``.

``freeze --conn-id ID --reason R`` writes ``{"frozen": true, "reason": R, "since": <now, UTC>, "by": <OS user>}``
to the connection's freeze switch in Vault (KV ``<vault_path>.freeze``, or extra ``freeze_vault_path``, on the
credentials' mount and version); ``unfreeze --conn-id ID`` writes ``frozen: false``. Every worker reads the switch
at most ``freeze_check_interval`` seconds after it changed. The write uses ``VAULT_TOKEN`` when set (an
operator's token, as ``setup`` does), else the Vault connection's own login; no token is ever printed.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from airflow_secure_mail.cli import incident_window
from airflow_secure_mail.errors import SecureMailError

if TYPE_CHECKING:
    from airflow_secure_mail.connection.freeze import FreezeState, FreezeSwitch

_VERBS = ("freeze", "unfreeze")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``incident`` on the main parser: freeze/unfreeze here, trace/notify from ``incident_window``."""
    incident = sub.add_parser("incident", help="respond to an incident: freeze/unfreeze a connection, trace, notify")
    verbs = incident.add_subparsers(dest="verb", required=True)
    freeze = verbs.add_parser("freeze", help="stop every send through a connection until it is unfrozen")
    freeze.add_argument("--conn-id", required=True, help="the securesmtp connection to freeze")
    freeze.add_argument("--reason", required=True, help="why: every refused send shows it")
    unfreeze = verbs.add_parser("unfreeze", help="end a freeze: sends resume within freeze_check_interval")
    unfreeze.add_argument("--conn-id", required=True, help="the securesmtp connection to unfreeze")
    incident_window.add_verbs(verbs)


def run(args: argparse.Namespace) -> int:
    """Run one ``incident`` verb."""
    if args.verb not in _VERBS:
        return incident_window.run(args)
    reason = " ".join(str(getattr(args, "reason", "") or "").split())
    if args.verb == "freeze" and not reason:
        print("FAIL  incident freeze: --reason must say why (every refused send shows it).")
        return 2
    return set_freeze(args.conn_id, frozen=args.verb == "freeze", reason=reason)


def set_freeze(conn_id: str, *, frozen: bool, reason: str = "") -> int:
    """Write the switch of ``conn_id``; 0 when written, 1 when Vault refused or failed, 2 for a wrong connection."""
    from airflow_secure_mail.cli._conn import securesmtp_connection
    from airflow_secure_mail.connection.freeze import FreezeState, remember, switch_for
    from airflow_secure_mail.connection.settings import SmtpSettings

    verb = "freeze" if frozen else "unfreeze"
    conn = securesmtp_connection(conn_id, f"incident {verb}")
    if isinstance(conn, int):
        return conn
    try:
        settings = SmtpSettings.from_connection(conn)
    except SecureMailError as exc:
        print(f"FAIL  {_one_line(exc)}")
        return 2
    switch = switch_for(settings)
    if switch is None:
        print(f"FAIL  connection {conn_id!r} has no vault_path: set extra freeze_vault_path (where its switch lives).")
        return 2
    state = FreezeState(frozen=frozen, reason=reason, since=_now(), by=_user())
    failed = _write(switch, state)
    if failed is not None:
        print(f"FAIL  {verb} {conn_id}: {failed}")
        return 1
    remember(switch, state, settings.freeze_check_interval)  # this process's sends see it at once
    interval = f"{settings.freeze_check_interval:g} s"
    if frozen:
        print(
            f"FROZEN  connection {conn_id!r} since {state.since} by {state.by}: {reason}\n"
            f"        written to Vault {switch.where}; every worker stops sending within {interval} "
            "(freeze_check_interval), refused sends are recorded as rule 'frozen'.\n"
            f"        End it with `airflow-secure-mail incident unfreeze --conn-id {conn_id}`."
        )
    else:
        print(
            f"UNFROZEN  connection {conn_id!r} at {state.since} by {state.by}\n"
            f"          written to Vault {switch.where}; workers send again within {interval} (freeze_check_interval)."
        )
    return 0


def _write(switch: FreezeSwitch, state: FreezeState) -> str | None:
    """Write ``state`` at the switch; None on success, else one line that says what to fix (never a token)."""
    import hvac.exceptions

    from airflow_secure_mail.cli.setup import _client, _first_line

    how = "the Vault connection's login"
    try:
        client, how = _client(switch.vault_conn_id)
        secret = state.to_secret()
        if switch.kv_version == 1:
            client.secrets.kv.v1.create_or_update_secret(path=switch.path, secret=secret, mount_point=switch.mount)
        else:
            client.secrets.kv.v2.create_or_update_secret(path=switch.path, secret=secret, mount_point=switch.mount)
    except hvac.exceptions.Forbidden:
        grant = switch.policy_line(("create", "update"))
        return (
            f"the Vault token ({how}) may not write {switch.where}: grant it `{grant}`, "
            "or run with an operator's token in VAULT_TOKEN."
        )
    except hvac.exceptions.InvalidPath:
        return f"Vault has no KV engine at {switch.mount + '/'!r}: check extra vault_mount of the connection."
    except SecureMailError as exc:
        return _one_line(exc)
    except Exception as exc:  # Vault unreachable, an unexpected reply: say which, never a reply body
        return f"Vault request failed: {type(exc).__name__}: {_first_line(exc)}"
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without one)
        return "unknown"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


__all__ = ["add_parser", "run", "set_freeze"]
