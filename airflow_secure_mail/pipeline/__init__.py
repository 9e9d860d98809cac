"""The send pipeline: a request or a message built elsewhere becomes screened, protected, archived, delivered.

``send`` runs it (:func:`~airflow_secure_mail.pipeline.send.send_mail`); ``channel`` is what one connection
gives a send; ``prepare`` screens and protects; ``dispatch`` stages, delivers and commits; ``result`` is what
a send reports. It delivers through :class:`~airflow_secure_mail.connection.client.SmtpClient` and never
imports the hook: the hook is the Airflow face that calls down into it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"send_mail": "send", "asend_mail": "send", "asend_outgoing": "send", "MailChannel": "channel"}


def __getattr__(name: str) -> Any:
    """``from airflow_secure_mail.pipeline import send_mail`` keeps working (it was a module before 0.2)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_secure_mail.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f"airflow_secure_mail.pipeline.{module}"), name)
