"""Deprecated module path (until 0.3): attachments are loaded by :mod:`airflow_secure_mail.pipeline.attachments`."""

import warnings

from airflow_secure_mail.pipeline.attachments import load_attachment, load_attachments

warnings.warn(
    "airflow_secure_mail.attachments is deprecated: import from airflow_secure_mail.pipeline.attachments.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["load_attachment", "load_attachments"]
