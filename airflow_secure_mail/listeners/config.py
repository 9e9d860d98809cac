"""The listener's settings: Airflow's ``[secure_mail]`` section, read once per process, off until ``listener_to``.

Read with ``airflow.configuration.conf``, so ``AIRFLOW__SECURE_MAIL__LISTENER_TO`` and the other environment
variables work as for any Airflow option. The options and their defaults are declared once, in
``get_provider_info`` (the provider's ``config`` section, which Airflow reads without importing anything else).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.get_provider_info import LISTENER_OPTIONS as OPTIONS
from airflow_secure_mail.get_provider_info import LISTENER_SECTION as SECTION

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
