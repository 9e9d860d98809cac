"""Failover (issue 24): a copy the primary relay never took goes through the next relay in
``fallback_conn_ids``, exactly once, with the one archive record naming the relay that took it.

One SmtpCatcher serves as both relays: the primary on its STARTTLS port (or a closed port), the fallback on
its implicit-TLS port, so ``Received.port`` says which relay received each message.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.errors import DeliveryError
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from airflow_secure_mail.testing._ports import free_port

ORIGIN = {"dag_id": "dag", "task_id": "task", "run_id": "run", "map_index": -1, "try_number": 1}


@pytest.fixture
def archive(tmp_path) -> MailArchive:
    return MailArchive(f"file://{tmp_path}/archive")


def _primary(mail_env, *, port: int | None = None, starttls: bool = True, **extra: object) -> None:
    extra.setdefault("fallback_conn_ids", "smtp_b")
    mail_env.set_smtp_conn("smtp_a", starttls=starttls, port=port, **extra)


def _fallback(mail_env, conn_id: str = "smtp_b", **extra: object) -> None:
    mail_env.set_smtp_conn(conn_id, **extra)  # the catcher's implicit-TLS port


def _send(monkeypatch, archive: MailArchive | None, priority: str, *, subject: str = "load failed"):  # type: ignore[no-untyped-def]
    """send_mail through smtp_a at ``priority``."""
    request = MailRequest(
        sender="airflow@example.com", to=("ops@example.com",), subject=subject, text="42", id_seed="dag|task|run|-1"
    )
    return send_mail(request, channel=MailChannel.for_conn("smtp_a"), archive=archive, origin=ORIGIN, priority=priority)


def _record(archive_dir, key: str) -> dict[str, object]:
    return dict(json.loads((archive_dir / f"{key}.json").read_text()))


def _outcome(archive_dir) -> dict[str, object]:
    """The one message's committed outcome (a failed or unknown try is kept as ``<key>.failed-N.json``)."""
    [path] = (archive_dir / "messages").rglob("*.failed-*.json")
    return dict(json.loads(path.read_text()))


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("airflow_secure_mail")]


def test_alert_goes_through_the_fallback_once_when_the_primary_is_down(mail_env, archive, tmp_path, caplog):
    closed = free_port()
    _primary(mail_env, port=closed, starttls=False)
    _fallback(mail_env)
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"):
        result = _send(mail_env.monkeypatch, archive, "alert")
    [received] = mail_env.smtp.messages
    assert received.port == mail_env.smtp.port() and received.rcpt_tos == ["ops@example.com"]
    [key] = result.archive_keys
    record = _record(tmp_path / "archive", key)
    assert (record["status"], record["relay"]) == ("sent", "smtp_b")
    [line] = [line for line in _lines(caplog) if "goes through fallback" in line]
    assert line == (
        f"relay smtp_a is unreachable (cannot connect to localhost:{closed} (SMTPConnectError): check host, port "
        "and network): alert mail goes through fallback smtp_b"
    )
    [sent] = [line for line in _lines(caplog) if line.startswith("sent ")]
    assert " via fallback connection smtp_b over " in sent  # not the primary's host:port
    again = _send(mail_env.monkeypatch, archive, "alert")  # the task's retry: the one record says sent
    assert again.already_sent == 1 and len(mail_env.smtp.messages) == 1


def test_bulk_mail_does_not_fail_over_without_bulk_failover(mail_env, archive, tmp_path):
    closed = free_port()
    _primary(mail_env, port=closed, starttls=False)
    _fallback(mail_env)
    expected = (
        rf"^relay smtp_a is unreachable \(cannot connect to localhost:{closed} .*\): bulk mail does not fail over "
        r"to smtp_b; set extra bulk_failover=true on connection 'smtp_a' to let it\.$"
    )
    with pytest.raises(DeliveryError, match=expected) as caught:
        _send(mail_env.monkeypatch, archive, "bulk")
    assert caught.value.transient
    assert mail_env.smtp.messages == []
    meta = _outcome(tmp_path / "archive")
    assert (meta["status"], meta["relay"]) == ("failed", "smtp_a")
    assert re.match(expected, meta["error"])


def test_bulk_mail_fails_over_with_bulk_failover(mail_env, archive, tmp_path):
    _primary(mail_env, port=free_port(), starttls=False, bulk_failover=True)
    _fallback(mail_env)
    result = _send(mail_env.monkeypatch, archive, "bulk")
    [received] = mail_env.smtp.messages
    assert received.port == mail_env.smtp.port()
    [key] = result.archive_keys
    assert _record(tmp_path / "archive", key)["relay"] == "smtp_b"


def test_a_primary_refusing_tls_fails_over(mail_env, archive, tmp_path, caplog):
    _primary(mail_env)  # STARTTLS port, refused below
    _fallback(mail_env)
    mail_env.smtp.script.refuse_starttls = True
    with caplog.at_level(logging.WARNING, logger="airflow_secure_mail"):
        result = _send(mail_env.monkeypatch, archive, "alert")
    [received] = mail_env.smtp.messages
    assert received.port == mail_env.smtp.port() and received.tls_version
    [key] = result.archive_keys
    assert _record(tmp_path / "archive", key)["relay"] == "smtp_b"
    where = f"localhost:{mail_env.smtp.port(starttls=True)}"
    assert (
        f"relay smtp_a failed TLS ({where} refused STARTTLS (454); TLS is required, nothing was sent): "
        "alert mail goes through fallback smtp_b" in _lines(caplog)
    )


def test_an_exhausted_primary_sends_alerts_through_the_fallback_and_stops_bulk(mail_env, archive, tmp_path, caplog):
    _primary(mail_env)
    _fallback(mail_env)
    mail_env.smtp.script.data_replies.append("554 5.2.0 daily quota exceeded")
    with caplog.at_level(logging.WARNING, logger="airflow_secure_mail"):
        result = _send(mail_env.monkeypatch, archive, "alert")
    [received] = mail_env.smtp.messages
    assert received.port == mail_env.smtp.port()
    [key] = result.archive_keys
    assert _record(tmp_path / "archive", key)["relay"] == "smtp_b"
    where = f"localhost:{mail_env.smtp.port(starttls=True)}"
    assert (
        f"relay smtp_a is exhausted ({where} refused for its daily quota at DATA (554 5.2.0 daily quota exceeded); "
        "bulk mail through it stops until 00:00 UTC (alert mail goes through extra fallback_conn_ids if set)): "
        "alert mail goes through fallback smtp_b" in _lines(caplog)
    )
    mail_env.smtp.script.data_replies.append("554 5.2.0 daily quota exceeded")
    with pytest.raises(
        DeliveryError, match=r"^relay smtp_a is exhausted \(.*\): bulk mail does not fail over"
    ) as caught:
        _send(mail_env.monkeypatch, archive, "bulk", subject="report")
    assert caught.value.exhausted and not caught.value.transient
    assert len(mail_env.smtp.messages) == 1


def test_a_copy_lost_after_data_is_not_resent_through_the_fallback(mail_env, archive, tmp_path, caplog):
    _primary(mail_env, retries=0)
    _fallback(mail_env)
    mail_env.smtp.script.drop_in_data = 1  # the primary's only try: the fallback would store it
    with (
        caplog.at_level(logging.WARNING, logger="airflow_secure_mail"),
        pytest.raises(DeliveryError, match=r"lost at DATA") as caught,
    ):
        _send(mail_env.monkeypatch, archive, "alert")
    assert caught.value.maybe_delivered
    assert mail_env.smtp.messages == []
    assert not any("goes through fallback" in line for line in _lines(caplog))
    [warning] = [line for line in _lines(caplog) if "may have been delivered" in line]
    assert warning.endswith(
        "the connection to relay smtp_a was lost after DATA, so it may have been delivered: not sent through "
        "fallback smtp_b (a retry of the task sends the staged copy again)"
    )
    meta = _outcome(tmp_path / "archive")
    assert (meta["status"], meta["relay"]) == ("unknown", "smtp_a")


def test_every_relay_down_is_one_error_naming_each(mail_env, archive, tmp_path):
    closed_a, closed_d = free_port(), free_port()
    _primary(mail_env, port=closed_a, starttls=False, fallback_conn_ids=["smtp_b", "smtp_c", "smtp_nowhere", "smtp_d"])
    freeze = f"{mail_env.secret_path}-b.freeze"
    _fallback(mail_env, "smtp_b", freeze_vault_path=freeze)
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(
        path=freeze, secret={"frozen": True, "reason": "leaked key", "since": "2026-12-08T00:00:00Z", "by": "ops"}
    )
    _fallback(mail_env, "smtp_c", auth="password", vault_path="")  # no vault_path: misconfigured
    _fallback(mail_env, "smtp_d", port=closed_d)
    with pytest.raises(DeliveryError) as caught:
        _send(mail_env.monkeypatch, archive, "alert")
    message = str(caught.value)
    assert message.startswith(
        f"every relay failed (alert mail): smtp_a is unreachable (cannot connect to localhost:{closed_a} "
    )
    assert "; smtp_b is frozen (leaked key); " in message
    assert "; smtp_c is misconfigured (connection 'smtp_c' needs extra vault_path: " in message
    assert "; smtp_nowhere is misconfigured (AirflowNotFoundException: " in message
    assert message.endswith(f"; smtp_d is unreachable (cannot connect to localhost:{closed_d} (SMTPConnectError): "
                            "check host, port and network).")  # fmt: skip
    assert caught.value.transient and mail_env.smtp.messages == []
    meta = _outcome(tmp_path / "archive")
    assert meta["status"] == "failed" and "relay" not in meta and meta["error"] == message


def test_only_the_copies_the_primary_did_not_take_fail_over(mail_env, archive, tmp_path):
    _primary(mail_env)
    _fallback(mail_env)
    mail_env.smtp.script.data_replies.append("554 5.2.0 daily quota exceeded")  # the first copy only
    request = MailRequest(
        sender="airflow@example.com", to=("ana@example.com", "bo@example.com"), subject="load failed", text="42",
        id_seed="dag|task|run|-1",
    )  # fmt: skip
    channel = MailChannel.for_conn("smtp_a")
    result = send_mail(
        request, channel=channel, archive=archive, origin=ORIGIN, one_message_per_recipient=True, priority="alert"
    )
    ports = {m.rcpt_tos[0]: m.port for m in mail_env.smtp.messages}
    assert ports == {"ana@example.com": mail_env.smtp.port(), "bo@example.com": mail_env.smtp.port(starttls=True)}
    relays = {_record(tmp_path / "archive", key)["envelope"]["recipients"][0]: _record(tmp_path / "archive", key)["relay"]
              for key in result.archive_keys}  # fmt: skip
    assert relays == {"ana@example.com": "smtp_b", "bo@example.com": "smtp_a"}
    again = send_mail(
        request, channel=channel, archive=archive, origin=ORIGIN, one_message_per_recipient=True, priority="alert"
    )
    assert again.already_sent == 2 and len(mail_env.smtp.messages) == 2
