"""airflow-secure-mail incident trace: exactly the window's records (sent, partly refused, failed, refused),
from metadata only, on a seeded file:// archive of 1,200 records, on real sends, and on SeaweedFS."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_secure_mail.archive.refusals import refusal_from, write_refusal
from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.errors import SpamRefused
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from tests.integration.ops.seed_window import seed_messages, seed_refusals

BASE = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
SINCE = BASE + timedelta(minutes=100)  # a record is committed exactly here: in
UNTIL = BASE + timedelta(minutes=900)  # and exactly here: out (the window crosses midnight)


def _trace(capsys, *args: str) -> tuple[int, list[dict], str]:
    from airflow_secure_mail.cli import main

    capsys.readouterr()  # what seeding logged is not the command's output
    code = main(["incident", "trace", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("trace")
    url = f"file://{root}/archive"
    archive = MailArchive(url)
    messages = seed_messages(archive, BASE, 1200)
    refusals = seed_refusals(archive, BASE + timedelta(minutes=90), 20)
    return url, root / "archive", messages + refusals


def _expected(records, since=SINCE, until=None, *, domain=None, dag_id=None):
    until = until or UNTIL
    return [
        (s.kind, s.key)
        for s in sorted(records, key=lambda s: s.at)
        if since <= s.at < until and (domain is None or domain in s.domains) and (dag_id is None or s.dag_id == dag_id)
    ]


def test_trace_lists_exactly_the_window_oldest_first(seeded, capsys):
    url, _, records = seeded
    code, lines, err = _trace(capsys, "--archive", url, "--since", _iso(SINCE), "--until", _iso(UNTIL))
    assert code == 0 and err == ""
    assert [(line["kind"], line["archive_key"]) for line in lines] == _expected(records)
    assert {line["kind"] for line in lines} == {"sent", "partially_refused", "failed", "refused"}
    assert lines[0]["at"] == SINCE.isoformat()  # the boundary record is in, the one at --until is not
    assert all(line["at"] < UNTIL.isoformat() for line in lines)
    assert [line["at"] for line in lines] == sorted(line["at"] for line in lines)


def test_trace_fields_say_what_the_records_say(seeded, capsys):
    url, _, records = seeded
    _, lines, _ = _trace(
        capsys,
        "--archive",
        url,
        "--since",
        _iso(SINCE + timedelta(minutes=30)),
        "--until",
        _iso(SINCE + timedelta(minutes=45)),
    )
    by_kind = {line["kind"]: line for line in lines}
    assert len({tuple(sorted(line)) for line in lines}) == 1  # every line has every field
    sent = by_kind["sent"]
    seeded_sent = next(s for s in records if s.key == sent["archive_key"])
    assert sent["recipients"] == list(seeded_sent.recipients)
    assert sent["recipient_count"] == len(seeded_sent.recipients)
    assert sent["recipient_domains"] == sorted(seeded_sent.domains)
    assert sent["tls_version"] == "TLSv1.3" and sent["protection"] == "none"
    assert sent["dag_id"] == seeded_sent.dag_id and sent["task_id"] == "t" and sent["try_number"] == 1
    assert sent["archive_object"] == seeded_sent.name and sent["message_id"].startswith("<seed-")
    partly = by_kind["partially_refused"]
    assert partly["refused_recipients"] == [partly["recipients"][0]]
    failed = by_kind["failed"]
    assert failed["archive_object"].endswith(".failed-1.json") and failed["recipients"] is None
    assert failed["error"] == "421 4.4.2 try again later"
    refused = by_kind["refused"]
    assert refused["rule"] == "spam" and refused["spam_scan"]["score"] == 9.1
    assert refused["recipient_count"] == 1 and refused["recipients"] is None
    assert refused["reason"] == "score 9.1 over 5.0 for …@Example.ORG"  # addresses cut to their domain


@pytest.mark.parametrize("domain", ["xn--bcher-kva.example", "BÜCHER.example", "example.net"])
def test_recipient_domain_filter_is_exact_and_idna_normalised(seeded, capsys, domain):
    url, _, records = seeded
    code, lines, _ = _trace(
        capsys, "--archive", url, "--since", _iso(SINCE), "--until", _iso(UNTIL), "--recipient-domain", domain
    )
    key = "example.net" if domain == "example.net" else "xn--bcher-kva.example"
    assert code == 0 and lines
    assert [(line["kind"], line["archive_key"]) for line in lines] == _expected(records, domain=key)


def test_dag_id_filter_is_exact(seeded, capsys):
    url, _, records = seeded
    _, lines, _ = _trace(capsys, "--archive", url, "--since", _iso(SINCE), "--until", _iso(UNTIL), "--dag-id", "dag_b")
    assert [(line["kind"], line["archive_key"]) for line in lines] == _expected(records, dag_id="dag_b")
    _, none, _ = _trace(capsys, "--archive", url, "--since", _iso(SINCE), "--until", _iso(UNTIL), "--dag-id", "dag")
    assert none == []


def test_a_damaged_record_is_named_on_stderr_skipped_and_exits_1(tmp_path, capsys):
    url = f"file://{tmp_path}/archive"
    archive = MailArchive(url)
    records = seed_messages(archive, BASE, 30) + seed_refusals(archive, BASE, 3, step=timedelta(minutes=5))
    broken = Path(tmp_path, "archive", records[4].name)
    broken.chmod(0o600)
    broken.write_text("{not json")
    refusal = Path(tmp_path, "archive", records[-1].name)
    refusal.chmod(0o600)
    refusal.write_text("[]")

    code, lines, err = _trace(
        capsys, "--archive", url, "--since", _iso(BASE), "--until", _iso(BASE + timedelta(hours=1))
    )

    assert code == 1
    assert err.splitlines() == [
        f"error: {records[4].name}: archive metadata {records[4].name} is not valid JSON. (skipped)",
        f"error: {records[-1].name}: archive metadata {records[-1].name} is not a valid record. (skipped)",
    ]
    assert [line["archive_key"] for line in lines] == [
        k for _, k in _expected(records[:4] + records[5:-1], BASE, BASE + timedelta(hours=1))
    ]


def test_bad_window_is_one_line_and_exit_2(seeded, capsys):
    url, _, _ = seeded
    from airflow_secure_mail.cli import main

    assert main(["incident", "trace", "--archive", url]) == 2
    assert (
        capsys.readouterr().out
        == "error: give --since T (ISO 8601 or a span ago such as 24h): the window to look at.\n"
    )
    assert main(["incident", "trace", "--archive", url, "--since", "yesterday"]) == 2
    assert "neither ISO 8601 nor a span ago" in capsys.readouterr().out


def _send(archive: MailArchive, *to: str, dag_id: str = "report_dag") -> str:
    request = MailRequest(sender="airflow@example.com", to=to, subject="weekly", text="figures\n")
    origin = {"dag_id": dag_id, "task_id": "mail", "run_id": "r1", "map_index": -1, "try_number": 1}
    result = send_mail(request, channel=MailChannel.for_conn(), archive=archive, origin=origin)
    return str(result.to_xcom()["message_ids"][0])


def test_real_sends_and_a_refusal_appear_with_their_envelope(mail_env, tmp_path, capsys):
    url = f"file://{tmp_path}/archive"
    archive = MailArchive(url)
    first = _send(archive, "ann@example.com", "bob@example.org")
    second = _send(archive, "cy@example.com", dag_id="other")
    error = SpamRefused("spam score 7.0 over 5.0", score=7.0, threshold=5.0, rules=("X",))
    write_refusal(archive, refusal_from(error, recipients=["dee@example.com"], origin={"dag_id": "report_dag"}))

    code, lines, _ = _trace(capsys, "--archive", url, "--since", "1h")

    assert code == 0
    assert [(line["kind"], line["message_id"]) for line in lines] == [
        ("sent", first),
        ("sent", second),
        ("refused", None),
    ]
    assert lines[0]["recipients"] == ["ann@example.com", "bob@example.org"]
    assert lines[0]["tls_version"] in ("TLSv1.2", "TLSv1.3") and lines[0]["run_id"] == "r1"
    assert {r.data.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode() for r in mail_env.smtp.messages} == {
        first,
        second,
    }
    _, mine, _ = _trace(
        capsys, "--archive", url, "--since", "1h", "--dag-id", "report_dag", "--recipient-domain", "example.com"
    )
    assert [(line["kind"], line["message_id"]) for line in mine] == [("sent", first), ("refused", None)]


def test_trace_on_seaweedfs(mail_env, s3_conn, capsys):
    url = "s3://mail-test/trace-" + datetime.now(UTC).strftime("%H%M%S%f")
    archive = MailArchive(url, conn_id=s3_conn)
    records = seed_messages(archive, BASE, 40, step=timedelta(minutes=30)) + seed_refusals(archive, BASE, 6)
    sent = _send(archive, "ann@example.com")
    since, until = BASE + timedelta(minutes=60), BASE + timedelta(minutes=600)

    code, lines, err = _trace(
        capsys, "--archive", url, "--conn-id", s3_conn, "--since", _iso(since), "--until", _iso(until)
    )
    assert code == 0 and err == ""
    assert [(line["kind"], line["archive_key"]) for line in lines] == _expected(records, since, until)
    _, now, _ = _trace(capsys, "--archive", url, "--conn-id", s3_conn, "--since", "1h")
    assert [line["message_id"] for line in now] == [sent]


def test_stdout_holds_only_json_lines_when_airflow_logs(mail_env, s3_conn):
    """Airflow's log handler writes to stdout (the s3 connection logs its credentials' origin): a pipe into jq
    must still get JSON alone, the log lines go to stderr."""
    import os
    import subprocess
    import sys

    url = "s3://mail-test/trace-log-" + datetime.now(UTC).strftime("%H%M%S%f")
    records = seed_messages(MailArchive(url, conn_id=s3_conn), BASE, 5)
    command = [sys.executable, "-m", "airflow_secure_mail.cli", "incident", "trace", "--archive", url,
               "--conn-id", s3_conn, "--since", _iso(BASE), "--until", _iso(BASE + timedelta(hours=1))]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["archive_key"] for line in done.stdout.splitlines()] == [s.key for s in records]
    assert "credentials retrieved" in done.stderr
