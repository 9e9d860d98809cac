"""Deprecated module name: attachments are loaded by :mod:`airflow_secure_mail.attachments`."""

import warnings

from airflow_secure_mail.attachments import load_attachment, load_attachments

warnings.warn(
    "airflow_secure_mail.sources is deprecated: import from airflow_secure_mail.attachments.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["load_attachment", "load_attachments"]
