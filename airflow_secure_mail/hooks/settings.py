"""``SmtpSettings``: the ``securesmtp`` connection, parsed once from the schema in ``connection_fields``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.hooks.connection_fields import (
    OAUTH_MECHANISMS,
    SECRET_EXTRAS,
    ExtraError,
    is_unset,
    read_extras,
)

if TYPE_CHECKING:
    from airflow_secure_mail.transport.smtp import AuthMechanism

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

    @classmethod
    def from_connection(cls, conn: Any) -> SmtpSettings:
        cid = conn.conn_id
        if conn.login or conn.password:
            raise ConfigurationError(
                f"connection {cid!r} stores a login or password: remove them and put the "
                "credentials in Vault (extra vault_path, fields username and password)."
            )
        extra = dict(conn.extra_dejson or {})
        for key in SECRET_EXTRAS:
            if not is_unset(extra.get(key)):
                raise ConfigurationError(f"connection {cid!r} has a secret in extra {key!r}: move it to Vault.")
        if not conn.host:
            raise ConfigurationError(f"connection {cid!r} has no host: set the SMTP server.")
        try:
            values, notes = read_extras(extra)
            port = int(conn.port or 465)
        except (ExtraError, ValueError) as exc:
            raise ConfigurationError(f"connection {cid!r}: {exc}") from None
        for note in notes:
            log.warning("connection %r: %s", cid, note)
        if values["oauth_endpoint"] and values["auth"] not in OAUTH_MECHANISMS:
            raise ConfigurationError(f"connection {cid!r} sets oauth_endpoint: set auth to xoauth2 or oauthbearer too.")
        if values["auth"] != "none" and not values["vault_path"]:
            raise ConfigurationError(
                f"connection {cid!r} needs extra vault_path: where the SMTP credentials live in Vault."
            )
        return cls(
            host=conn.host,
            port=port,
            security=values["security"],
            min_tls_version=values["min_tls_version"],
            ca_cert=values["ca_cert"],
            client_cert=values["client_cert"],
            client_key=values["client_key"],
            auth=values["auth"],
            vault_conn_id=values["vault_conn_id"],
            vault_path=values["vault_path"],
            vault_mount=values["vault_mount"],
            vault_kv_version=values["vault_kv_version"],
            vault_version=values["vault_version"],
            from_email=values["from_email"],
            timeout=values["timeout"],
            retries=values["retries"],
            retry_backoff=values["retry_backoff"],
            deadline=values["deadline"],
            policy_defaults=dict(values["policy"] or {}),
            oauth_endpoint=values["oauth_endpoint"],
            oauth_scope=values["oauth_scope"],
        )
