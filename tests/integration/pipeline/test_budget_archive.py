"""A bulk send the relay budget cuts short leaves the archive coherent (issue 24 item 2): what went out is
``sent``, what did not is ``failed`` or still staged (never ``sent``), and the task's next try sends exactly
the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from airflow_secure_mail.archive.record import ArchiveStatus, record_key
from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.connection.client import SmtpClient
from airflow_secure_mail.connection.settings import SmtpSettings
from airflow_secure_mail.errors import DeliveryError
from airflow_secure_mail.mail.screen import MailPolicy
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import asend_outgoing
from airflow_secure_mail.transport.budget import forget_budgets
from airflow_secure_mail.transport.rate import forget_rate_limits
from tests.integration.transport.budget_relay import BudgetRelay
from tests.integration.transport.budget_sender import messages

pytestmark = pytest.mark.smtp


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    forget_rate_limits()
    forget_budgets()
    yield
    forget_rate_limits()
    forget_budgets()


def _channel(port: int, budget_url: str, **extra: object) -> MailChannel:
    conn = SimpleNamespace(
        conn_id="budget_relay", host="127.0.0.1", port=port, login=None, password=None,
        extra_dejson={"security": "none", "auth": "none", "budget_url": budget_url, "retries": 0, **extra},
    )  # fmt: skip
    settings = SmtpSettings.from_connection(conn)
    return MailChannel.of(SmtpClient("budget_relay", settings, vault=object()))


def test_bulk_cut_short_by_the_budget_is_failed_or_staged_never_sent_and_the_retry_sends_the_rest(tmp_path):
    archive = MailArchive(f"file://{tmp_path}/archive")
    budget_url = f"file://{tmp_path}/budget"
    policy = MailPolicy(allow_special_use_domains=True)
    items = messages(3, "arch", 1)
    with BudgetRelay() as relay:
        tight = _channel(relay.port, budget_url, max_messages_per_minute=1, alert_reserve=0, deadline=3)
        with pytest.raises(DeliveryError, match=r"relay budget: no slot for bulk mail within the deadline"):
            asyncio.run(asend_outgoing(items, channel=tight, policy=policy, archive=archive, priority="bulk"))
        assert relay.ids() == ["<arch0@test>"]
        states = [archive.lookup(record_key(i.message_id, i.sender, i.recipients)) for i in items]
        assert states[0] is not None and states[0].meta.status == ArchiveStatus.SENT
        for record in states[1:]:
            assert record is not None and record.meta.status in (ArchiveStatus.FAILED, ArchiveStatus.PENDING)
            assert not record.delivered
        # the task's next try, with room in the budget: the first is already sent, the rest go out once
        roomy = _channel(relay.port, budget_url, max_messages_per_minute=600, deadline=30)
        result = asyncio.run(asend_outgoing(items, channel=roomy, policy=policy, archive=archive, priority="bulk"))
        assert result.already_sent == 1
        assert sorted(relay.ids()) == ["<arch0@test>", "<arch1@test>", "<arch2@test>"]
        for i in items:
            record = archive.lookup(record_key(i.message_id, i.sender, i.recipients))
            assert record is not None and record.meta.status == ArchiveStatus.SENT


def test_priority_is_checked_before_anything_is_sent(tmp_path):
    from airflow_secure_mail.errors import ConfigurationError

    with BudgetRelay() as relay:
        channel = _channel(relay.port, f"file://{tmp_path}/budget")
        with pytest.raises(ConfigurationError, match="priority must be 'alert' or 'bulk', not 'high'"):
            asyncio.run(asend_outgoing(messages(1, "p", 1), channel=channel, priority="high"))
        assert relay.mail_commands == 0
