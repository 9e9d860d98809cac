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


def _seed_keys(bao) -> None:
    """Alice's PGP key and S/MIME certificate, and our signing keys, in the dev OpenBao (made for this test)."""
    from airflow_secure_mail.testing.keys import SmimeCA, make_pgp_identity
    from airflow_secure_mail.vault import clear_cache

    alice, signer, ca = make_pgp_identity("alice@example.com"), make_pgp_identity("airflow@example.com"), SmimeCA()
    smime_alice, smime_signer = ca.issue("alice@example.com"), ca.issue("airflow@example.com")
    kv = bao.client().secrets.kv.v2
    kv.create_or_update_secret(
        path="mail-keys/alice@example.com",
        secret={"pgp_public_key": alice.public_key, "smime_certificate": smime_alice.certificate},
    )
    kv.create_or_update_secret(
        path="mail-signing",
        secret={
            "pgp_private_key": signer.private_key,
            "passphrase": signer.passphrase,
            "smime_private_key": smime_signer.private_key,
            "smime_certificate": smime_signer.certificate,
        },
    )
    clear_cache()


_PROTECTIONS = {
    "multipart": None,
    "pgp-transit": {"encrypt": "pgp"},
    "pgp-signed-protected-headers": {"encrypt": "pgp", "sign": True, "protect_headers": True},
    "pgp-signed-only": {"sign": True, "scheme": "pgp"},
    "smime-signed": {"encrypt": "smime", "sign": True},
    "smime-signed-only": {"sign": True, "scheme": "smime"},
}


@pytest.mark.parametrize("legacy", [False, True], ids=["fingerprint", "record-without-fingerprint"])
@pytest.mark.parametrize("protect", list(_PROTECTIONS))
def test_retried_task_is_still_already_sent_though_date_boundaries_and_ciphertext_change(
    mail_env, tmp_path, request, protect, legacy
):
    """A composed message is serialised anew at each try (Date, MIME boundaries, a fresh session key or
    signing time): the fingerprint taken before protection recognises it, and a record written before
    fingerprints existed is still judged by its archived bytes as then."""
    import time

    from airflow_secure_mail.mail.compose import Attachment, MailRequest
    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.pipeline.channel import MailChannel
    from airflow_secure_mail.pipeline.send import send_mail

    options = {}
    archive = _archive(tmp_path)
    if _PROTECTIONS[protect] is not None:
        _seed_keys(mail_env.bao)
        options["protection"] = Protection(signing_vault_path="mail-signing", **_PROTECTIONS[protect])
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
    if legacy:
        _drop_fingerprints(tmp_path / "a")
    before = _files(tmp_path / "a")
    time.sleep(1.1)  # a later Date header
    again = send_mail(mail, channel=MailChannel.for_conn(), archive=archive, **options)
    assert again.already_sent == 1 and len(mail_env.smtp.messages) == 1
    assert again.to_xcom()["message_ids"] == first.to_xcom()["message_ids"]
    assert _files(tmp_path / "a") == before


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


# -- content fingerprints (review follow-up): judged before our protection, stored in the record ---------------
def _signed_elsewhere(text: str, subject: str = "Invoice 42"):
    """A message signed elsewhere (``multipart/signed``): only its signature part may change on a retry."""
    from email import message_from_bytes, policy

    raw = (
        f"From: airflow@example.com\r\nTo: ops@example.com\r\nSubject: {subject}\r\n"
        f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: {MESSAGE_ID}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="B"\r\n'
        f"\r\n--B\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--B\r\nContent-Type: application/pgp-signature\r\n\r\n"
        "-----BEGIN PGP SIGNATURE-----\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\n--B--\r\n"
    )
    return message_from_bytes(raw.encode(), policy=policy.SMTP)


def _encrypted_elsewhere(ciphertext: str):
    """A message encrypted elsewhere (PGP/MIME): its plaintext is never seen here."""
    from email import message_from_bytes, policy

    raw = (
        f"From: airflow@example.com\r\nTo: ops@example.com\r\nSubject: Invoice 42\r\n"
        f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: {MESSAGE_ID}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="E"\r\n\r\n'
        "--E\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        "--E\r\nContent-Type: application/octet-stream\r\n\r\n"
        f"-----BEGIN PGP MESSAGE-----\r\n{ciphertext}\r\n-----END PGP MESSAGE-----\r\n--E--\r\n"
    )
    return message_from_bytes(raw.encode(), policy=policy.SMTP)


@pytest.mark.parametrize("subject", ["Invoice 42", "..."], ids=["subject", "protected-headers"])
def test_other_content_signed_elsewhere_under_a_sent_message_id_is_refused(mail_env, tmp_path, subject):
    """The signed part is compared in full (only the signature may change): the reviewer's silent drop."""
    SecureSmtpHook().send(_signed_elsewhere("Amount due: 100 EUR", subject), archive=_archive(tmp_path))
    before = _files(tmp_path / "a")
    with pytest.raises(ArchiveIntegrityError, match=REFUSED):
        SecureSmtpHook().send(_signed_elsewhere("Amount due: 9,100 EUR", subject), archive=_archive(tmp_path))
    assert [b"Amount due: 100 EUR" in m.data for m in mail_env.smtp.messages] == [True]
    assert _files(tmp_path / "a") == before


def test_signed_elsewhere_again_with_a_new_signature_is_already_sent(mail_env, tmp_path):
    SecureSmtpHook().send(_signed_elsewhere("Amount due: 100 EUR"), archive=_archive(tmp_path))
    before = _files(tmp_path / "a")
    again = _signed_elsewhere("Amount due: 100 EUR")
    again.get_payload()[1].set_payload("-----BEGIN PGP SIGNATURE-----\r\nBBBB\r\n-----END PGP SIGNATURE-----\r\n")
    assert SecureSmtpHook().send(again, archive=_archive(tmp_path)).message_id == MESSAGE_ID
    assert len(mail_env.smtp.messages) == 1
    assert _files(tmp_path / "a") == before


def test_other_ciphertext_encrypted_elsewhere_under_a_sent_message_id_is_refused(mail_env, tmp_path):
    """Its plaintext is never seen: any other byte is other content (re-encrypting needs a new Message-ID)."""
    SecureSmtpHook().send(_encrypted_elsewhere("hQEMAAAA"), archive=_archive(tmp_path))
    before = _files(tmp_path / "a")
    with pytest.raises(ArchiveIntegrityError, match=REFUSED):
        SecureSmtpHook().send(_encrypted_elsewhere("hQEMBBBB"), archive=_archive(tmp_path))
    assert [b"hQEMAAAA" in m.data for m in mail_env.smtp.messages] == [True]
    assert _files(tmp_path / "a") == before


def _inline_image_message(date: str = "Mon, 07 Dec 2026 10:00:00 +0000"):
    """Python's documented recipe for an inline image: its Content-ID is ``make_msgid()``, new at each build."""
    from email.message import EmailMessage
    from email.utils import make_msgid

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "airflow@example.com", "ops@example.com", "Chart"
    msg["Message-ID"], msg["Date"] = MESSAGE_ID, date
    msg.set_content("The chart is attached.")
    cid = make_msgid()
    msg.add_alternative(f'<p>The chart:</p><img src="cid:{cid[1:-1]}">', subtype="html")
    msg.get_payload()[1].add_related(b"\x89PNG\r\n\x1a\n-chart-", "image", "png", cid=cid)
    return msg


def test_inline_image_with_a_random_content_id_built_again_is_already_sent(mail_env, tmp_path):
    SecureSmtpHook().send(_inline_image_message(), archive=_archive(tmp_path))
    before = _files(tmp_path / "a")
    again = SecureSmtpHook().send(_inline_image_message("Mon, 07 Dec 2026 10:05:00 +0000"), archive=_archive(tmp_path))
    assert again.message_id == MESSAGE_ID
    assert len(mail_env.smtp.messages) == 1
    assert _files(tmp_path / "a") == before


def test_retry_against_a_transit_archive_does_not_open_the_archived_copy(mail_env, tmp_path, transit_key):
    """The record's fingerprint decides: no read, no Transit decrypt call, for "already sent" and for "other"."""
    from airflow_secure_mail.archive.crypto import TransitSealer
    from tests.helpers import audit_paths

    SecureSmtpHook().send(_invoice("Amount due: 100 EUR"), archive=_archive(tmp_path, transit_key))
    TransitSealer.forget_keys()  # a later task: no data key in memory
    before = len(mail_env.bao.audit_requests())
    retry = _invoice("Amount due: 100 EUR", date="Mon, 07 Dec 2026 10:05:00 +0000")
    assert SecureSmtpHook().send(retry, archive=_archive(tmp_path, transit_key)).message_id == MESSAGE_ID
    with pytest.raises(ArchiveIntegrityError, match=REFUSED):
        SecureSmtpHook().send(_invoice("Amount due: 9,100 EUR"), archive=_archive(tmp_path, transit_key))
    assert [p for p in audit_paths(mail_env.bao, before) if p.startswith("transit/")] == []
    assert len(mail_env.smtp.messages) == 1


def _drop_fingerprints(root: Path) -> None:
    """Make the archive look written by the release before content fingerprints (records without one)."""
    import json

    for path in root.rglob("*.json"):
        data = json.loads(path.read_bytes())
        data.pop("content_fingerprint", None)
        path.write_bytes(json.dumps(data, sort_keys=True).encode())


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "transit"])
def test_record_without_a_fingerprint_is_judged_by_its_bytes(mail_env, tmp_path, request, encrypted):
    transit_key = request.getfixturevalue("transit_key") if encrypted else None
    SecureSmtpHook().send(_invoice("Amount due: 100 EUR"), archive=_archive(tmp_path, transit_key))
    _drop_fingerprints(tmp_path / "a")
    before = _files(tmp_path / "a")
    retry = _invoice("Amount due: 100 EUR", date="Mon, 07 Dec 2026 10:05:00 +0000")
    assert SecureSmtpHook().send(retry, archive=_archive(tmp_path, transit_key)).message_id == MESSAGE_ID
    with pytest.raises(ArchiveIntegrityError, match=REFUSED):
        SecureSmtpHook().send(_invoice("Amount due: 9,100 EUR"), archive=_archive(tmp_path, transit_key))
    assert len(mail_env.smtp.messages) == 1
    assert _files(tmp_path / "a") == before


def test_record_without_a_fingerprint_refuses_other_content_signed_elsewhere(mail_env, tmp_path):
    SecureSmtpHook().send(_signed_elsewhere("Amount due: 100 EUR"), archive=_archive(tmp_path))
    _drop_fingerprints(tmp_path / "a")
    with pytest.raises(ArchiveIntegrityError, match=REFUSED):
        SecureSmtpHook().send(_signed_elsewhere("Amount due: 9,100 EUR"), archive=_archive(tmp_path))
    assert len(mail_env.smtp.messages) == 1


def _with_preamble(preamble: str):
    """A fixed multipart message (no random Content-ID) whose only difference is its preamble."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "airflow@example.com", "ops@example.com", "Invoice 42"
    msg["Message-ID"], msg["Date"] = MESSAGE_ID, "Mon, 07 Dec 2026 10:00:00 +0000"
    msg.set_content("See the attached invoice.")
    msg.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="invoice.csv")
    msg.preamble = preamble
    return msg


def test_other_preamble_under_a_sent_message_id_is_refused(mail_env, tmp_path):
    """Text before the first part is shown by some readers: it is content too."""
    SecureSmtpHook().send(_with_preamble("Pay to account A."), archive=_archive(tmp_path))
    with pytest.raises(ArchiveIntegrityError, match=REFUSED):
        SecureSmtpHook().send(_with_preamble("Pay to account B."), archive=_archive(tmp_path))
    assert [b"account A" in m.data for m in mail_env.smtp.messages] == [True]
