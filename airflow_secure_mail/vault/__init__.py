"""Vault: the only package that talks to Vault (KV reads with a lease-aware cache, Transit, one login each).

Its public face is :mod:`airflow_secure_mail.vault.secrets` (re-exported here); the private modules under it
are the login per connection (``_login``), the guarded HTTP session (``_http``), the read cache (``_cache``),
the call budget (``_call``) and the mapping of failures to our errors (``_errors``).
"""

from airflow_secure_mail.vault.secrets import *  # noqa: F403
from airflow_secure_mail.vault.secrets import __all__ as __all__
