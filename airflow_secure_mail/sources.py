"""Deprecated module name: attachments are loaded by :mod:`airflow_secure_mail.attachments`."""

from airflow_secure_mail.attachments import load_attachment, load_attachments

__all__ = ["load_attachment", "load_attachments"]
