"""The listener's settings: Airflow's ``[secure_mail]`` section, read once per process, off until ``listener_to``.

Read with ``airflow.configuration.conf``, so ``AIRFLOW__SECURE_MAIL__LISTENER_TO`` and the other environment
variables work as for any Airflow option. The options and their defaults are declared once, in :data:`OPTIONS`;
``get_provider_info`` publishes the same table as the provider's ``config`` section.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from airflow_secure_mail.errors import ConfigurationError

SECTION = "secure_mail"

OPTIONS: dict[str, dict[str, Any]] = {
    "listener_to": {
        "description": "Comma-separated addresses the listener mails (DAG import errors and, with "
        "listener_catch_all, failures of DAGs that wire no alert of their own). Empty: the listener is off.",
        "type": "string",
        "example": "oncall@example.com, data-team@example.com",
        "default": "",
    },
    "listener_conn_id": {
        "description": "The securesmtp connection the listener sends through.",
        "type": "string",
        "example": None,
        "default": "secure_smtp_default",
    },
    "listener_import_errors": {
        "description": "Mail DAG import errors (one mail per file and error, repeats throttled, a resolved "
        "line when the file parses again). On when listener_to is set.",
        "type": "boolean",
        "example": None,
        "default": "True",
    },
    "listener_catch_all": {
        "description": "Mail failures of tasks whose task and DAG have no on_failure_callback and no "
        "email_on_failure of their own, folded into alert digests.",
        "type": "boolean",
        "example": None,
        "default": "False",
    },
    "listener_digest_state": {
        "description": "Where the listener keeps its digest and throttle state (file:///path or "
        "s3://bucket/prefix). Default: file://$AIRFLOW_HOME/secure-mail/listener-state, which only works when "
        "every Airflow component runs on one machine; set an s3:// location for several machines.",
        "type": "string",
        "example": "s3://alerts/listener-state",
        "default": "",
    },
    "listener_repeat_interval": {
        "description": "How long the same import error of the same file stays quiet after its mail "
        "(a duration: 30m, 4h, 1d).",
        "type": "string",
        "example": None,
        "default": "4h",
    },
}

_TRUE = {"true", "t", "1", "yes", "y", "on"}
_FALSE = {"false", "f", "0", "no", "n", "off"}


@dataclass(frozen=True)
class ListenerSettings:
    """What the listener does; built only when ``listener_to`` names at least one address."""

    to: tuple[str, ...]
    digest_state: str
    conn_id: str = "secure_smtp_default"
    import_errors: bool = True
    catch_all: bool = False
    repeat_interval: str = "4h"
    dags_folder: str | None = None
    base_url: str | None = None


def default_state(airflow_home: str | None = None) -> str:
    """``file://$AIRFLOW_HOME/secure-mail/listener-state``.

    Fine on one machine: every component shares the disk and a write-once file is an exclusive create there.
    Not on several: each machine would keep its own throttles and digests, so each would mail the same error.
    """
    home = airflow_home or os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"file://{os.path.abspath(home)}/secure-mail/listener-state"


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"[{SECTION}] {name} = {raw!r}: give true or false.")


def settings_from(values: dict[str, str], *, airflow_home: str | None = None) -> ListenerSettings | None:
    """The settings ``values`` (option name → raw string) describe; None when ``listener_to`` is empty.

    Raises ConfigurationError naming the option when a value is unusable.
    """
    from airflow_secure_mail.alerts.knobs import check_state_location, parse_duration

    raw = {name: str(values.get(name) or spec["default"] or "") for name, spec in OPTIONS.items()}
    to = tuple(a.strip() for a in raw["listener_to"].split(",") if a.strip())
    if not to:
        return None
    state = raw["listener_digest_state"].strip() or default_state(airflow_home)
    try:
        check_state_location(state)
    except ConfigurationError as exc:
        raise ConfigurationError(f"[{SECTION}] listener_digest_state: {exc}") from None
    repeat = raw["listener_repeat_interval"].strip()
    try:
        parse_duration(repeat, "repeat_interval")
    except ConfigurationError:
        raise ConfigurationError(
            f"[{SECTION}] listener_repeat_interval = {repeat!r}: give a duration like 30m, 4h or 1d."
        ) from None
    return ListenerSettings(
        to=to,
        digest_state=state,
        conn_id=raw["listener_conn_id"].strip() or "secure_smtp_default",
        import_errors=_boolean("listener_import_errors", raw["listener_import_errors"]),
        catch_all=_boolean("listener_catch_all", raw["listener_catch_all"]),
        repeat_interval=repeat,
        dags_folder=values.get("dags_folder") or None,
        base_url=values.get("base_url") or None,
    )


def read_settings() -> ListenerSettings | None:
    """The settings from Airflow's configuration (``airflow.cfg`` and ``AIRFLOW__SECURE_MAIL__*``)."""
    from airflow.configuration import AIRFLOW_HOME, conf

    values = {name: conf.get(SECTION, name, fallback=None) or "" for name in OPTIONS}
    values["dags_folder"] = conf.get("core", "dags_folder", fallback="") or ""
    values["base_url"] = conf.get("api", "base_url", fallback="") or ""
    return settings_from(values, airflow_home=AIRFLOW_HOME)
