"""A named object-store connection must resolve: never anonymous access, never a lookup of a public endpoint.

The silence CLI reads connections the way ``doctor`` does (the metadata database too); every object-store
path (archive, digest state, attachments, backup) refuses a connection id that names nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import socket
import subprocess
import sys

import pytest

from airflow_secure_mail.errors import ConfigurationError

_AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL")


def _loopback(host: object) -> bool:
    if host in (None, "localhost") or str(host).endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Host names resolved during the test that are not loopback. This only observes: the real resolver still
    answers (a lookup here is what would leave the machine)."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def recording(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not _loopback(host.decode() if isinstance(host, bytes) else host):
            seen.append(str(host))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    return seen


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)


def _env_without_connections() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_") and k not in _AWS_ENV}


def test_silence_cli_uses_an_aws_connection_stored_in_the_metadata_database(airflow_db, seaweed):
    seaweed.create_bucket("mail-test")
    conn_id = f"aws_db_{secrets.token_hex(3)}"
    aws = seaweed.aws_connection()
    subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "add", conn_id, "--conn-json", json.dumps(aws)],
        check=True,
        capture_output=True,
        text=True,
    )
    prefix = f"silences-db-{secrets.token_hex(3)}"
    args = ["--state", f"s3://mail-test/{prefix}", "--state-conn-id", conn_id, "--match", "dag_id=finance_daily"]
    args += ["--until", "2099-01-01T00:00Z", "--reason", "warehouse migration"]
    run = subprocess.run(
        [sys.executable, "-m", "airflow_secure_mail.cli", "silence", "add", *args],
        env=_env_without_connections(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [silence_id] = re.findall(r"^([0-9a-f]{12})  silences dag_id=finance_daily until 2099", run.stdout, re.M)
    listed = seaweed.client().list_objects_v2(Bucket="mail-test", Prefix=f"{prefix}/silences/")
    assert [o["Key"] for o in listed["Contents"]] == [f"{prefix}/silences/{silence_id}.json"]
    stored = json.loads(
        seaweed.client().get_object(Bucket="mail-test", Key=f"{prefix}/silences/{silence_id}.json")["Body"].read()
    )
    assert stored["matchers"] == ["dag_id=finance_daily"] and stored["reason"] == "warehouse migration"


def test_silence_cli_with_a_connection_that_names_nothing_exits_2_and_resolves_no_host(
    capsys, no_aws_env, lookups, airflow_db
):
    from airflow_secure_mail.cli import main

    code = main(["silence", "list", "--state", "s3://mail-test/alert-state", "--state-conn-id", "nowhere"])
    out = capsys.readouterr().out
    assert code == 2 and out.count("\n") == 1
    assert out.startswith("error: connection 'nowhere' (for s3://mail-test/alert-state) was not found")
    assert lookups == []


def test_archive_with_a_connection_that_names_nothing_is_a_configuration_error(no_aws_env, lookups):
    from datetime import UTC, datetime

    from airflow_secure_mail.archive.store import MailArchive

    archive = MailArchive("s3://mail-test/archive", conn_id="nowhere")  # building it looks nothing up
    with pytest.raises(ConfigurationError, match=r"^connection 'nowhere' \(for s3://mail-test/archive\) was not found"):
        list(archive.iter_records(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)))
    assert lookups == []


def test_attachment_with_a_connection_that_names_nothing_is_a_configuration_error(no_aws_env, lookups):
    from airflow_secure_mail.pipeline.attachments import load_attachment

    with pytest.raises(ConfigurationError, match=r"^connection 'nowhere' \(for s3://reports/daily.csv\) was not found"):
        load_attachment("s3://reports/daily.csv", conn_id="nowhere")
    with pytest.raises(ConfigurationError, match=r"^connection 'nowhere' \(for s3://reports/x.csv\) was not found"):
        load_attachment({"uri": "s3://reports/x.csv", "conn_id": "nowhere"})
    assert lookups == []


def test_backup_with_a_connection_that_names_nothing_is_a_configuration_error(no_aws_env, lookups, tmp_path):
    from airflow_secure_mail.archive.objects import ObjectStore

    with pytest.raises(ConfigurationError, match=r"^connection 'nowhere' \(for s3://mail-backup/prod\) was not found"):
        ObjectStore("s3://mail-backup/prod", "nowhere").write_once("a.json", b"{}")
    assert lookups == []


def test_archive_with_a_resolving_connection_still_works(s3_conn, seaweed, no_aws_env):
    from airflow_secure_mail.archive.objects import ObjectStore

    store = ObjectStore(f"s3://mail-test/conn-ok-{secrets.token_hex(3)}", s3_conn)
    store.write_once("a.json", b"{}")
    assert store.read("a.json") == b"{}"


def test_a_named_connection_without_credentials_is_refused_not_used_anonymously(
    seaweed, no_aws_env, monkeypatch, lookups
):
    from airflow_secure_mail.archive.objects import ObjectStore

    seaweed.create_bucket("mail-test")
    keyless = {"conn_type": "aws", "extra": {"endpoint_url": seaweed.endpoint, "region_name": "us-east-1"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_KEYLESS", json.dumps(keyless))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe of 169.254.169.254
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    prefix = f"keyless-{secrets.token_hex(3)}"
    with pytest.raises(
        ConfigurationError, match=r"^connection 'aws_keyless' \(for s3://mail-test/keyless-\w+\) gives no"
    ):
        ObjectStore(f"s3://mail-test/{prefix}", "aws_keyless").write_once("a.json", b"{}")
    assert "Contents" not in seaweed.client().list_objects_v2(Bucket="mail-test", Prefix=prefix)
    assert lookups == []


def test_a_store_without_a_connection_or_credentials_is_never_written_anonymously(no_aws_env, monkeypatch, lookups):
    from airflow_secure_mail.archive.objects import ObjectStore

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe of 169.254.169.254
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    with pytest.raises(ConfigurationError, match=r"^s3://mail-archive/prod: no credentials found"):
        ObjectStore("s3://mail-archive/prod").write_once("a.json", b"{}")
    assert lookups == []


@pytest.fixture
def bad_profile(no_aws_env, monkeypatch: pytest.MonkeyPatch) -> str:
    """An aws connection naming a profile that no config file defines (a typo): botocore's ProfileNotFound."""
    extra = {"profile_name": "nosuch", "endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_BADPROFILE", json.dumps({"conn_type": "aws", "extra": extra}))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    return "aws_badprofile"


def test_a_connection_whose_filesystem_cannot_be_set_up_is_our_configuration_error(bad_profile, lookups):
    from airflow_secure_mail.archive.objects import ObjectStore

    with pytest.raises(ConfigurationError) as caught:
        ObjectStore("s3://mail-test/x", bad_profile).write_once("a.json", b"{}")
    assert str(caught.value) == (
        "s3://mail-test/x: cannot set up the storage of connection 'aws_badprofile' (ProfileNotFound): "
        "fix the connection; a store that cannot be set up is never skipped."
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert lookups == []


def test_a_broken_archive_connection_refuses_the_send_even_with_on_error_send(mail_env, bad_profile):
    """A misconfigured connection is a typo to fix, not an outage: ``on_error='send'`` must not hide it."""
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.pipeline.channel import MailChannel
    from airflow_secure_mail.pipeline.send import send_mail
    from tests.helpers import numbered_request

    archive = MailArchive("s3://mail-test/archive", conn_id=bad_profile, on_error="send")
    with pytest.raises(ConfigurationError, match=r"^s3://mail-test/archive: cannot set up .* \(ProfileNotFound\)"):
        send_mail(numbered_request(1, text="x\n"), channel=MailChannel.for_conn(), archive=archive)
    assert mail_env.smtp.messages == []
