"""TransitSealer against a real OpenBao: data keys reused across a batch, counted in the audit log."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_secure_mail.archive.crypto import MAGIC, TransitSealer
from airflow_secure_mail.errors import ArchiveIntegrityError
from tests.helpers import audit_paths


def _calls(bao, since: int, path: str) -> int:
    return audit_paths(bao, since).count(path)


def _sealer(transit_key: str, **kw) -> TransitSealer:
    from airflow_secure_mail.vault import vault_for

    return TransitSealer(vault_for(), transit_key, **kw)


def test_thousand_seals_make_one_datakey_call_and_opening_them_unwraps_once(mail_env, transit_key):
    bao = mail_env.bao
    before = len(bao.audit_requests())
    sealed = [_sealer(transit_key).seal(f"message {n}".encode(), f"aad-{n}".encode()) for n in range(1000)]
    assert _calls(bao, before, f"transit/datakey/plaintext/{transit_key}") == 1
    assert len({info["wrapped_key"] for _, info in sealed}) == 1
    assert all(blob.startswith(MAGIC) and b"message" not in blob for blob, _ in sealed)
    TransitSealer.forget_keys()  # a restore elsewhere knows only the metadata
    opened = [
        _sealer(transit_key).open(blob, info, f"aad-{n}".encode(), name=f"m{n}")
        for n, (blob, info) in enumerate(sealed)
    ]
    assert opened == [f"message {n}".encode() for n in range(1000)]
    assert _calls(bao, before, f"transit/decrypt/{transit_key}") == 1


def test_concurrent_seals_and_opens_share_one_data_key(mail_env, transit_key):
    bao = mail_env.bao
    before = len(bao.audit_requests())
    with ThreadPoolExecutor(8) as pool:
        sealed = list(pool.map(lambda n: _sealer(transit_key).seal(b"x%d" % n, b"aad"), range(200)))
    TransitSealer.forget_keys()
    with ThreadPoolExecutor(8) as pool:
        opened = list(pool.map(lambda s: _sealer(transit_key).open(s[0], s[1], b"aad", name="m"), sealed))
    assert opened == [b"x%d" % n for n in range(200)]
    assert _calls(bao, before, f"transit/datakey/plaintext/{transit_key}") == 1
    assert _calls(bao, before, f"transit/decrypt/{transit_key}") == 1


def test_data_key_is_replaced_after_max_uses(mail_env, transit_key):
    before = len(mail_env.bao.audit_requests())
    sealed = [_sealer(transit_key, max_uses=400).seal(b"x", b"") for _ in range(1000)]
    assert _calls(mail_env.bao, before, f"transit/datakey/plaintext/{transit_key}") == 3
    assert [len({i["wrapped_key"] for _, i in sealed[a:b]}) for a, b in ((0, 400), (400, 800), (800, 1000))] == [
        1,
        1,
        1,
    ]
    assert len({info["wrapped_key"] for _, info in sealed}) == 3


def test_another_transit_mount_gets_its_own_data_key(mail_env, transit_key):
    client = mail_env.bao.client()
    if "transit-b/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("transit", path="transit-b")
    client.secrets.transit.create_key(name=transit_key, mount_point="transit-b")
    blob_a, info_a = _sealer(transit_key).seal(b"a", b"")
    blob_b, info_b = _sealer(transit_key, mount="transit-b").seal(b"b", b"")
    assert info_a["wrapped_key"] != info_b["wrapped_key"]
    assert (info_a["transit_mount"], info_b["transit_mount"]) == ("transit", "transit-b")
    TransitSealer.forget_keys()
    assert _sealer(transit_key, mount="transit-b").open(blob_b, info_b, b"", name="b") == b"b"
    assert _sealer(transit_key).open(blob_a, info_a, b"", name="a") == b"a"


@pytest.mark.parametrize("change", ["flip-byte", "other-aad"])
def test_altered_record_fails_authentication_without_a_chain(mail_env, transit_key, change):
    sealer = _sealer(transit_key)
    blob, info = sealer.seal(b"report", b"messages/2026/11/29/k.eml")
    aad = b"messages/2026/11/29/k.eml"
    if change == "flip-byte":
        blob = blob[:-1] + bytes([blob[-1] ^ 1])
    else:
        aad = b"messages/2026/11/29/other.eml"
    with pytest.raises(ArchiveIntegrityError) as info_exc:
        sealer.open(blob, info, aad, name="k.eml")
    assert str(info_exc.value) == "archive object k.eml failed AES-GCM authentication: it was altered."
    assert info_exc.value.__context__ is None and info_exc.value.__cause__ is None


def test_plaintext_object_is_not_an_encrypted_record(mail_env, transit_key):
    with pytest.raises(ArchiveIntegrityError) as info:
        _sealer(transit_key).open(b"From: a@example.com\r\n", {"wrapped_key": "vault:v1:x"}, b"", name="k.eml")
    assert str(info.value) == "archive object k.eml is not an encrypted record."


def test_transit_envelope_is_a_deprecated_alias_of_transit_sealer():
    import airflow_secure_mail.archive.crypto as crypto

    with pytest.warns(DeprecationWarning, match="TransitEnvelope is deprecated: use TransitSealer"):
        assert crypto.TransitEnvelope is TransitSealer


def test_threads_opening_one_data_key_at_once_cause_one_unwrap(mail_env, transit_key):
    import threading

    bao = mail_env.bao
    sealed = [_sealer(transit_key).seal(b"x%d" % n, b"aad") for n in range(16)]
    assert len({info["wrapped_key"] for _, info in sealed}) == 1
    TransitSealer.forget_keys()
    before = len(bao.audit_requests())
    start = threading.Barrier(16)

    def open_at_once(item):
        start.wait()
        return _sealer(transit_key).open(item[0], item[1], b"aad", name="m")

    with ThreadPoolExecutor(16) as pool:
        opened = list(pool.map(open_at_once, sealed))
    assert opened == [b"x%d" % n for n in range(16)]
    assert _calls(bao, before, f"transit/decrypt/{transit_key}") == 1


def test_an_unwrap_in_flight_does_not_hold_up_another_data_keys_unwrap(mail_env, transit_key):
    """The first unwrap waits (in its Vault call) until another key's unwrap has finished: a global lock held
    during the call would make that wait run out. The real Transit call still runs for both."""
    import threading

    from airflow_secure_mail.vault import VaultSecrets

    blob_a, info_a = _sealer(transit_key).seal(b"a", b"")
    TransitSealer.forget_keys()
    blob_b, info_b = _sealer(transit_key).seal(b"b", b"")
    assert info_a["wrapped_key"] != info_b["wrapped_key"]
    TransitSealer.forget_keys()
    first_in_flight, other_done, saw_other_done = threading.Event(), threading.Event(), []
    real = VaultSecrets.transit_unwrap

    def unwrap(self, key_name, wrapped, *, mount="transit"):
        if wrapped == info_a["wrapped_key"]:
            first_in_flight.set()
            saw_other_done.append(other_done.wait(timeout=20))
        return real(self, key_name, wrapped, mount=mount)

    before = len(mail_env.bao.audit_requests())
    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(2) as pool:
        patch.setattr(VaultSecrets, "transit_unwrap", unwrap)
        first = pool.submit(_sealer(transit_key).open, blob_a, info_a, b"", name="a")
        assert first_in_flight.wait(timeout=20)
        assert _sealer(transit_key).open(blob_b, info_b, b"", name="b") == b"b"
        other_done.set()
        assert first.result() == b"a"
    assert saw_other_done == [True]
    assert _calls(mail_env.bao, before, f"transit/decrypt/{transit_key}") == 2


def test_record_relabelled_to_another_transit_key_fails_with_its_data_key_cached(mail_env, tmp_path, transit_key):
    """Metadata relabelled from key A to key B must not open in a process holding A's unwrapped data key."""
    import dataclasses
    import secrets
    from pathlib import Path

    from airflow_secure_mail.archive.record import ArchiveRecord
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.pipeline.channel import MailChannel
    from airflow_secure_mail.pipeline.send import send_mail
    from tests.helpers import create_transit_key, numbered_request

    other = create_transit_key(mail_env.bao, "mail-archive-b-" + secrets.token_hex(3))
    location = f"file://{tmp_path}/a"
    send_mail(
        numbered_request(1), channel=MailChannel.for_conn(), archive=MailArchive(location, transit_key=transit_key)
    )
    [index] = list(Path(tmp_path, "a", "index").rglob("*.json"))
    record = MailArchive(location, transit_key=transit_key).lookup(index.stem)
    assert record is not None and record.meta.encryption is not None
    relabelled = dataclasses.replace(record.meta, encryption={**record.meta.encryption, "transit_key": other})
    copy = ArchiveRecord(record.key, record.prefix, relabelled, committed=True)
    reader = MailArchive(location, transit_key=other)
    expected = f"archive object {record.prefix}.eml: Transit key '{other}' cannot unwrap its data key"
    before = len(mail_env.bao.audit_requests())
    with pytest.raises(ArchiveIntegrityError, match=expected) as cached:  # the sealing process: A's key is cached
        reader.read_message(copy)
    assert _calls(mail_env.bao, before, f"transit/decrypt/{other}") == 1  # Transit judged it, not the cache
    assert cached.value.__context__ is None and cached.value.__cause__ is None
    TransitSealer.forget_keys()  # as in a fresh process
    with pytest.raises(ArchiveIntegrityError, match=expected):
        reader.read_message(copy)
    assert MailArchive(location, transit_key=transit_key).read_message(record).startswith(b"From: ")


def _sent_record(mail_env, tmp_path, transit_key):
    from pathlib import Path

    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.pipeline.channel import MailChannel
    from airflow_secure_mail.pipeline.send import send_mail
    from tests.helpers import numbered_request

    location = f"file://{tmp_path}/a"
    archive = MailArchive(location, transit_key=transit_key)
    send_mail(numbered_request(1), channel=MailChannel.for_conn(), archive=archive)
    [index] = list(Path(tmp_path, "a", "index").rglob("*.json"))
    return location, archive.lookup(index.stem)


def test_a_key_version_below_min_decryption_version_is_reported_as_such_not_as_tampering(
    mail_env, tmp_path, transit_key
):
    """Routine Transit administration (rotate, then raise min_decryption_version) is not an integrity alarm."""
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.errors import VaultSecretError

    location, record = _sent_record(mail_env, tmp_path, transit_key)
    client = mail_env.bao.client()
    client.secrets.transit.rotate_key(name=transit_key)
    client.secrets.transit.update_key_configuration(name=transit_key, min_decryption_version=2)
    TransitSealer.forget_keys()  # as in a fresh process
    with pytest.raises(VaultSecretError) as raised:
        MailArchive(location, transit_key=transit_key).read_message(record)
    assert not isinstance(raised.value, ArchiveIntegrityError)
    assert str(raised.value) == (
        f"archive object {record.prefix}.eml: Transit key {transit_key!r} refuses to unwrap its data key: the key "
        "version is below the key's min_decryption_version; lower it to read this record."
    )
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_a_transit_key_that_does_not_exist_is_reported_as_such_not_as_tampering(mail_env, tmp_path, transit_key):
    import dataclasses

    from airflow_secure_mail.archive.record import ArchiveRecord
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.errors import VaultSecretError

    location, record = _sent_record(mail_env, tmp_path, transit_key)
    gone = "no-such-key-xyz"
    meta = dataclasses.replace(record.meta, encryption={**record.meta.encryption, "transit_key": gone})
    with pytest.raises(VaultSecretError) as raised:
        MailArchive(location, transit_key=gone).read_message(ArchiveRecord(record.key, record.prefix, meta))
    assert not isinstance(raised.value, ArchiveIntegrityError)
    assert str(raised.value) == (
        f"archive object {record.prefix}.eml: Transit key {gone!r} does not exist on this Vault: create or "
        "restore it (or point the archive's vault connection at the Vault that has it)."
    )
