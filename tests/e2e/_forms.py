"""The request bodies Airflow 3.3's UI sends for a connection, rebuilt from the same hook metadata the UI reads.

Recorded from the real UI (and re-checked by the Chromium test, which compares the browser's request with
:func:`ui_add_body`):
- Add → Save posts only the standard fields the user filled, plus ``extra``: every extra field of the type's
  form in the form's order, ``null`` when left empty, as ``JSON.stringify(extra, null, 2)``.
- The list's Test button posts the connection *as read back* from ``GET /connections/{id}`` (masked values
  included), with ``""`` for empty standard fields.
"""

from __future__ import annotations

import json
from typing import Any


def provider_connection_type() -> dict[str, Any]:
    """Our connection type's entry in ``get_provider_info()`` (type name, hook name, form fields)."""
    from airflow_secure_mail.get_provider_info import get_provider_info

    (entry,) = get_provider_info()["connection-types"]
    return dict(entry)


def vault_path_field() -> str:
    """The extra that holds the Vault path of the SMTP credentials, as the form names it."""
    fields = provider_connection_type()["conn-fields"]
    return "vault_path" if "vault_path" in fields else "vault_secret_path"


def ui_extra(meta: dict[str, Any], values: dict[str, Any], *, raw_extra: dict[str, Any] | None = None) -> str:
    """``extra`` as the form serialises it: each form field (its value, else its default, else null)."""
    extra: dict[str, Any] = dict(raw_extra or {})
    for name, spec in (meta.get("extra_fields") or {}).items():
        extra[name] = values.get(name, spec.get("value"))
    unknown = set(values) - set(meta.get("extra_fields") or {})
    if unknown:
        raise KeyError(f"not on the {meta['connection_type']} form: {sorted(unknown)}")
    return json.dumps(extra, indent=2)


def ui_add_body(
    meta: dict[str, Any],
    conn_id: str,
    *,
    standard: dict[str, Any],
    extra: dict[str, Any] | None = None,
    raw_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of ``POST /api/v2/connections`` after filling the Add form and pressing Save."""
    body: dict[str, Any] = {
        "conn_type": meta["connection_type"],
        "connection_id": conn_id,
        "extra": ui_extra(meta, extra or {}, raw_extra=raw_extra),
    }
    body.update({k: v for k, v in standard.items() if v not in (None, "")})
    return body


def ui_test_body(stored: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /api/v2/connections/test`` when Test is pressed on a row of the connection list."""
    extra = stored.get("extra")
    return {
        "conn_type": stored["conn_type"],
        "connection_id": stored["connection_id"],
        "description": stored.get("description") or "",
        "extra": "{}" if extra in ("", None) else extra,
        "host": stored.get("host") or "",
        "login": stored.get("login") or "",
        "password": stored.get("password") or "",
        "port": stored.get("port"),
        "schema": stored.get("schema") or "",
    }
