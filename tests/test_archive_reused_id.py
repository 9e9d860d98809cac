"""A caller-chosen Message-ID reused for different content is refused loudly, never reported "already sent"."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.errors import ArchiveIntegrityError, DeliveryError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from tests.helpers import plain_message

MESSAGE_ID = "<invoice-2026-0042@example.com>"
REFUSED = (
    rf"Message-ID {MESSAGE_ID} was already (sent|archived \(not yet delivered\)) with different content on "
    r"\d{4}-\d\d-\d\d; give this message a new Message-ID\."
)


def _invoice(body: str, date: str = "Mon, 07 Dec 2026 10:00:00 +0000"):
    msg = plain_message(subject="Invoice 42", body=body)
    msg["Message-ID"] = MESSAGE_ID
    msg["Date"] = date
    return msg


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _archive(tmp_path: Path, transit_key: str | None = None) -> MailArchive:
    return MailArchive(f"file://{tmp_path}/a", transit_key=transit_key)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "transit"])
def test_different_message_under_a_sent_message_id_is_refused_and_the_record_kept(
    mail_env, tmp_path, request, encrypted
):
    transit_key = request.getfixturevalue("transit_key") if encrypted else None
    SecureSmtpHook().send(_invoice("Amount due: 100 EUR"), archive=_archive(tmp_path, transit_key))
    before = _files(tmp_path / "a")
    with pytest.raises(ArchiveIntegrityError, match=REFUSED) as refused:
        SecureSmtpHook().send(_invoice("Amount due: 9,100 EUR"), archive=_archive(tmp_path, transit_key))
    assert "already sent with different content" in str(refused.value)
    assert [b"Amount due: 100 EUR" in m.data for m in mail_env.smtp.messages] == [True]
    assert _files(tmp_path / "a") == before  # the first record, bytes and JSON, untouched; nothing added


def test_same_message_again_is_already_sent_even_with_a_new_date(mail_env, tmp_path):
    first = SecureSmtpHook().send(_invoice("Amount due: 100 EUR"), archive=_archive(tmp_path))
    before = _files(tmp_path / "a")
    again = SecureSmtpHook().send(
        _invoice("Amount due: 100 EUR", date="Mon, 07 Dec 2026 10:05:00 +0000"), archive=_archive(tmp_path)
    )
    assert again.message_id == first.message_id == MESSAGE_ID
    assert len(mail_env.smtp.messages) == 1
    assert _files(tmp_path / "a") == before


def test_different_message_under_a_pending_message_id_is_refused_not_swapped_for_the_staged_one(mail_env, tmp_path):
    mail_env.smtp.script.data_replies = ["554 5.7.1 rejected for now"]
    with pytest.raises(DeliveryError, match="554"):
        SecureSmtpHook().send(_invoice("Amount due: 100 EUR"), archive=_archive(tmp_path))
    before = _files(tmp_path / "a")
    with pytest.raises(ArchiveIntegrityError, match=REFUSED) as refused:
        SecureSmtpHook().send(_invoice("Amount due: 9,100 EUR"), archive=_archive(tmp_path))
    assert "not yet delivered" in str(refused.value)
    assert mail_env.smtp.messages == []  # neither the staged first message nor the second went out
    assert _files(tmp_path / "a") == before


@pytest.mark.parametrize("protect", [False, True], ids=["multipart", "pgp-transit"])
def test_retried_task_is_still_already_sent_though_date_boundaries_and_ciphertext_change(
    mail_env, tmp_path, request, protect
):
    """A composed message is serialised anew at each try (Date, MIME boundaries, a fresh PGP session key)."""
    import time

    from airflow_secure_mail.channel import MailChannel
    from airflow_secure_mail.mail.compose import Attachment, MailRequest
    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.pipeline import send_mail
    from airflow_secure_mail.testing.keys import make_pgp_identity
    from airflow_secure_mail.vault import clear_cache

    options = {}
    archive = _archive(tmp_path)
    if protect:
        alice = make_pgp_identity("alice@example.com")
        mail_env.bao.client().secrets.kv.v2.create_or_update_secret(
            path="mail-keys/alice@example.com", secret={"pgp_public_key": alice.public_key}
        )
        clear_cache()
        options["protection"] = Protection(encrypt="pgp")
        archive = _archive(tmp_path, request.getfixturevalue("transit_key"))
    mail = MailRequest(
        sender="airflow@example.com",
        to=("alice@example.com",),
        subject="report",
        text="see attached",
        html="<p>see attached</p>",
        attachments=(Attachment("report.csv", b"a,b\n1,2\n", "text/csv"),),
        id_seed="dag|task|run|-1",
    )
    first = send_mail(mail, channel=MailChannel.for_conn(), archive=archive, **options)
    time.sleep(1.1)  # a later Date header
    again = send_mail(mail, channel=MailChannel.for_conn(), archive=archive, **options)
    assert again.already_sent == 1 and len(mail_env.smtp.messages) == 1
    assert again.to_xcom()["message_ids"] == first.to_xcom()["message_ids"]


def test_reused_message_id_is_refused_even_when_the_archive_may_be_skipped(mail_env, tmp_path):
    """``on_error='send'`` lets mail go when the store fails, never a second message under a sent one's key."""
    archive = MailArchive(f"file://{tmp_path}/a", on_error="send")
    SecureSmtpHook().send(_invoice("Amount due: 100 EUR"), archive=archive)
    with pytest.raises(ArchiveIntegrityError, match=REFUSED):
        SecureSmtpHook().send(_invoice("Amount due: 9,100 EUR"), archive=archive)
    assert len(mail_env.smtp.messages) == 1


def test_different_message_meeting_a_staged_copy_without_index_is_refused(mail_env, tmp_path):
    """An earlier try stopped after staging but before its index entry: its bytes are not swapped in either."""
    mail_env.smtp.script.data_replies = ["554 5.7.1 rejected for now"]
    with pytest.raises(DeliveryError, match="554"):
        SecureSmtpHook().send(_invoice("Amount due: 100 EUR"), archive=_archive(tmp_path))
    before = _files(tmp_path / "a")
    [index] = list((tmp_path / "a" / "index").rglob("*.json"))
    index.unlink()
    with pytest.raises(ArchiveIntegrityError, match=REFUSED):
        SecureSmtpHook().send(_invoice("Amount due: 9,100 EUR"), archive=_archive(tmp_path))
    assert mail_env.smtp.messages == []
    assert _files(tmp_path / "a") == before  # the index entry rewritten is the first message's own
