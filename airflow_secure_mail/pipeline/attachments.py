"""Read attachment bytes from local paths or object-storage URIs (``file://``, ``s3://`` ...)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.mail.compose import Attachment


def load_attachment(spec: str | Attachment | dict[str, Any], *, conn_id: str | None = None) -> Attachment:
    """An Attachment from a path/URI, a dict (``path``/``uri``, ``filename``, ``content_type``, ``conn_id``)."""
    if isinstance(spec, Attachment):
        return spec
    filename = content_type = None
    if isinstance(spec, dict):
        filename, content_type = spec.get("filename"), spec.get("content_type")
        conn_id = spec.get("conn_id", conn_id)
        spec = spec.get("uri") or spec.get("path") or ""
    if not isinstance(spec, str) or not spec:
        raise ConfigurationError(f"attachment {spec!r} is not a path or URI.")
    if "://" in spec:
        from airflow_secure_mail.archive.objects import storage_path

        path = storage_path(spec, conn_id)  # a named connection that does not resolve is refused, never anonymous
        try:
            data = path.read_bytes()
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"attachment {spec} cannot be read ({type(exc).__name__}).") from None
        name = filename or path.name
    else:
        try:
            with open(spec, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ConfigurationError(f"attachment {spec} cannot be read ({exc.strerror}).") from None
        name = filename or os.path.basename(spec)
    return Attachment(filename=name, content=data, content_type=content_type)


def load_attachments(specs: Iterable[Any] | None, *, conn_id: str | None = None) -> tuple[Attachment, ...]:
    if not specs:
        return ()
    if isinstance(specs, str | dict):
        specs = [specs]
    return tuple(load_attachment(s, conn_id=conn_id) for s in specs)
