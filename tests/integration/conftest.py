"""Fixtures shared by the integration tests of the transport and the connection: the send API under test
(sync and async), and extra SMTP catchers a test configures itself (stopped after it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.testing.smtp import SmtpCatcher


def send_with(api: str, hook: SecureSmtpHook, msg: EmailMessage | bytes, **kw: Any) -> Any:
    """``hook.send`` or ``hook.asend``, as the ``api`` fixture says."""
    if api == "async":
        return asyncio.run(hook.asend(msg, **kw))
    return hook.send(msg, **kw)


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server_factory(mail_env: Any, ca: Any) -> Iterator[Any]:
    started: list[SmtpCatcher] = []

    def make(**kw: Any) -> SmtpCatcher:
        catcher = SmtpCatcher(kw.pop("ca", ca), users={"airflow": mail_env.password}, **kw).start()
        started.append(catcher)
        return catcher

    yield make
    for catcher in started:
        catcher.stop()
