"""The one ``securesmtp`` connection lookup the CLI commands share (``doctor``, ``setup``)."""

from __future__ import annotations

from typing import Any

_WHERE = "the metadata database, AIRFLOW_CONN_* variables and the secrets backends"


def securesmtp_connection(conn_id: str, command: str, fail: str = "FAIL ") -> Any | int:
    """The connection, or the exit code after printing one line: 1 when it is not found, 2 when it is not a
    ``securesmtp`` connection (e.g. the Vault one: its checks are part of the SMTP connection's)."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        print(f"{fail} connection {conn_id}: {type(exc).__name__} (looked in {_WHERE})")
        return 1
    conn_type = conn.conn_type or "untyped"
    if conn_type != "securesmtp":
        print(
            f"FAIL  connection {conn_id!r} is a {conn_type!r} connection, not 'securesmtp': run "
            f"`airflow-secure-mail {command} --conn-id <a securesmtp connection>` (its Vault connection is checked "
            "as part of it)."
        )
        return 2
    return conn
