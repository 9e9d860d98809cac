"""airflow-secure-mail archive verify|restore: the archive's own checks, outside a DAG."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail


def _send(archive: MailArchive, n: int) -> str:
    """Send one message to r<n>@example.com through the archive; its Message-ID."""
    request = MailRequest(sender="airflow@example.com", to=(f"r{n}@example.com",), subject=f"report {n}", text="x\n")
    result = send_mail(request, channel=MailChannel.for_conn(), archive=archive)
    return str(result.to_xcom()["message_ids"][0])


def _cli(capsys, *args: str) -> tuple[int, str]:
    from airflow_secure_mail.cli import main

    code = main(["archive", *args])
    return code, capsys.readouterr().out


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o600)
    path.write_bytes(bytes(data))


def test_verify_counts_intact_records(mail_env, tmp_path, capsys):
    url = f"file://{tmp_path}/archive"
    for n in range(3):
        _send(MailArchive(url), n)
    code, out = _cli(capsys, "verify", "--archive", url)
    assert code == 0
    assert out.splitlines()[-1] == f"{url}: 3 record(s) checked, 3 intact, 0 damaged"


def test_verify_names_each_tampered_record_and_exits_1(mail_env, tmp_path, capsys):
    url = f"file://{tmp_path}/archive"
    for n in range(3):
        _send(MailArchive(url), n)
    emls = sorted(Path(tmp_path, "archive", "messages").rglob("*.eml"))
    _flip_a_byte(emls[0])
    meta = emls[1].with_suffix(".json")
    meta.chmod(0o600)
    meta.write_text("{not json")

    code, out = _cli(capsys, "verify", "--archive", url, "--since", "2000-01-01", "--until", "2100-01-01")

    assert code == 1
    damaged = [line for line in out.splitlines() if line.startswith("  DAMAGED")]
    assert len(damaged) == 2
    assert emls[0].stem in damaged[0] + damaged[1] and "SHA-256" in out
    assert emls[1].stem in damaged[0] + damaged[1]
    assert out.splitlines()[-1] == f"{url}: 3 record(s) checked, 1 intact, 2 damaged"


def test_verify_encrypted_archive_with_transit_key_detects_aead_failure(mail_env, tmp_path, transit_key, capsys):
    import hashlib

    url = f"file://{tmp_path}/enc"
    _send(MailArchive(url, transit_key=transit_key), 1)
    assert _cli(capsys, "verify", "--archive", url, "--transit-key", transit_key)[0] == 0
    [eml] = Path(tmp_path, "enc", "messages").rglob("*.eml")
    _flip_a_byte(eml)
    meta_file = eml.with_suffix(".json")
    meta = json.loads(meta_file.read_bytes())
    meta["sha256"] = hashlib.sha256(eml.read_bytes()).hexdigest()  # an attacker who also fixes the hash
    meta_file.chmod(0o600)
    meta_file.write_text(json.dumps(meta))

    code, out = _cli(capsys, "verify", "--archive", url, "--transit-key", transit_key)
    assert code == 1 and eml.stem in out and "AES-GCM" in out


def test_verify_encrypted_archive_without_key_says_to_give_it(mail_env, tmp_path, transit_key, capsys):
    url = f"file://{tmp_path}/enc"
    _send(MailArchive(url, transit_key=transit_key), 1)
    code, out = _cli(capsys, "verify", "--archive", url)
    assert code == 2 and out.startswith("error: ") and "transit_key" in out


def test_restore_by_message_id_writes_the_exact_bytes(mail_env, tmp_path, capsys):
    url = f"file://{tmp_path}/archive"
    ids = [_send(MailArchive(url), n) for n in range(2)]
    received = {m.rcpt_tos[0]: m.data for m in mail_env.smtp.messages}
    out_dir = tmp_path / "restored"

    code, out = _cli(capsys, "restore", "--archive", url, "--message-id", ids[1].strip("<>"), "--to", str(out_dir))

    assert code == 0
    [eml] = list(out_dir.glob("*.eml"))
    assert eml.read_bytes() == received["r1@example.com"]
    assert f"wrote file://{out_dir}/{eml.name}: {ids[1]}" in out
    assert out.splitlines()[-1] == f"1 message(s) restored to file://{out_dir}"


def test_restore_an_interval_to_s3(mail_env, tmp_path, s3_conn, seaweed, capsys):
    url = f"file://{tmp_path}/archive"
    for n in range(2):
        _send(MailArchive(url), n)
    args = ["--since", "2000-01-01T00:00Z", "--until", "2100-01-01T00:00Z", "--to-conn-id", s3_conn]
    code, out = _cli(capsys, "restore", "--archive", url, *args, "--to", "s3://mail-test/cli-restore")
    assert code == 0 and "2 message(s) restored to s3://mail-test/cli-restore" in out
    listed = seaweed.client().list_objects_v2(Bucket="mail-test", Prefix="cli-restore/")["Contents"]
    assert len(listed) == 2 and all(o["Key"].endswith(".eml") for o in listed)
    assert out.count("  wrote s3://mail-test/cli-restore/") == 2


def test_restore_of_a_tampered_record_refuses_and_names_it(mail_env, tmp_path, capsys):
    url = f"file://{tmp_path}/archive"
    message_id = _send(MailArchive(url), 1)
    [eml] = Path(tmp_path, "archive", "messages").rglob("*.eml")
    _flip_a_byte(eml)
    code, out = _cli(capsys, "restore", "--archive", url, "--message-id", message_id, "--to", str(tmp_path / "out"))
    assert code == 1 and eml.stem in out and "altered" in out
    assert not list((tmp_path / "out").glob("*.eml"))


def test_restore_needs_a_selection(tmp_path, capsys):
    code, out = _cli(capsys, "restore", "--archive", f"file://{tmp_path}/a", "--to", str(tmp_path / "out"))
    assert code == 2 and "--message-id" in out
