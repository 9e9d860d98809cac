"""``SmtpSettings``: the ``securesmtp`` connection, parsed once from the schema in ``connection_fields``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.connection.fields import SECRET_EXTRAS, ExtraError, is_unset, read_extras
from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.transport.auth import OAUTH_MECHANISMS, AuthMechanism

if TYPE_CHECKING:
    from airflow_secure_mail.transport.batch import DeliveryLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpSettings:
    """The connection, validated: refuses stored secrets, fills defaults, reads deprecated extra names."""

    host: str
    port: int
    security: str | None
    min_tls_version: str
    ca_cert: str | None
    client_cert: str | None
    client_key: str | None
    auth: AuthMechanism
    vault_conn_id: str
    vault_path: str | None
    vault_mount: str
    vault_kv_version: int
    vault_version: int | None
    from_email: str | None
    timeout: float
    retries: int
    retry_backoff: float
    deadline: float
    policy_defaults: dict[str, Any]
    oauth_endpoint: str | None = None
    oauth_scope: str | None = None
    max_messages_per_minute: float | None = None
    max_recipients_per_day: int | None = None
    max_connections: int | None = None
    budget_url: str | None = None
    alert_reserve: float = 0.2
    fallback_conn_ids: tuple[str, ...] = ()
    """Connections tried in order when this relay is down, keeps failing TLS/AUTH or is exhausted."""
    bulk_failover: bool = False
    """Bulk mail fails over too (alert mail always does)."""
    freeze_vault_path: str | None = None
    """Where the freeze switch lives (KV, the credentials' mount and version); None = ``<vault_path>.freeze``."""
    freeze_check_interval: float = 10.0
    """Seconds a worker reuses the freeze switch it read."""

    @property
    def freeze_path(self) -> str | None:
        """The freeze switch's KV path under ``vault_mount``; None when neither it nor ``vault_path`` is set."""
        if self.freeze_vault_path:
            return self.freeze_vault_path.strip("/")
        return f"{self.vault_path.strip('/')}.freeze" if self.vault_path else None

    @classmethod
    def from_connection(cls, conn: Any, *, name: str | None = None) -> SmtpSettings:
        """``name``: how errors call the connection (default: ``connection '<its id>'``); the connection test
        passes "this connection", since Airflow's Test button runs it under a random id."""
        who = name or f"connection {conn.conn_id!r}"
        if conn.login or conn.password:
            raise ConfigurationError(
                f"{who} stores a login or password: remove them and put the "
                "credentials in Vault (extra vault_path, fields username and password)."
            )
        extra = dict(conn.extra_dejson or {})
        for key in SECRET_EXTRAS:
            if not is_unset(extra.get(key)):
                raise ConfigurationError(f"{who} has a secret in extra {key!r}: move it to Vault.")
        if not conn.host:
            raise ConfigurationError(f"{who} has no host: set the SMTP server.")
        try:
            values, notes = read_extras(extra)
            port = int(conn.port or 465)
        except (ExtraError, ValueError) as exc:
            raise ConfigurationError(f"{who}: {exc}") from None
        for note in notes:
            log.warning("%s: %s", who, note)
        if values["oauth_endpoint"] and values["auth"] not in OAUTH_MECHANISMS:
            raise ConfigurationError(f"{who} sets oauth_endpoint: set auth to xoauth2 or oauthbearer too.")
        if not 0 <= values["alert_reserve"] < 1:
            raise ConfigurationError(f"{who}: extra alert_reserve must be at least 0 and below 1, e.g. 0.2.")
        if values["budget_url"] and "://" not in values["budget_url"]:
            raise ConfigurationError(
                f"{who}: extra budget_url needs a scheme: redis://host:port/db, file:///path or s3://bucket/prefix."
            )
        if values["auth"] != "none" and not values["vault_path"]:
            raise ConfigurationError(f"{who} needs extra vault_path: where the SMTP credentials live in Vault.")
        if getattr(conn, "conn_id", None) in values["fallback_conn_ids"]:
            raise ConfigurationError(f"{who} lists itself in fallback_conn_ids: name other connections.")
        named = {f.name for f in fields(cls)} - {"host", "port", "policy_defaults"}
        return cls(
            host=conn.host,
            port=port,
            policy_defaults=dict(values["policy"] or {}),
            **{name: values[name] for name in named},
        )

    def delivery_limits(self, rate_key: str, *, concurrency: int = 1) -> DeliveryLimits:
        """The batch limits this connection sets; ``rate_key`` (the conn id) shares the rate across sessions."""
        from airflow_secure_mail.transport.batch import DeliveryLimits

        return DeliveryLimits(
            concurrency=concurrency,
            retries=self.retries,
            retry_backoff=self.retry_backoff,
            deadline=self.deadline,
            max_messages_per_minute=self.max_messages_per_minute,
            rate_key=rate_key,
            max_recipients_per_day=self.max_recipients_per_day,
            max_connections=self.max_connections,
            budget_url=self.budget_url,
            alert_reserve=self.alert_reserve,
            budget_key=self.relay_key,
        )

    @property
    def relay_key(self) -> str:
        """The relay budget's key: host, port and login path (two connection ids to one relay share it)."""
        from airflow_secure_mail.transport.budget import relay_key

        return relay_key(self.host, self.port, self.vault_path)
