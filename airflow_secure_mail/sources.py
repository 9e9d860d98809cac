"""Deprecated module name: attachments are loaded by :mod:`airflow_secure_mail.pipeline.attachments`."""

import warnings

from airflow_secure_mail.pipeline.attachments import load_attachment, load_attachments

warnings.warn(
    "airflow_secure_mail.sources is deprecated: import from airflow_secure_mail.pipeline.attachments.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["load_attachment", "load_attachments"]
