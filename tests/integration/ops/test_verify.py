"""``airflow-secure-mail verify``: yes for every copy really sent (as a mailbox saves it), no with the exact
reason for a forged one, an altered one and one with a second Subject prepended; on file:// and SeaweedFS."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from tests.integration.ops.seed import seed

RELAY = (
    b"Return-Path: <airflow@example.com>\n"
    b"Received: from relay.example (relay.example [127.0.0.1])\n"
    b"\tby mx.partner.example with ESMTPS id 4Xy; Tue, 8 Dec 2026 03:00:01 +0000\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel;\n"
    b"\tbh=abc=; b=def=\n"
    b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=partner.example\n"
    b"Authentication-Results: mx.partner.example; dkim=pass header.d=example.com\n"
    b"X-Spam-Status: No, score=0.1\n"
)


def saved(data: bytes) -> bytes:
    """The copy as a mailbox saves it: relay fields prepended, LF line endings."""
    return RELAY + data.replace(b"\r\n", b"\n")


def _cli(capsys, tmp_path: Path, data: bytes, *args: str) -> tuple[int, str]:
    from airflow_secure_mail.cli import main

    eml = tmp_path / f"saved-{random.getrandbits(32):08x}.eml"
    eml.write_bytes(data)
    code = main(["verify", str(eml), *args])
    return code, capsys.readouterr().out


def _send_real(url: str, conn_id: str | None = None, *, n: int, per_recipient: bool = False) -> None:
    request = MailRequest(
        sender="airflow@example.com",
        to=(f"ana{n}@partner.example", f"bo{n}@example.com"),
        subject=f"[Airflow] FAILED: etl.load {n}",
        text="The task failed.\n",
        html=f"<p>The task <b>etl.load</b> failed (run {n}).</p>",
    )
    origin = {"dag_id": "etl", "task_id": "load", "run_id": f"manual__{n}"}
    archive = MailArchive(url, conn_id)
    send_mail(request, channel=MailChannel.for_conn(), archive=archive, one_message_per_recipient=per_recipient,
              origin=origin)  # fmt: skip


def test_verify_on_a_thousand_record_file_archive(mail_env, tmp_path, capsys):
    url = f"file://{tmp_path}/archive"
    now = datetime.now(UTC)
    seeded = seed(MailArchive(url), 1000, end=now - timedelta(minutes=5), days=10)
    assert len(seeded.records) > 1000
    _send_real(url, n=1)
    _send_real(url, n=2, per_recipient=True)
    sent = [m.data for m in mail_env.smtp.messages]
    assert len(sent) == 3

    for data in sent:  # every copy really sent: yes, with its record
        code, out = _cli(capsys, tmp_path, saved(data), "--archive", url)
        assert code == 0, out
        assert out.startswith("OURS: the archived copy, byte-identical, after header fields the relays added\n")
        assert "  by           etl.load, run manual__" in out
        assert "  TLS          TLSv1.3" in out
        assert (
            "relay fields Return-Path, Received, DKIM-Signature, ARC-Seal, Authentication-Results, X-Spam-Status" in out
        )
    assert "  recipients   2\n" in _cli(capsys, tmp_path, sent[0], "--archive", url)[1]
    assert "  recipients   1\n" in _cli(capsys, tmp_path, sent[1], "--archive", url)[1]
    for message_id in random.Random(7).sample(sorted(seeded.messages), 25):  # and seeded copies, as saved
        code, out = _cli(capsys, tmp_path, saved(seeded.messages[message_id]), "--archive", url)
        assert code == 0 and f"  Message-ID   {message_id}\n" in out, out

    original = sent[0]
    forged = original.replace(b"Message-ID: <", b"Message-ID: <forged.", 1)  # same Subject/From, new Message-ID
    code, out = _cli(capsys, tmp_path, saved(forged), "--archive", url)
    forged_id = next(line for line in forged.decode().splitlines() if line.startswith("Message-ID:")).split()[1]
    assert code == 1
    assert out.startswith(f"NOT OURS: unknown Message-ID {forged_id}: no archived copy from ")

    altered = original.replace(b"(run 1)", b"(run 9)")
    code, out = _cli(capsys, tmp_path, saved(altered), "--archive", url)
    assert code == 1
    assert out.startswith("NOT OURS: content differs from the archived copy: body differs (from byte "), out

    resubjected = original.replace(b"Subject: [Airflow] FAILED", b"Subject: [Airflow] PASSED", 1)
    code, out = _cli(capsys, tmp_path, resubjected, "--archive", url)
    assert (code, out) == (1, "NOT OURS: content differs from the archived copy: header Subject changed\n")

    second_subject = b"Subject: [Airflow] Reset your password now\r\n" + original
    code, out = _cli(capsys, tmp_path, saved(second_subject), "--archive", url)
    assert (code, out) == (1, "NOT OURS: a second Subject field is prepended to the archived copy: forged\n")

    second_from = RELAY + b"From: IT <it@evil.example>\n" + original.replace(b"\r\n", b"\n")
    code, out = _cli(capsys, tmp_path, second_from, "--archive", url)
    assert (code, out) == (1, "NOT OURS: a second From field is prepended to the archived copy: forged\n")

    no_id = b"\r\n".join(line for line in original.split(b"\r\n") if not line.startswith(b"Message-ID:"))
    code, out = _cli(capsys, tmp_path, no_id, "--archive", url)
    assert (code, out) == (1, "NOT OURS: the message has no Message-ID: it was not sent by airflow-secure-mail\n")


def test_an_old_mail_needs_the_window_widened(mail_env, tmp_path, capsys):
    url = f"file://{tmp_path}/archive"
    seeded = seed(MailArchive(url), 20, end=datetime(2026, 1, 10, tzinfo=UTC), days=2)
    [(message_id, data)] = list(seeded.messages.items())[:1]
    late = data.replace(b"Date: ", b"Date: Sun, 1 Mar 2026 10:00:00 +0000\r\nX-Old-Date: ", 1)
    code, out = _cli(capsys, tmp_path, late, "--archive", url)
    assert code == 1 and out.startswith(f"NOT OURS: unknown Message-ID {message_id}: no archived copy from 2026-02-27")
    code, out = _cli(capsys, tmp_path, data, "--archive", url)
    assert code == 0, out


def test_a_damaged_archived_copy_is_no_with_that_reason(mail_env, tmp_path, capsys):
    url = f"file://{tmp_path}/archive"
    _send_real(url, n=3)
    [sent] = [m.data for m in mail_env.smtp.messages]
    [eml] = Path(tmp_path, "archive", "messages").rglob("*.eml")
    eml.chmod(0o600)
    eml.write_bytes(eml.read_bytes().replace(b"etl.load", b"etl.lOad"))
    code, out = _cli(capsys, tmp_path, saved(sent), "--archive", url)
    assert code == 1
    assert out == (
        f"NOT OURS: the archived copy {eml.parent.relative_to(tmp_path / 'archive')}/{eml.stem} is damaged: "
        f"archive object {eml.parent.relative_to(tmp_path / 'archive')}/{eml.name} does not match its SHA-256: "
        "it was altered.\n"
    )


def test_an_encrypted_at_rest_archive_is_opened_with_the_transit_key(mail_env, tmp_path, transit_key, capsys):
    url = f"file://{tmp_path}/sealed"
    request = MailRequest(sender="airflow@example.com", to=("ana@partner.example",), subject="sealed", text="x\n")
    send_mail(request, channel=MailChannel.for_conn(), archive=MailArchive(url, transit_key=transit_key))
    [sent] = [m.data for m in mail_env.smtp.messages]
    code, out = _cli(capsys, tmp_path, saved(sent), "--archive", url)
    assert code == 2 and out.startswith("error: ") and "transit_key" in out
    code, out = _cli(capsys, tmp_path, saved(sent), "--archive", url, "--transit-key", transit_key)
    assert code == 0, out
    [meta] = Path(tmp_path, "sealed", "messages").rglob("*[0-9a-f].json")
    assert json.loads(meta.read_bytes())["encryption"]


def test_a_pgp_signature_is_checked_against_the_signer_key_in_vault(mail_env, tmp_path, capsys):
    import hashlib
    import subprocess

    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.ops.verify import _signed_parts
    from airflow_secure_mail.testing.keys import seed_vault_keys

    keys = seed_vault_keys(mail_env.bao.client(), "ana@partner.example", "airflow@example.com", signing_path="sign-v")
    url = f"file://{tmp_path}/archive"
    request = MailRequest(sender="airflow@example.com", to=("ana@partner.example",), subject="signed", text="paid\n")
    protection = Protection(sign=True, scheme="pgp", signing_vault_path="sign-v")
    send_mail(request, channel=MailChannel.for_conn(), archive=MailArchive(url), protection=protection)
    [sent] = [m.data for m in mail_env.smtp.messages]

    code, out = _cli(capsys, tmp_path, saved(sent), "--archive", url)
    assert code == 0 and "  protection   signed (pgp)\n" in out
    assert "the signed copy we sent (signed (pgp)); give --signing-vault-path to check the signature" in out
    code, out = _cli(capsys, tmp_path, saved(sent), "--archive", url, "--signing-vault-path", "sign-v")
    fingerprint = keys.signer_pgp.fingerprint[-16:]
    assert code == 0 and f"  signature: good PGP signature by {fingerprint} (the signer key in Vault)" in out, out

    # someone who can write the (unsealed) archive alters the copy and fixes its hashes: only the signature tells
    [eml] = Path(tmp_path, "archive", "messages").rglob("*.eml")
    forged = eml.read_bytes().replace(b"paid", b"owed")
    meta_file = eml.with_suffix(".json")
    meta = json.loads(meta_file.read_bytes())
    meta["sha256"] = meta["content_sha256"] = hashlib.sha256(forged).hexdigest()
    for path, data in ((eml, forged), (meta_file, json.dumps(meta).encode())):
        path.chmod(0o600)
        path.write_bytes(data)
    assert _cli(capsys, tmp_path, saved(forged), "--archive", url)[0] == 0  # the bytes alone agree
    code, out = _cli(capsys, tmp_path, saved(forged), "--archive", url, "--signing-vault-path", "sign-v")
    assert code == 1 and out.startswith("NOT OURS: signature bad: GnuPG says "), out

    signed, signature = _signed_parts(forged)  # gpg's own command line agrees (the independent judge)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    (tmp_path / "sig.asc").write_bytes(signature)
    (tmp_path / "signed").write_bytes(signed)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    subprocess.run([*gpg, "--import"], input=keys.signer_pgp.public_key.encode(), capture_output=True, check=True)
    judged = subprocess.run(
        [*gpg, "--verify", str(tmp_path / "sig.asc"), str(tmp_path / "signed")], capture_output=True
    )
    assert judged.returncode == 1 and b"BAD signature" in judged.stderr
    (tmp_path / "signed").write_bytes(_signed_parts(sent)[0])
    judged = subprocess.run(
        [*gpg, "--verify", str(tmp_path / "sig.asc"), str(tmp_path / "signed")], capture_output=True
    )
    assert judged.returncode == 0 and b"Good signature" in judged.stderr
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)


def test_verify_on_seaweedfs(mail_env, s3_conn, tmp_path, capsys):
    url = f"s3://mail-test/verify-{random.getrandbits(32):08x}"
    seeded = seed(MailArchive(url, s3_conn), 60, end=datetime.now(UTC) - timedelta(minutes=5), days=3)
    _send_real(url, s3_conn, n=4)
    [sent] = [m.data for m in mail_env.smtp.messages]
    code, out = _cli(capsys, tmp_path, saved(sent), "--archive", url, "--conn-id", s3_conn)
    assert code == 0 and "  by           etl.load, run manual__4" in out, out
    for message_id in list(seeded.messages)[::15]:
        code, out = _cli(capsys, tmp_path, saved(seeded.messages[message_id]), "--archive", url, "--conn-id", s3_conn)
        assert code == 0 and f"  Message-ID   {message_id}\n" in out, out
    altered = sent.replace(b"(run 4)", b"(run 5)")
    code, out = _cli(capsys, tmp_path, saved(altered), "--archive", url, "--conn-id", s3_conn)
    assert code == 1 and out.startswith("NOT OURS: content differs from the archived copy: body differs"), out
