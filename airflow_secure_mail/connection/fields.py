"""The ``securesmtp`` connection's extras, declared once: the settings parser and the UI form both read this table.

Stdlib only (and our stdlib-only ``transport.auth``): ``get_provider_info`` builds the form from it, and
Airflow calls that while it starts.
A ``null`` or empty value means "not set" (Airflow's form stores every empty field as ``null``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_secure_mail.transport.auth import AUTH_MECHANISMS

CONN_TYPE = "securesmtp"
SECRET_EXTRAS = ("password", "access_token", "client_secret", "refresh_token", "smtp_password")


@dataclass(frozen=True)
class Field:
    """One extra: its JSON type, default (``None``: derived or unset), help text, old names and allowed values."""

    name: str
    type: str  # "string" | "integer" | "number" | "object" | "list" (of names) | "boolean"
    label: str
    description: str
    default: Any = None
    default_text: str | None = None  # how the UI describes a default that is not a constant
    aliases: tuple[str, ...] = ()  # deprecated names, still read
    choices: tuple[Any, ...] = ()
    secret_format: bool = False  # a password-style input (inline key material)
    multiline: bool = False
    positive: bool = False  # a number that must be above zero

    def shown_default(self) -> str:
        """The default as the form shows it."""
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return "not set"
        return json.dumps(self.default) if isinstance(self.default, dict) else str(self.default)


FIELDS: tuple[Field, ...] = (
    Field("security", "string", "Security", "tls = implicit TLS (port 465); starttls = mandatory STARTTLS "
          "(587); none only for a loopback host.", default_text="tls on port 465, else starttls",
          choices=("tls", "starttls", "none")),
    Field("min_tls_version", "string", "Minimum TLS version", "Oldest TLS version accepted.",
          default="TLSv1.2", choices=("TLSv1.2", "TLSv1.3")),
    Field("ca_cert", "string", "CA certificate", "PEM, file path or vault:<path>#<field>; replaces the system "
          "trust store (a pin).", default_text="system trust store", multiline=True),
    Field("client_cert", "string", "Client certificate (mTLS)", "PEM, file path or vault:<path>#<field>.",
          multiline=True),
    Field("client_key", "string", "Client key (mTLS)", "vault:<path>#<field> recommended; PEM or file path.",
          secret_format=True),
    Field("auth", "string", "Authentication", "password = PLAIN/LOGIN over TLS; xoauth2/oauthbearer = OAuth2 "
          "token; none = no AUTH.", default="password", choices=AUTH_MECHANISMS),
    Field("vault_conn_id", "string", "Vault connection id", "The Vault connection that reads the credentials.",
          default="vault_default"),
    Field("vault_path", "string", "Vault path of the SMTP credentials", "KV path holding username and "
          "password (or access_token, or client_id + client_secret/refresh_token). Required unless auth is none.",
          aliases=("vault_secret_path",)),
    Field("vault_mount", "string", "Vault KV mount", "Mount point of the KV engine.", default="secret"),
    Field("vault_kv_version", "integer", "Vault KV version", "KV engine version.", default=2, choices=(1, 2)),
    Field("vault_version", "integer", "Vault secret version", "Pin one version of the credentials (KV v2).",
          default_text="latest", aliases=("vault_secret_version",)),
    Field("oauth_endpoint", "string", "OAuth2 token endpoint", "https URL of the token endpoint for xoauth2/"
          "oauthbearer (client-credentials or refresh-token grant).", aliases=("oauth_token_url",)),
    Field("oauth_scope", "string", "OAuth2 scope", "Scope requested from the token endpoint."),
    Field("from_email", "string", "Default sender", "Envelope sender when a task passes none."),
    Field("timeout", "number", "Timeout (s)", "Seconds per SMTP command, connect included.", default=30.0),
    Field("retries", "integer", "Retries", "Retries of a transient failure, each on a fresh connection.",
          default=3),
    Field("retry_backoff", "number", "Retry backoff (s)", "First wait before a retry; grows exponentially "
          "with jitter.", default=1.0),
    Field("deadline", "number", "Deadline (s)", "Upper bound for a whole send, Vault included.", default=300.0),
    Field("max_messages_per_minute", "number", "Max messages per minute", "The relay's sending rate (e.g. 30 "
          "for Microsoft 365), honoured across all sessions of a task; throttling replies slow it further.",
          default_text="no limit", positive=True),
    Field("max_recipients_per_day", "integer", "Max recipients per day", "The relay's daily recipient quota "
          "(e.g. 10000 for Microsoft 365), counted per UTC day; a message that would pass it is not sent.",
          default_text="no limit", positive=True),
    Field("max_connections", "integer", "Max connections", "Sessions open to the relay at once (e.g. 3 for "
          "Microsoft 365); a 432 4.3.2 reply lowers it for 10 minutes.", default_text="no limit", positive=True),
    Field("budget_url", "string", "Relay budget location", "Where the relay's rate, quota and connection "
          "budget is shared by every worker: redis://host:port/db or an object store (file:///path, "
          "s3://bucket/prefix?conn_id=aws_default). Without it the limits hold per process.",
          default_text="per process"),
    Field("alert_reserve", "number", "Alert reserve", "Share of each minute's messages kept for alert mail "
          "(notifier, digests, listeners); bulk (operator) mail takes only the rest.", default=0.2),
    Field("fallback_conn_ids", "list", "Fallback connections", "securesmtp connection ids tried in this order "
          "when this relay is unreachable, keeps failing TLS/AUTH or is out of its daily quota: alert mail fails "
          "over, bulk mail only with bulk_failover. Comma-separated or a JSON list.", default=(),
          default_text="none"),
    Field("bulk_failover", "boolean", "Bulk mail fails over too", "Let bulk (operator) mail use "
          "fallback_conn_ids as well; alert mail always does.", default=False, default_text="false"),
    Field("freeze_vault_path", "string", "Vault path of the freeze switch", "KV path (same mount and version "
          "as the credentials) that `airflow-secure-mail incident freeze` writes and every send reads.",
          default_text="<vault_path>.freeze"),
    Field("freeze_check_interval", "number", "Freeze check interval (s)", "Seconds a worker reuses the freeze "
          "switch it read: a freeze stops every send within about this long.", default=10.0, positive=True),
    Field("policy", "object", "Default mail policy", "MailPolicy fields as a JSON object, e.g. "
          '{"allowed_recipient_domains": ["example.com"]}.', default_text="MailPolicy()"),
)  # fmt: skip

FIELDS_BY_NAME = {f.name: f for f in FIELDS}
ALIASES = {alias: f.name for f in FIELDS for alias in f.aliases}


class ExtraError(ValueError):
    """An extra has a value this schema cannot read; the message names the extra and what to set."""


def is_unset(value: Any) -> bool:
    """``null`` or blank: what the UI form stores for a field left empty."""
    return value is None or (isinstance(value, str) and not value.strip())


def _coerce(field: Field, value: Any) -> Any:
    """The value as the field's type; numbers typed as text in the raw JSON editor are accepted."""
    try:
        if field.type == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if field.type == "number":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if field.type == "list":
            return _names(value)
        if field.type == "boolean":
            return _boolean(value)
        if field.type == "object":
            parsed = json.loads(value) if isinstance(value, str) else value
            if not isinstance(parsed, dict):
                raise ValueError
            return parsed
        if not isinstance(value, str):
            raise ValueError
        return value.strip()
    except (TypeError, ValueError):
        kind = {
            "integer": "a whole number",
            "number": "a number",
            "object": "a JSON object",
            "list": "a comma-separated list or a JSON list of names",
            "boolean": "true or false",
        }.get(field.type, "text")
        raise ExtraError(f"extra {field.name} must be {kind}, not {value!r}.") from None


def _names(value: Any) -> tuple[str, ...]:
    """A list of names: a JSON list (also as text) or a comma-separated string; blanks dropped, order kept."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError
    return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))


def _boolean(value: Any) -> bool:
    """``true``/``false`` (JSON), or the words a form or an env var may hold."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.strip().lower() in ("true", "yes", "1", "on")
    raise ValueError


def read_extras(extra: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Every field's value (defaults filled in, ``None`` where unset) and notes on deprecated or unknown extras."""
    notes: list[str] = []
    values: dict[str, Any] = {}
    for field in FIELDS:
        given = {n: extra[n] for n in (field.name, *field.aliases) if n in extra and not is_unset(extra[n])}
        old = [n for n in given if n != field.name]
        if old:
            notes.append(f"extra {old[0]} is deprecated: rename it to {field.name}.")
        if len({json.dumps(v, sort_keys=True) for v in given.values()}) > 1:
            raise ExtraError(f"extras {' and '.join(given)} disagree: keep only {field.name}.")
        if not given:
            values[field.name] = field.default
            continue
        value = _coerce(field, next(iter(given.values())))
        if field.positive and value <= 0:
            raise ExtraError(
                f"extra {field.name} must be above 0, not {value!r}; leave it empty for {field.shown_default()}."
            )
        if field.choices and value not in field.choices:
            allowed = ", ".join(str(c) for c in field.choices)
            raise ExtraError(f"extra {field.name} {value!r} is unknown; use one of {allowed}.")
        values[field.name] = value
    unknown = sorted(k for k in extra if k not in FIELDS_BY_NAME and k not in ALIASES and k not in SECRET_EXTRAS)
    if unknown:
        notes.append(f"unknown extras ignored: {', '.join(unknown)}.")
    return values, notes


_FORM_TYPES = {"list": "string"}
"""A list of names is typed into the form as comma-separated text."""


def conn_fields() -> dict[str, dict[str, Any]]:
    """The ``conn-fields`` of ``get_provider_info``: one optional form field per extra, default in its text."""
    out: dict[str, dict[str, Any]] = {}
    for field in FIELDS:
        schema: dict[str, Any] = {"type": [_FORM_TYPES.get(field.type, field.type), "null"]}
        if field.choices:
            schema["enum"] = [*field.choices, None]
            schema["values_display"] = {"null": f"default ({field.shown_default()})"}
        if field.secret_format:
            schema["format"] = "password"
        elif field.multiline:
            schema["format"] = "multiline"
        description = f"{field.description} Default: {field.shown_default()}."
        if field.aliases:
            description += f" Old name {', '.join(field.aliases)} (deprecated) is still read."
        out[field.name] = {"label": field.label, "description": description, "schema": schema}
    return out


def placeholders() -> dict[str, str]:
    """Each field's default as a placeholder (for UIs that show placeholders on extra fields)."""
    return {f.name: f.shown_default() for f in FIELDS if f.default is not None or f.default_text is not None}


def ui_form_extra(**filled: Any) -> dict[str, Any]:
    """The extra Airflow's connection form saves when only ``filled`` fields were typed in: the rest ``null``."""
    unknown = set(filled) - set(FIELDS_BY_NAME)
    if unknown:
        raise ExtraError(f"not a form field: {', '.join(sorted(unknown))}.")
    return {f.name: filled.get(f.name) for f in FIELDS}
