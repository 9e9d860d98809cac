"""Digest flushes and the silence CLI facing bad state and bad input: garbage objects, hostile regexes, odd URLs."""

from __future__ import annotations

import logging
import socket
import threading
from datetime import timedelta

import pytest

from airflow_secure_mail.alerts.digest import AlertDigest
from airflow_secure_mail.alerts.state import group_id
from airflow_secure_mail.errors import ConfigurationError, SecureMailError
from tests.integration.alerts.test_digest import START, _cli, _event, _subject, _text

GARBAGE = b'{"dag_id": "finance_daily", "run_id": '  # a truncated write, as a crashed tool might leave it


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def state_and_overwrite(request, tmp_path):
    """Digest state (a local directory or a SeaweedFS bucket) and a way to corrupt one of its objects in place.

    Corruption bypasses the write-once API on purpose: it stands for a crashed tool or a hand edit.
    """
    if request.param == "file":
        root = tmp_path / "state"

        def overwrite_file(name: str, data: bytes) -> None:
            (root / name).write_bytes(data)

        return f"file://{root}", None, overwrite_file
    conn = request.getfixturevalue("s3_conn")
    seaweed = request.getfixturevalue("seaweed")
    prefix = f"alert-state-{tmp_path.name}"

    def overwrite_s3(name: str, data: bytes) -> None:
        seaweed.client().put_object(Bucket="mail-test", Key=f"{prefix}/{name}", Body=data)

    return f"s3://mail-test/{prefix}", conn, overwrite_s3


def _no_raw_chain(exc: BaseException) -> None:
    """Our error, detached: no JSONDecodeError (or any library error) hides in its chain."""
    assert isinstance(exc, SecureMailError)
    assert exc.__cause__ is None and exc.__context__ is None


# -- item 19: one group's garbage does not stop the others ----------------------------------------


def test_a_garbage_event_in_one_group_skips_that_event_and_every_group_is_still_sent(
    mail_env, notifier_for, clock, state_and_overwrite, caplog
):
    from airflow_secure_mail.errors import DigestFlushError

    state, conn, overwrite = state_and_overwrite
    digest = AlertDigest(state=state, state_conn_id=conn, clock=clock)
    digest.record(_event(START, task="extract"))
    broken = _event(START, task="load")
    digest.record(broken)
    digest.record(_event(START, dag="hr_sync", task="pull"))
    gid = group_id({"dag_id": "finance_daily"})
    key = f"events/{gid}/{broken.id}.json"
    overwrite(key, GARBAGE)
    clock.now = START + timedelta(minutes=1)
    with (
        caplog.at_level(logging.WARNING, logger="airflow_secure_mail.alerts.flush"),
        pytest.raises(DigestFlushError) as raised,
    ):
        digest.flush(notifier_for(digest))
    _no_raw_chain(raised.value)
    by_subject = {_subject(m): _text(m) for m in mail_env.smtp.messages}
    assert sorted(by_subject) == [
        "[Airflow] 1 failure in 1 DAG since 00:00 UTC (finance_daily)",
        "[Airflow] 1 failure in 1 DAG since 00:00 UTC (hr_sync)",
    ]
    finance = by_subject["[Airflow] 1 failure in 1 DAG since 00:00 UTC (finance_daily)"]
    assert "finance_daily.extract" in finance and "finance_daily.load" not in finance
    assert raised.value.groups == [gid] and len(raised.value.sent) == 2
    assert key in str(raised.value) and str(raised.value).count("\n") == 0
    assert any(key in r.getMessage() and f"quarantine/{key}" in r.getMessage() for r in caplog.records)
    assert digest.store().objects.read(f"quarantine/{key}") == GARBAGE  # a copy; the original stays (write-once)
    assert digest.store().objects.read(key) == GARBAGE


def test_a_garbage_claim_fails_its_group_only_and_the_error_names_it(
    mail_env, notifier_for, clock, state_and_overwrite
):
    from airflow_secure_mail.errors import DigestFlushError

    state, conn, overwrite = state_and_overwrite
    digest = AlertDigest(state=state, state_conn_id=conn, clock=clock)
    notifier = notifier_for(digest)
    digest.record(_event(START))
    digest.flush(notifier)  # claim 1 of finance_daily, sent
    gid = group_id({"dag_id": "finance_daily"})
    overwrite(f"claims/{gid}/00000001.json", GARBAGE)
    clock.now = START + timedelta(minutes=20)
    digest.record(_event(clock.now, task="report"))
    digest.record(_event(clock.now, dag="hr_sync", task="pull"))
    with pytest.raises(DigestFlushError) as raised:
        digest.flush(notifier)
    _no_raw_chain(raised.value)
    assert [_subject(m) for m in mail_env.smtp.messages[1:]] == [
        "[Airflow] 1 failure in 1 DAG since 00:20 UTC (hr_sync)"
    ]
    assert raised.value.groups == [gid]
    assert f"claims/{gid}/00000001.json" in str(raised.value)


def test_a_garbage_event_read_again_when_recording_is_our_error(tmp_path):
    from airflow_secure_mail.errors import ArchiveIntegrityError

    digest = AlertDigest(state=f"file://{tmp_path}/state")
    event = _event(START)
    digest.record(event)
    gid = group_id({"dag_id": "finance_daily"})
    (tmp_path / "state" / "events" / gid / f"{event.id}.json").write_bytes(GARBAGE)
    with pytest.raises(ArchiveIntegrityError, match=rf"events/{gid}/{event.id}.json is not a readable event") as e:
        digest.record(event)
    _no_raw_chain(e.value)


# -- item 20: silence regexes in linear time (RE2, as Alertmanager) -------------------------------


@pytest.mark.timeout(20)
def test_a_catastrophic_backtracking_matcher_returns_at_once_with_re2_semantics():
    from airflow_secure_mail.alerts.silences import Matcher

    matcher = Matcher.parse("dag_id=~(a+)+$")
    assert matcher.matches({"dag_id": "a" * 60 + "b"}) is False  # backtracking `re` would take ~2^60 steps
    assert matcher.matches({"dag_id": "a" * 60}) is True
    assert Matcher.parse("dag_id!~(a+)+$").matches({"dag_id": "a" * 60 + "b"}) is True


def _add_silence(capsys, tmp_path, match: str, reason: str = "r") -> tuple[int, str]:
    """``silence add`` on a local state folder, until 2099: the exit code and what it printed."""
    return _cli(capsys, "add", "--state", f"file://{tmp_path}/state", "--match", match, "--until",
                "2099-01-01T00:00Z", "--reason", reason)  # fmt: skip


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)a", "(?<!x)a"])
def test_a_matcher_re2_cannot_run_is_refused_when_the_silence_is_added(capsys, tmp_path, pattern):
    code, out = _add_silence(capsys, tmp_path, f"dag_id=~{pattern}")
    assert code == 2 and out.count("\n") == 1
    matcher = f"dag_id=~{pattern}"
    assert out.startswith(f"error: silence matcher {matcher!r}: not a linear-time (RE2) regular expression")
    assert not (tmp_path / "state" / "silences").exists()


@pytest.mark.timeout(60)
def test_a_stored_silence_re2_cannot_run_is_skipped_with_a_warning_and_the_flush_goes_on(
    mail_env, notifier_for, clock, tmp_path, caplog
):
    import json

    digest = AlertDigest(state=f"file://{tmp_path}/state", clock=clock)
    silences = tmp_path / "state" / "silences"
    silences.mkdir(parents=True)
    stored = {
        "id": "0123456789ab",
        "matchers": [r"dag_id=~(finance)\1"],
        "reason": "written by an older version",
        "starts_at": START.isoformat(),
        "ends_at": (START + timedelta(days=1)).isoformat(),
        "created_by": "ops",
    }
    (silences / "0123456789ab.json").write_text(json.dumps(stored))
    (silences / "fedcba987654.json").write_bytes(GARBAGE)
    digest.record(_event(START))
    clock.now = START + timedelta(minutes=1)
    with caplog.at_level(logging.WARNING, logger="airflow_secure_mail.alerts.silences"):
        assert len(digest.flush(notifier_for(digest))) == 1
    assert [_subject(m) for m in mail_env.smtp.messages] == [
        "[Airflow] 1 failure in 1 DAG since 00:00 UTC (finance_daily)"
    ]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("silences/0123456789ab.json" in w and "skipped" in w for w in warnings)
    assert any("silences/fedcba987654.json" in w and "skipped" in w for w in warnings)


# -- item 21: the silence CLI refuses unknown schemes and control characters up front -------------


class _Recorder:
    """A listener on 127.0.0.1 that only records whether anything connected (it never answers)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def recorder():
    listener = _Recorder()
    yield listener
    listener.close()


@pytest.mark.parametrize("scheme", ["http", "https", "ftp", "hdfs", "memory"])
@pytest.mark.parametrize("verb", [["list"], ["add", "--match", "dag_id=a", "--until", "2099-01-01T00:00Z"]])
def test_silence_cli_refuses_a_state_scheme_it_does_not_document_before_any_connection(capsys, recorder, scheme, verb):
    state = f"{scheme}://127.0.0.1:{recorder.port}/alert-state"
    extra = ["--reason", "r"] if verb[0] == "add" else []
    code, out = _cli(capsys, *verb, "--state", state, *extra)
    assert code == 2 and out.count("\n") == 1
    assert out == f"error: digest state: scheme {scheme}:// is not supported; use file:///path or s3://bucket/prefix.\n"
    assert recorder.connections == 0


def test_alert_digest_refuses_an_undocumented_state_scheme():
    with pytest.raises(
        ConfigurationError,
        match=r"^digest state: scheme http:// is not supported; use file:///path or s3://bucket/prefix\.$",
    ):
        AlertDigest(state="http://127.0.0.1:1/state")


@pytest.mark.parametrize(
    "text", ["maintenance\n3f9a0c12b7e4  active", "a\rb", "a\x00b", "a\x1b[2Jb", "a\x85b", "a\u2028b", "a\u2029b"]
)
def test_silence_reason_with_a_control_character_is_refused(capsys, tmp_path, text):
    code, out = _add_silence(capsys, tmp_path, "dag_id=a", reason=text)
    assert code == 2 and out.count("\n") == 1
    assert out.startswith("error: silence --reason contains a control or line-break character")
    assert not (tmp_path / "state" / "silences").exists()


def test_silence_matcher_with_a_control_character_is_refused(capsys, tmp_path):
    code, out = _add_silence(capsys, tmp_path, "dag_id=a\rb")
    assert code == 2 and out.count("\n") == 1
    assert out.startswith("error: silence --match contains a control or line-break character")


def test_silence_list_escapes_control_characters_already_stored(capsys, tmp_path):
    import json

    silences = tmp_path / "state" / "silences"
    silences.mkdir(parents=True)
    stored = {
        "id": "0123456789ab",
        "matchers": ["dag_id=a"],
        "reason": "ok\nfedcba987654  active   2026-11-29T01:10Z .. 2099-01-01T00:00Z  dag_id=forged  # x",
        "starts_at": START.isoformat(),
        "ends_at": "2099-01-01T00:00:00+00:00",
        "created_by": "ops",
    }
    (silences / "0123456789ab.json").write_text(json.dumps(stored))
    code, out = _cli(capsys, "list", "--state", f"file://{tmp_path}/state")
    assert code == 0 and out.count("\n") == 1
    assert out.rstrip("\n").endswith(
        r"# ok\nfedcba987654  active   2026-11-29T01:10Z .. 2099-01-01T00:00Z  dag_id=forged  # x"
    )


# -- issue 19 follow-up: a quarantined event fails one flush, not every later one -------------------------


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_an_unreadable_event_fails_the_first_flush_only_and_says_to_delete_it(
    mail_env, notifier_for, clock, tmp_path, caplog, damage
):
    from airflow_secure_mail.errors import DigestFlushError

    root = tmp_path / "state"
    digest = AlertDigest(state=f"file://{root}", clock=clock)
    notifier = notifier_for(digest)
    digest.record(_event(START, task="extract"))
    broken = _event(START, task="load")
    digest.record(broken)
    key = f"events/{group_id({'dag_id': 'finance_daily'})}/{broken.id}.json"
    if damage == "garbage":
        (root / key).write_bytes(GARBAGE)
    else:
        (root / key).unlink()
    clock.now = START + timedelta(minutes=1)
    with pytest.raises(DigestFlushError) as raised:
        digest.flush(notifier)
    gid = group_id({"dag_id": "finance_daily"})
    [entry] = [p for p in (root / "index" / gid).rglob("*") if p.is_file() and broken.id in p.name]
    index_entry = str(entry.relative_to(root))
    to_delete = f"{key} and {index_entry}" if damage == "garbage" else index_entry  # missing: its index entry only
    assert key in str(raised.value) and f"delete {to_delete} once inspected" in str(raised.value)
    assert len(raised.value.sent) == 1
    marker = f"quarantine/{key}" if damage == "garbage" else f"quarantine/{key}.missing"
    assert (root / marker).exists()
    sent_by_flush = []
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail.alerts.flush"):
        for minutes in (30, 180, 24 * 60, 3 * 24 * 60):
            clock.now = START + timedelta(minutes=minutes)
            sent_by_flush.append(len(digest.flush(notifier)))  # no DigestFlushError: reported once already
        assert sent_by_flush == [0, 0, 0, 0]  # nothing new to send, and no DigestFlushError
        if damage == "garbage":  # deleting only the garbage object (not its index entry) is not a new failure
            (root / key).unlink()
        digest.record(_event(clock.now, task="report"))  # the group still works: a new alert goes out
        clock.now += timedelta(minutes=30)
        assert len(digest.flush(notifier)) == 1
    texts = [_text(m) for m in mail_env.smtp.messages]
    assert len(texts) == 2 and "finance_daily.report" in texts[1]
    assert all("finance_daily.load" not in t for t in texts)
    assert any(f"{key} was reported by an earlier flush" in r.getMessage() for r in caplog.records)
    from airflow_secure_mail.alerts.flush import prune

    clock.now = START + timedelta(days=30)  # past retention: the left-out entry does not hold pruning back
    assert prune(digest) > 0
    assert not entry.exists() and not (root / key).exists()


def test_a_taken_over_claim_whose_send_fails_is_sent_by_a_later_flush_before_the_next_claim(
    mail_env, notifier_for, clock, tmp_path
):
    """A flush that takes over claim n makes no claim n+1: n+1 is planned once n was sent, so n gets its marker."""
    from airflow_secure_mail.alerts.flush import due
    from airflow_secure_mail.errors import DigestFlushError

    root = tmp_path / "state"
    digest = AlertDigest(state=f"file://{root}", clock=clock, lease="5m")
    notifier = notifier_for(digest)
    gid = group_id({"dag_id": "finance_daily"})
    digest.record(_event(START, task="load"))
    clock.now = START + timedelta(minutes=1)
    assert [c.n for c in due(digest).claims] == [1]  # claimed by a worker that then dies before sending
    clock.now = START + timedelta(minutes=20)
    digest.record(_event(clock.now, task="report"))
    mail_env.smtp.script.data_replies = ["554 5.7.1 rejected for now"]  # the relay refuses once
    with pytest.raises(DigestFlushError, match="digest 1 not sent"):
        digest.flush(notifier)
    for minutes in (30, 60, 24 * 60):
        clock.now = START + timedelta(minutes=minutes)
        digest.flush(notifier)
    assert (root / "claims" / gid / "00000001.sent.json").exists()
    texts = [_text(m) for m in mail_env.smtp.messages]
    assert any("finance_daily.load" in t for t in texts)
    assert any("finance_daily.report" in t for t in texts)
