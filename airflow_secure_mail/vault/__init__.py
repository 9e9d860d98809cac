"""Vault: the only package that talks to Vault (KV reads with a lease-aware cache, Transit, one login each).

Its public face is :mod:`airflow_secure_mail.vault.secrets` (re-exported here); the private modules under it
are the login per connection (``_login``), the guarded HTTP session (``_http``), the read cache (``_cache``),
the call budget (``_call``) and the mapping of failures to our errors (``_errors``).
"""

from airflow_secure_mail.vault.secrets import (
    AGENT_AUTH_TYPE,
    DEFAULT_CACHE_TTL,
    DEFAULT_CALL_BUDGET,
    VaultSecrets,
    check_vault_url,
    clear_cache,
    deadline,
    parse_vault_ref,
    vault_for,
    vault_url,
)

__all__ = [
    "AGENT_AUTH_TYPE",
    "DEFAULT_CACHE_TTL",
    "DEFAULT_CALL_BUDGET",
    "VaultSecrets",
    "check_vault_url",
    "clear_cache",
    "deadline",
    "parse_vault_ref",
    "vault_for",
    "vault_url",
]
