"""``airflow-secure-mail``: ``doctor`` (check a connection and what it needs), ``setup``, ``archive``, ``silence``."""

from airflow_secure_mail.cli.main import main

__all__ = ["main"]
