"""Pure tests (no server): the Outgoing value, per-recipient copies, header surgery on wire bytes, archive records,
and the rule that turns outcomes into success or an error."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email import policy as email_policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_secure_mail.archive.record import ArchiveStatus, RecordMetadata
from airflow_secure_mail.errors import ArchiveIntegrityError, DeliveryError, PolicyViolation
from airflow_secure_mail.mail.compose import MailRequest, compose, compose_each
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.mail.wire import split_fields, with_headers
from airflow_secure_mail.pipeline.result import raise_for_outcomes
from airflow_secure_mail.transport.session import SendReceipt

_LOCAL = st.from_regex(r"[a-z][a-z0-9._+-]{0,15}[a-z0-9]", fullmatch=True).filter(lambda s: ".." not in s)
_NAME = st.text(
    st.characters(
        min_codepoint=32, max_codepoint=0x2FF, blacklist_categories=("Cc",), blacklist_characters='"\\<>,;:@()[]'
    ),
    max_size=20,
)


def _request(**kw: object) -> MailRequest:
    base: dict[str, object] = {"sender": "airflow@example.com", "subject": "s", "text": "body\n", "id_seed": "d|t|r|-1"}
    return MailRequest(**(base | kw))  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(locals_=st.lists(_LOCAL, min_size=1, max_size=6, unique=True), name=_NAME)
def test_each_copy_has_only_its_recipient_and_the_same_body(locals_: list[str], name: str) -> None:
    addresses = [f"{x}@example.com" for x in locals_]
    to = [f"{name.strip()} <{addresses[0]}>" if name.strip() else addresses[0], *addresses[1:]]
    _, copies = compose_each(_request(to=tuple(to)))
    assert [c.recipients for c in copies] == [(a,) for a in addresses]
    bodies = {c.data.partition(b"\r\n\r\n")[2] for c in copies}
    assert len(bodies) == 1
    assert len({c.message_id for c in copies}) == len(copies)
    for copy in copies:
        parsed = message_from_bytes(copy.data, policy=email_policy.default)
        assert [a.addr_spec for a in parsed["To"].addresses] == list(copy.recipients)
        assert parsed["Message-ID"] == copy.message_id
        assert b"\r\n\r\n" in copy.data and all(
            b"\n" not in f.replace(b"\r\n", b"") for f in split_fields(copy.data)[0]
        )


def test_copies_keep_their_message_ids_across_retries_and_change_with_content() -> None:
    _, first = compose_each(_request(to=("a@example.com", "b@example.com")))
    _, again = compose_each(_request(to=("a@example.com", "b@example.com")))
    _, other = compose_each(_request(to=("a@example.com", "b@example.com"), text="other\n"))
    assert [c.message_id for c in first] == [c.message_id for c in again]
    assert not {c.message_id for c in first} & {c.message_id for c in other}


def test_a_bad_address_among_many_copies_is_refused_by_name() -> None:
    with pytest.raises(PolicyViolation, match="bcc") as info:
        compose_each(_request(to=("a@example.com",), bcc=("ok@example.com", "bad@@example.com")))
    assert info.value.item is not None and "bad@@example.com" in info.value.item


def test_with_headers_replaces_only_the_named_fields() -> None:
    message, _ = compose(_request(to=("a@example.com",), cc=("c@example.com",)))
    wire = message.as_bytes(policy=email_policy.SMTP)
    changed = with_headers(wire, To="b@example.com", Message_ID="<x@example.com>")
    old_fields, old_body = split_fields(wire)
    new_fields, new_body = split_fields(changed)
    assert new_body == old_body
    assert [f.split(b":")[0] for f in new_fields] == [f.split(b":")[0] for f in old_fields]
    assert b"To: b@example.com" in new_fields and b"Message-ID: <x@example.com>" in new_fields
    assert b"Cc: c@example.com" in new_fields


@pytest.mark.parametrize("value", ["b@example.com\r\nBcc: evil@example.com", "b@example.com\nX: y"])
def test_with_headers_refuses_line_breaks(value: str) -> None:
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        with_headers(b"To: a@example.com\r\n\r\nbody", To=value)


def test_record_metadata_round_trips_and_keeps_the_json_layout() -> None:
    meta = RecordMetadata(
        key="k" * 40, sender="a@example.com", recipients=("b@example.com",), size=3, stored_size=3,
        sha256="0" * 64, staged_at="2026-11-29T00:00:00+00:00", message_id="<m@example.com>",
    )  # fmt: skip
    committed = meta.committed(ArchiveStatus.SENT, "2026-11-29T00:00:01+00:00", {"tls_version": "TLSv1.3"}, None)
    data = committed.to_dict()
    assert data["envelope"] == {"sender": "a@example.com", "recipients": ["b@example.com"]}
    assert data["status"] == "sent" and data["tls"] == {"version": "TLSv1.3", "cipher": None}
    assert "resend_of" not in data
    assert RecordMetadata.from_json(committed.to_json()) == committed


@pytest.mark.parametrize(("raw", "why"), [(b"{", "not valid JSON"), (b"[]", "not a valid record"),
                                          (b'{"status": "sent"}', "not a valid record")])  # fmt: skip
def test_damaged_record_metadata_is_an_integrity_error(raw: bytes, why: str) -> None:
    with pytest.raises(ArchiveIntegrityError, match=why):
        RecordMetadata.from_json(raw, where="messages/x")


def test_only_delivered_states_stop_a_retry() -> None:
    assert {s for s in ArchiveStatus if s.delivered} == {"sent", "partially_refused"}  # "unknown" is sent again


def _receipt(accepted: tuple[str, ...], refused: dict[str, tuple[int, str]]) -> SendReceipt:
    now = datetime.now(UTC)
    return SendReceipt("<m@x>", "a@example.com", accepted, refused, "250 ok", "TLSv1.3", None, now, now)


def test_a_partial_refusal_never_names_a_bcc_recipient() -> None:
    item = Outgoing("a@example.com", ("to@example.com", "secret@example.com"), b"", hidden=("secret@example.com",))
    outcome = _receipt(("to@example.com",), {"secret@example.com": (550, "no such user")})
    with pytest.raises(DeliveryError, match=r"1 of 2 recipients refused: a Bcc recipient \(550\)") as info:
        raise_for_outcomes([item], [outcome], allow_partial=False)
    assert "secret" not in str(info.value)
    raise_for_outcomes([item], [outcome], allow_partial=True)  # allowed: no error


def test_renamed_names_still_work_for_one_release_and_say_what_replaces_them(tmp_path) -> None:
    import importlib
    import sys

    from airflow_secure_mail.archive.record import ArchiveRecord
    from airflow_secure_mail.archive.store import MailArchive

    sys.modules.pop("airflow_secure_mail.sources", None)
    with pytest.warns(DeprecationWarning, match="import from airflow_secure_mail.pipeline.attachments"):
        sources = importlib.import_module("airflow_secure_mail.sources")
    assert sources.load_attachments(None) == ()
    with pytest.warns(DeprecationWarning, match="use MailArchive.sealer"):
        assert MailArchive(f"file://{tmp_path}").envelope is None
    meta = RecordMetadata(key="k", sender="a@example.com", recipients=("b@example.com",), size=1, stored_size=1,
                          sha256="0" * 64, staged_at="2026-11-29T00:00:00+00:00")  # fmt: skip
    with pytest.warns(DeprecationWarning, match="read ArchiveRecord.meta"):
        assert ArchiveRecord("k", "messages/2026/11/29/k", meta).metadata["envelope"]["sender"] == "a@example.com"
    with pytest.warns(DeprecationWarning, match="crypto.TransitEnvelope is deprecated: use TransitSealer"):
        from airflow_secure_mail.archive.crypto import TransitEnvelope, TransitSealer
    assert TransitEnvelope is TransitSealer


def test_an_outgoing_from_elsewhere_is_checked_and_a_refused_hidden_recipient_is_not_named() -> None:
    from airflow_secure_mail.mail.external import checked

    data = b"To: ops@example.com\r\nBcc: secret@relay.internal\r\n\r\nbody\r\n"
    item = Outgoing(
        "a@example.com", ("ops@example.com", "secret@relay.internal"), data, hidden=("secret@relay.internal",)
    )
    with pytest.raises(PolicyViolation, match="a hidden recipient of the message is refused") as info:
        checked(item)
    assert info.value.rule == "special_use_domain" and "secret" not in str(info.value)
    allowed = checked(item, allow_special_use_domains=True)
    assert allowed.data == b"To: ops@example.com\r\n\r\nbody\r\n" and allowed.recipients == item.recipients
