"""The failover extras (issue 24): ``fallback_conn_ids`` (ordered names) and ``bulk_failover`` (a boolean)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from airflow_secure_mail.connection.fields import FIELDS, conn_fields
from airflow_secure_mail.connection.settings import SmtpSettings
from airflow_secure_mail.errors import ConfigurationError, DeliveryError, SmtpAuthError, TransportSecurityError
from airflow_secure_mail.pipeline.dispatch import relay_down


@dataclass
class _Conn:
    extra_dejson: dict[str, object] = field(default_factory=dict)
    conn_id: str = "smtp_a"
    host: str = "smtp.example.com"
    port: int | None = 587
    login: str | None = None
    password: str | None = None


def _settings(**extra: object) -> SmtpSettings:
    return SmtpSettings.from_connection(_Conn({"vault_path": "smtp/a", **extra}))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, ()),
        ("", ()),
        ("smtp_b", ("smtp_b",)),
        (" smtp_b , smtp_c,", ("smtp_b", "smtp_c")),
        (["smtp_c", "smtp_b"], ("smtp_c", "smtp_b")),
        ('["smtp_b", "smtp_c"]', ("smtp_b", "smtp_c")),
        ("smtp_b,smtp_b", ("smtp_b",)),
    ],
)
def test_fallback_conn_ids_keep_their_order(given, expected):
    assert _settings(fallback_conn_ids=given).fallback_conn_ids == expected


@pytest.mark.parametrize(
    ("given", "expected"), [(None, False), (True, True), (False, False), ("true", True), ("False", False)]
)
def test_bulk_failover_is_a_boolean(given, expected):
    assert _settings(bulk_failover=given).bulk_failover is expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"fallback_conn_ids": {"a": 1}},
            "connection 'smtp_a': extra fallback_conn_ids must be a comma-separated list or a JSON list of names, "
            "not {'a': 1}.",
        ),
        (
            {"fallback_conn_ids": [1, 2]},
            "connection 'smtp_a': extra fallback_conn_ids must be a comma-separated list or a JSON list of names, "
            "not [1, 2].",
        ),
        (
            {"fallback_conn_ids": "[oops"},
            "connection 'smtp_a': extra fallback_conn_ids must be a comma-separated list or a JSON list of names, "
            "not '[oops'.",
        ),
        ({"bulk_failover": "maybe"}, "connection 'smtp_a': extra bulk_failover must be true or false, not 'maybe'."),
        ({"bulk_failover": 1}, "connection 'smtp_a': extra bulk_failover must be true or false, not 1."),
        (
            {"fallback_conn_ids": "smtp_b, smtp_a"},
            "connection 'smtp_a' lists itself in fallback_conn_ids: name other connections.",
        ),
    ],
)
def test_bad_failover_extras_say_what_to_set(extra, message):
    with pytest.raises(ConfigurationError) as caught:
        _settings(**extra)
    assert str(caught.value) == message


def test_the_form_shows_the_failover_extras_before_the_freeze_switch():
    names = [f.name for f in FIELDS]
    assert names.index("fallback_conn_ids") + 1 == names.index("bulk_failover")
    assert names.index("bulk_failover") + 1 == names.index("freeze_vault_path")
    form = conn_fields()
    assert form["fallback_conn_ids"]["schema"] == {"type": ["string", "null"]}
    assert form["bulk_failover"]["schema"] == {"type": ["boolean", "null"]}
    assert form["bulk_failover"]["description"].endswith("Default: false.")


def test_which_failures_may_go_through_another_relay():
    connect = DeliveryError("cannot connect to a:25 (OSError).", transient=True)
    tls = TransportSecurityError("a:25 refused STARTTLS (454).")
    auth = SmtpAuthError("a rejected the credentials (535).", code=535)
    opening = [connect, tls, auth]
    assert relay_down(connect, opening) == "is unreachable (cannot connect to a:25 (OSError))"
    assert relay_down(tls, opening) == "failed TLS (a:25 refused STARTTLS (454))"
    assert relay_down(auth, opening) == "failed AUTH (a rejected the credentials (535))"
    quota = DeliveryError("a:25 answered 554 '5.2.0 daily quota exceeded' at DATA.", code=554, exhausted=True)
    assert relay_down(quota, []) == "is exhausted (a:25 answered 554 '5.2.0 daily quota exceeded' at DATA)"
    assert relay_down(DeliveryError("a:25 answered 451 at MAIL.", transient=True), []) == (
        "keeps failing (a:25 answered 451 at MAIL)"
    )
    lost = DeliveryError("connection to a:25 lost at DATA.", transient=True, maybe_delivered=True)
    lost_quota = DeliveryError("lost.", transient=True, maybe_delivered=True, exhausted=True)
    content = DeliveryError("a:25 answered 554 '5.7.1 rejected' at DATA.", code=554)
    throttled = DeliveryError("a:25 is throttling us at MAIL (421 4.7.0).", code=421, throttled=True)
    refused = DeliveryError("every recipient was refused.", refused={"x@example.com": (450, "4.2.1")}, transient=True)
    for kept in (lost, lost_quota, content, throttled, refused):
        assert relay_down(kept, []) is None
    assert relay_down(lost, [lost]) is None and relay_down(lost_quota, [lost_quota]) is None  # may be delivered
    assert relay_down(tls, []) is None  # raised by a transaction, not while opening: the copy's own failure
