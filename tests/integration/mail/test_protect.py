"""PGP/MIME and S/MIME (mail/protect.py), checked with the independent gpg and openssl command-line tools."""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from airflow_secure_mail.errors import EncryptionKeyMissing
from airflow_secure_mail.mail.compose import Attachment, MailRequest
from airflow_secure_mail.mail.protect import Protection
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from airflow_secure_mail.testing.keys import SmimeCA, make_pgp_identity

BODY = "Quarterly numbers attached.\nFrom here on, trailing spaces stay:   \n"
CSV = b"region,total\nnorth,42\n"


@pytest.fixture(scope="session")
def pgp_ids():
    return {
        "alice": make_pgp_identity("alice@example.com"),
        "bob": make_pgp_identity("bob@example.com", algo="rsa3072"),
        "signer": make_pgp_identity("airflow@example.com"),
        "expired": make_pgp_identity("old@example.com", expire="seconds=1"),
    }


@pytest.fixture(scope="session")
def smime_ids():
    ca = SmimeCA()
    return {
        "ca": ca,
        "alice": ca.issue("alice@example.com"),
        "signer": ca.issue("airflow@example.com"),
        "expired": ca.issue("old@example.com", expired=True),
    }


@pytest.fixture(params=["gnupg", "sequoia"])
def pgp_backend(request):
    """Every PGP test runs on both backends; gpg stays the independent judge of the output."""
    return request.param


@pytest.fixture
def keys_in_vault(mail_env, pgp_ids, smime_ids):
    kv = mail_env.bao.client().secrets.kv.v2
    for who in ("alice", "bob", "expired"):
        data = {"pgp_public_key": pgp_ids[who].public_key}
        if who in smime_ids:
            data["smime_certificate"] = smime_ids[who].certificate
        kv.create_or_update_secret(path=f"mail-keys/{pgp_ids[who].address}", secret=data)
    kv.create_or_update_secret(
        path="mail-keys/carol@example.com", secret={"smime_certificate": smime_ids["signer"].certificate}
    )
    kv.create_or_update_secret(
        path="mail-signing",
        secret={
            "pgp_private_key": pgp_ids["signer"].private_key,
            "passphrase": pgp_ids["signer"].passphrase,
            "smime_private_key": smime_ids["signer"].private_key,
            "smime_certificate": smime_ids["signer"].certificate,
        },
    )
    return mail_env


def _send(protection: Protection, **kw):
    base = {
        "sender": "airflow@example.com",
        "to": ("alice@example.com",),
        "subject": "Q4 numbers",
        "text": BODY,
        "attachments": (Attachment("q4.csv", CSV),),
    }
    base.update(kw)
    return send_mail(MailRequest(**base), channel=MailChannel.for_conn(), protection=protection)


class GpgHome:
    """An independent gpg keyring for checking what the server received."""

    def __init__(self, *identities, public_only=()):
        self.dir = tempfile.mkdtemp(prefix="asm-verify-")
        os.chmod(self.dir, 0o700)
        with open(os.path.join(self.dir, "gpg-agent.conf"), "w") as conf:
            conf.write("s2k-count 65536\n")  # imports and decryptions in milliseconds (see testing.keys)
        for ident in identities:
            self.run("--import", input=ident.private_key.encode(), passphrase=ident.passphrase)
        for ident in public_only:
            self.run("--import", input=ident.public_key.encode())
        self.passphrases = [i.passphrase for i in identities]

    def run(self, *args, input=None, passphrase=None):
        cmd = ["gpg", "--homedir", self.dir, "--batch", "--status-fd", "2", "--trust-model", "always"]
        if passphrase:
            cmd += ["--pinentry-mode", "loopback", "--passphrase", passphrase]
        return subprocess.run([*cmd, *args], input=input, capture_output=True)

    def close(self):
        subprocess.run(["gpgconf", "--homedir", self.dir, "--kill", "all"], capture_output=True)


def _parts_raw(data: bytes) -> tuple[list[bytes], str]:
    """The raw bytes of each body part of a top-level multipart, exactly as received."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    boundary = re.search(r'boundary="([^"]+)"', head).group(1)
    body = data.split(b"\r\n\r\n", 1)[1]
    pieces = body.split(b"\r\n--" + boundary.encode())  # pieces[0] is the preamble
    return [p.removeprefix(b"\r\n") for p in pieces[1:] if not p.startswith(b"--")], head


# -- PGP/MIME ------------------------------------------------------------------------------------


def test_pgp_sign_and_encrypt_decrypts_with_gpg_and_verifies(pgp_backend, keys_in_vault, pgp_ids):
    result = _send(Protection(encrypt="pgp", sign=True, signing_vault_path="mail-signing", pgp_backend=pgp_backend))
    [received] = keys_in_vault.smtp.messages
    assert b"Quarterly numbers" not in received.data and b"north,42" not in received.data
    head = received.data.split(b"\r\n\r\n", 1)[0]
    assert b"multipart/encrypted" in head and b'protocol="application/pgp-encrypted"' in head
    armored = _parts_raw(received.data)[0][1].split(b"\r\n\r\n", 1)[1]
    home = GpgHome(pgp_ids["alice"], public_only=[pgp_ids["signer"]])
    try:
        out = home.run("--decrypt", input=armored, passphrase=pgp_ids["alice"].passphrase)
    finally:
        home.close()
    assert out.returncode == 0, out.stderr.decode()
    assert b"GOODSIG" in out.stderr and pgp_ids["signer"].fingerprint.encode() in out.stderr
    inner = email.message_from_bytes(out.stdout, policy=email.policy.default)
    assert inner.get_body(("plain",)).get_content().replace("\r\n", "\n") == BODY
    [att] = list(inner.iter_attachments())
    assert att.get_filename() == "q4.csv" and att.get_content().replace("\r\n", "\n").encode() == CSV
    assert result.to_xcom()["protection"] == "signed (pgp), encrypted (pgp)"


def test_pgp_signature_still_verifies_after_smtp_delivery(pgp_backend, keys_in_vault, pgp_ids):
    _send(Protection(sign=True, scheme="pgp", signing_vault_path="mail-signing", pgp_backend=pgp_backend))
    [received] = keys_in_vault.smtp.messages
    parts, head = _parts_raw(received.data)
    assert "application/pgp-signature" in head
    signed, sig_part = parts
    sig = sig_part.split(b"\r\n\r\n", 1)[1]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "data").write_bytes(signed)
        Path(tmp, "sig.asc").write_bytes(sig)
        home = GpgHome(public_only=[pgp_ids["signer"]])
        try:
            ok = home.run("--verify", str(Path(tmp, "sig.asc")), str(Path(tmp, "data")))
            assert b"Quarterly" in signed
            Path(tmp, "data").write_bytes(signed.replace(b"Quarterly", b"Quarterlx"))
            bad = home.run("--verify", str(Path(tmp, "sig.asc")), str(Path(tmp, "data")))
        finally:
            home.close()
    assert ok.returncode == 0 and b"GOODSIG" in ok.stderr, ok.stderr.decode()
    assert bad.returncode != 0 and b"BADSIG" in bad.stderr
    validsig = next(line for line in ok.stderr.decode("utf-8", "replace").splitlines() if "VALIDSIG" in line).split()
    hash_algo = {"8": "sha256", "9": "sha384", "10": "sha512"}[validsig[9]]
    assert f'micalg="pgp-{hash_algo}"' in head  # RFC 3156: micalg names the hash the signature really used


def test_flipped_ciphertext_byte_fails_to_decrypt(pgp_backend, keys_in_vault, pgp_ids):
    _send(Protection(encrypt="pgp", pgp_backend=pgp_backend))
    armored = _parts_raw(keys_in_vault.smtp.messages[0].data)[0][1].split(b"\r\n\r\n", 1)[1]
    lines = armored.split(b"\r\n")
    index = next(i for i, line in enumerate(lines) if len(line) > 60)  # a full base64 line, not the header
    line = bytearray(lines[index])
    line[30] = ord("A") if line[30] != ord("A") else ord("B")
    lines[index] = bytes(line)
    home = GpgHome(pgp_ids["alice"])
    try:
        out = home.run("--decrypt", input=b"\r\n".join(lines), passphrase=pgp_ids["alice"].passphrase)
    finally:
        home.close()
    assert out.returncode != 0
    assert b"Quarterly numbers" not in out.stdout


def test_missing_key_fails_closed_and_server_receives_nothing(pgp_backend, keys_in_vault):
    with pytest.raises(EncryptionKeyMissing, match="no pgp key for nokey@example.com") as info:
        _send(Protection(encrypt="pgp", pgp_backend=pgp_backend), to=("alice@example.com", "nokey@example.com"))
    assert info.value.recipient == "nokey@example.com"
    assert keys_in_vault.smtp.connections == 0


def test_drop_recipient_policy_drops_and_reports(pgp_backend, keys_in_vault):
    result = _send(
        Protection(encrypt="pgp", missing_key="drop_recipient", pgp_backend=pgp_backend),
        to=("alice@example.com", "nokey@example.com"),
    )
    [received] = keys_in_vault.smtp.messages
    assert received.rcpt_tos == ["alice@example.com"]
    assert result.to_xcom()["dropped_for_missing_key"] == ["nokey@example.com"]
    assert b"Quarterly numbers" not in received.data


def test_expired_pgp_key_counts_as_missing(pgp_backend, keys_in_vault):
    import time

    time.sleep(1.5)  # the fixture key expires one second after creation
    with pytest.raises(EncryptionKeyMissing, match="old@example.com"):
        _send(Protection(encrypt="pgp", pgp_backend=pgp_backend), to=("old@example.com",))
    assert keys_in_vault.smtp.connections == 0


def test_key_of_another_identity_is_refused(pgp_backend, keys_in_vault, pgp_ids):
    with pytest.raises(EncryptionKeyMissing, match="belongs to another identity"):
        _send(
            Protection(
                encrypt="pgp",
                recipient_keys={"mallory@example.com": pgp_ids["alice"].public_key},
                pgp_backend=pgp_backend,
            ),
            to=("mallory@example.com",),
        )


def test_bcc_recipients_get_separately_encrypted_copies(pgp_backend, keys_in_vault, pgp_ids):
    _send(Protection(encrypt="pgp", pgp_backend=pgp_backend), bcc=("bob@example.com",))
    copies = {tuple(m.rcpt_tos): m.data for m in keys_in_vault.smtp.messages}
    assert set(copies) == {("alice@example.com",), ("bob@example.com",)}
    alice_armored = _parts_raw(copies[("alice@example.com",)])[0][1].split(b"\r\n\r\n", 1)[1]
    home = GpgHome(pgp_ids["bob"])
    try:
        out = home.run("--decrypt", input=alice_armored, passphrase=pgp_ids["bob"].passphrase)
    finally:
        home.close()
    assert out.returncode != 0  # bob's key cannot open alice's copy: his key ID is not in it
    assert b"bob@example.com" not in copies[("alice@example.com",)]


def test_encrypt_to_archive_key_can_also_decrypt(pgp_backend, keys_in_vault, pgp_ids):
    _send(Protection(encrypt="pgp", encrypt_to=(pgp_ids["bob"].public_key,), pgp_backend=pgp_backend))
    armored = _parts_raw(keys_in_vault.smtp.messages[0].data)[0][1].split(b"\r\n\r\n", 1)[1]
    home = GpgHome(pgp_ids["bob"])
    try:
        out = home.run("--decrypt", input=armored, passphrase=pgp_ids["bob"].passphrase)
    finally:
        home.close()
    assert out.returncode == 0 and b"Quarterly numbers" in out.stdout


def test_protected_headers_hide_the_subject(pgp_backend, keys_in_vault, pgp_ids):
    _send(Protection(encrypt="pgp", protect_headers=True, pgp_backend=pgp_backend))
    data = keys_in_vault.smtp.messages[0].data
    assert b"Subject: ...\r\n" in data and b"Q4 numbers" not in data
    armored = _parts_raw(data)[0][1].split(b"\r\n\r\n", 1)[1]
    home = GpgHome(pgp_ids["alice"])
    try:
        out = home.run("--decrypt", input=armored, passphrase=pgp_ids["alice"].passphrase)
    finally:
        home.close()
    inner = email.message_from_bytes(out.stdout, policy=email.policy.default)
    assert inner["Subject"] == "Q4 numbers" and inner.get_param("protected-headers") == "v1"


# -- S/MIME --------------------------------------------------------------------------------------


def _openssl(*args, input=None):
    return subprocess.run(["openssl", "cms", *args], input=input, capture_output=True)


def test_smime_sign_then_encrypt_decrypts_and_verifies_with_openssl(keys_in_vault, smime_ids, tmp_path):
    _send(Protection(encrypt="smime", sign=True, signing_vault_path="mail-signing"))
    [received] = keys_in_vault.smtp.messages
    assert b"application/pkcs7-mime; smime-type=enveloped-data" in received.data
    assert b"Quarterly" not in received.data
    (tmp_path / "alice.crt").write_text(smime_ids["alice"].certificate)
    (tmp_path / "alice.key").write_text(smime_ids["alice"].private_key)
    ca = smime_ids["ca"].write(tmp_path / "ca.pem")
    dec = _openssl(
        "-decrypt", "-recip", str(tmp_path / "alice.crt"), "-inkey", str(tmp_path / "alice.key"), input=received.data
    )
    assert dec.returncode == 0, dec.stderr.decode()
    assert b"application/pkcs7-signature" in dec.stdout
    ver = _openssl("-verify", "-CAfile", ca, input=dec.stdout)
    assert ver.returncode == 0, ver.stderr.decode()
    inner = email.message_from_bytes(ver.stdout.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert inner.get_body(("plain",)).get_content() == BODY


def test_smime_uses_aes256(keys_in_vault, smime_ids):
    _send(Protection(encrypt="smime"))
    printed = subprocess.run(
        ["openssl", "cms", "-cmsout", "-print", "-inform", "SMIME"],
        input=keys_in_vault.smtp.messages[0].data,
        capture_output=True,
    ).stdout
    assert b"aes-256-cbc" in printed.lower()


def test_smime_signature_verifies_after_delivery(keys_in_vault, smime_ids, tmp_path):
    _send(Protection(sign=True, scheme="smime", signing_vault_path="mail-signing"))
    [received] = keys_in_vault.smtp.messages
    ca = smime_ids["ca"].write(tmp_path / "ca.pem")
    ver = _openssl("-verify", "-CAfile", ca, input=received.data)
    assert ver.returncode == 0, ver.stderr.decode()
    assert b"Quarterly" in received.data
    tampered = _openssl("-verify", "-CAfile", ca, input=received.data.replace(b"Quarterly", b"Quarterlx", 1))
    assert tampered.returncode != 0


def test_expired_smime_certificate_fails_closed(keys_in_vault):
    with pytest.raises(EncryptionKeyMissing, match="expired"):
        _send(Protection(encrypt="smime"), to=("old@example.com",))
    assert keys_in_vault.smtp.connections == 0


def test_smime_certificate_for_another_address_is_refused(keys_in_vault):
    with pytest.raises(EncryptionKeyMissing, match="issued to another address"):
        _send(Protection(encrypt="smime"), to=("carol@example.com",))


# -- secrets and entry points ----------------------------------------------------------------------


def test_private_keys_and_passphrases_never_leak(keys_in_vault, pgp_ids, smime_ids, caplog, capfd):
    import logging

    caplog.set_level(logging.DEBUG)
    result = _send(Protection(encrypt="pgp", sign=True, signing_vault_path="mail-signing"))
    with pytest.raises(EncryptionKeyMissing) as info:
        _send(Protection(encrypt="pgp", sign=True, signing_vault_path="mail-signing"), to=("nokey@example.com",))
    out, err = capfd.readouterr()
    secrets_ = [
        pgp_ids["signer"].passphrase,
        smime_ids["signer"].private_key.splitlines()[1],
        pgp_ids["signer"].private_key.splitlines()[3],
    ]
    for text in (caplog.text, out, err, str(info.value), repr(info.value), repr(result.to_xcom())):
        for secret in secrets_:
            assert secret not in text
    assert "PgpSigner" not in repr(result.to_xcom())


def test_notifier_accepts_protection(keys_in_vault, pgp_ids):
    from types import SimpleNamespace

    from airflow_secure_mail import SecureEmailNotifier

    ti = SimpleNamespace(
        dag_id="d",
        task_id="t",
        run_id="r",
        map_index=-1,
        try_number=1,
        max_tries=0,
        hostname="h",
        state="failed",
        log_url=None,
    )
    SecureEmailNotifier(to="alice@example.com", protection=Protection(encrypt="pgp")).notify(
        {"ti": ti, "run_id": "r", "exception": RuntimeError("secret table name")}
    )
    [received] = keys_in_vault.smtp.messages
    assert b"multipart/encrypted" in received.data and b"secret table name" not in received.data


# -- one message per recipient: keys resolved once, each copy to its own recipient ---------------------------


def _count_resolutions(monkeypatch) -> list[tuple[str, ...]]:
    """Every resolve_keys call's recipients; the real function still runs (a counting wrapper, no mock)."""
    import airflow_secure_mail.pipeline.keys as keys_module

    calls: list[tuple[str, ...]] = []
    real = keys_module.resolve_keys

    def counting(protection, recipients, vault):
        calls.append(tuple(recipients))
        return real(protection, recipients, vault)

    monkeypatch.setattr(keys_module, "resolve_keys", counting)
    return calls


def _send_each(protection: Protection) -> None:
    """To alice and bob, one copy each."""
    request = MailRequest(
        sender="airflow@example.com", to=("alice@example.com", "bob@example.com"), subject="Q4", text=BODY
    )
    send_mail(request, channel=MailChannel.for_conn(), protection=protection, one_message_per_recipient=True)


def _pgp_packets(armored: bytes) -> list[bytes]:
    home = GpgHome()
    try:
        listed = home.run("--list-packets", input=armored).stdout
    finally:
        home.close()
    return [line for line in listed.splitlines() if line.startswith(b":pubkey enc packet:")]


def _gpg_opens(identity, armored: bytes) -> bool:
    home = GpgHome(identity)
    try:
        out = home.run("--decrypt", input=armored, passphrase=identity.passphrase)
    finally:
        home.close()
    return out.returncode == 0 and b"Quarterly numbers" in out.stdout


def test_pgp_copies_per_recipient_resolve_keys_once_and_open_only_for_their_recipient(
    pgp_backend, keys_in_vault, pgp_ids, monkeypatch
):
    calls = _count_resolutions(monkeypatch)
    _send_each(Protection(encrypt="pgp", pgp_backend=pgp_backend))
    assert calls == [("alice@example.com", "bob@example.com")]
    copies = {tuple(m.rcpt_tos): m.data for m in keys_in_vault.smtp.messages}
    assert set(copies) == {("alice@example.com",), ("bob@example.com",)}
    for own, other in (("alice", "bob"), ("bob", "alice")):
        armored = _parts_raw(copies[(f"{own}@example.com",)])[0][1].split(b"\r\n\r\n", 1)[1]
        assert len(_pgp_packets(armored)) == 1
        assert (_gpg_opens(pgp_ids[own], armored), _gpg_opens(pgp_ids[other], armored)) == (True, False)


def _smime_opens(identity, data: bytes, tmp_path: Path) -> bool:
    cert, key = tmp_path / "recipient.crt", tmp_path / "recipient.key"
    cert.write_text(identity.certificate)
    key.write_text(identity.private_key)
    out = _openssl("-decrypt", "-recip", str(cert), "-inkey", str(key), input=data)
    return out.returncode == 0 and b"Quarterly numbers" in out.stdout


def test_smime_copies_per_recipient_resolve_keys_once_and_open_only_for_their_recipient(
    keys_in_vault, smime_ids, monkeypatch, tmp_path
):
    identities = {"alice": smime_ids["alice"], "bob": smime_ids["ca"].issue("bob@example.com")}
    keys_in_vault.bao.client().secrets.kv.v2.create_or_update_secret(
        path="mail-keys/bob@example.com", secret={"smime_certificate": identities["bob"].certificate}
    )
    calls = _count_resolutions(monkeypatch)
    _send_each(Protection(encrypt="smime"))
    assert calls == [("alice@example.com", "bob@example.com")]
    copies = {tuple(m.rcpt_tos): m.data for m in keys_in_vault.smtp.messages}
    assert set(copies) == {("alice@example.com",), ("bob@example.com",)}
    for own, other in (("alice", "bob"), ("bob", "alice")):
        data = copies[(f"{own}@example.com",)]
        assert _openssl("-cmsout", "-print", "-inform", "SMIME", input=data).stdout.count(b"d.ktri:") == 1
        opens = (_smime_opens(identities[own], data, tmp_path), _smime_opens(identities[other], data, tmp_path))
        assert opens == (True, False)
