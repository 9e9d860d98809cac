"""``airflow-secure-mail``: ``doctor`` (check a connection and the services it needs), ``setup`` and ``silence``."""

from airflow_secure_mail.cli.main import main

__all__ = ["main"]
