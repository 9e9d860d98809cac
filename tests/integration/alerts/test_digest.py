"""Alert digests (alerts/) driven through the API with an injectable clock, real SMTP catcher, file:// and S3."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta

import pytest

from airflow_secure_mail.alerts.digest import AlertDigest, parse_duration
from airflow_secure_mail.alerts.events import Event, Kind
from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.testing.browser import render
from tests.conftest import ROOT
from tests.helpers import alert_context, modules_loaded_by

START = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)


class Clock:
    """The digest's injectable clock: tests move time, nothing sleeps."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def _text(received) -> str:
    return _parsed(received.data).get_body(("plain",)).get_content().replace("\r\n", "\n")


def _subject(received) -> str:
    return " ".join(_parsed(received.data)["Subject"].split())


def _event(
    at: datetime,
    *,
    dag="finance_daily",
    task="load",
    run=None,
    kind=Kind.FAILURE,
    try_number=1,
    map_index=-1,
    error="RuntimeError: warehouse load failed",
):
    return Event(
        dag_id=dag,
        run_id=run or f"scheduled__{at:%H%M}",
        task_id=task,
        map_index=map_index,
        try_number=try_number,
        kind=kind,
        at=at,
        error=error,
        log_url=f"http://airflow.example/log/{task}",
        max_tries=1,
    )


def test_durations_read_like_alertmanager():
    assert parse_duration("1h30m", "x") == timedelta(minutes=90)
    assert parse_duration("0s", "x") == timedelta(0)
    assert parse_duration(90, "x") == timedelta(seconds=90)
    with pytest.raises(ConfigurationError, match=r"AlertDigest.group_interval='15 minutes': give a duration"):
        AlertDigest(state="file:///tmp/x", group_interval="15 minutes")


def test_bad_config_names_the_field():
    with pytest.raises(ConfigurationError, match="needs a scheme"):
        AlertDigest(state="/tmp/state")
    with pytest.raises(ConfigurationError, match=r"group_by=\('owner',\): choose labels from dag_id"):
        AlertDigest(state="file:///tmp/x", group_by=("owner",))
    with pytest.raises(ConfigurationError, match="max_items=0"):
        AlertDigest(state="file:///tmp/x", max_items=0)


def test_dag_failing_every_minute_for_a_day_mails_once_then_every_repeat_interval(
    mail_env, notifier_for, clock, tmp_path
):
    digest = AlertDigest(state=f"file://{tmp_path}/state", group_interval="1h", repeat_interval="4h", clock=clock)
    notifier = notifier_for(digest)
    for minute in range(24 * 60):
        clock.now = START + timedelta(minutes=minute)
        assert digest.record(_event(clock.now))
        digest.flush(notifier, group={"dag_id": "finance_daily"})
    clock.now = START + timedelta(hours=24)
    digest.flush(notifier)
    texts = [_text(m) for m in mail_env.smtp.messages]
    stamps = [re.search(r"Digest (\S+ \S+) UTC", t).group(1) for t in texts]
    assert stamps == [f"2026-11-28 {h:02d}:00" for h in (0, 4, 8, 12, 16, 20)] + ["2026-11-29 00:00"]
    assert _subject(mail_env.smtp.messages[0]) == "[Airflow] 1 failure in 1 DAG since 00:00 UTC (finance_daily)"
    assert _subject(mail_env.smtp.messages[1]) == "[Airflow] 240 failures in 1 DAG since 00:00 UTC (finance_daily)"
    assert "x241 since 00:00, last 04:00 (240 new)" in texts[1]
    counts = [1] + [int(re.search(r"\((\d+) new\)", t).group(1)) for t in texts[1:]]
    assert sum(counts) == 1440  # every event in exactly one digest


def _flush_worker(state: str, conn: str | None, when: str, barrier, results) -> None:
    """One of several separate processes flushing the same slot at the same moment."""
    from airflow_secure_mail import AlertDigest, SecureEmailNotifier

    at = datetime.fromisoformat(when)
    digest = AlertDigest(state=state, state_conn_id=conn, clock=lambda: at)
    barrier.wait(timeout=300)
    results.put(digest.flush(SecureEmailNotifier(to="oncall@example.com", digest=digest)))


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def shared_state(request, tmp_path) -> tuple[str, str | None]:
    """Digest state every worker process shares: a local directory, or a SeaweedFS bucket."""
    if request.param == "file":
        return f"file://{tmp_path}/state", None
    conn = request.getfixturevalue("s3_conn")
    return f"s3://mail-test/alert-state-{tmp_path.name}", conn


def test_four_processes_flushing_one_slot_send_exactly_one_mail(mail_env, shared_state):
    import multiprocessing

    state, conn = shared_state
    digest = AlertDigest(state=state, state_conn_id=conn, clock=lambda: START)
    for task in ("extract", "load", "report"):
        digest.record(_event(START, task=task))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    when = (START + timedelta(minutes=1)).isoformat()
    workers = [ctx.Process(target=_flush_worker, args=(state, conn, when, barrier, results)) for _ in range(4)]
    for w in workers:
        w.start()
    sent = [results.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert sorted(len(s) for s in sent) == [0, 0, 0, 1]
    [received] = mail_env.smtp.messages
    assert _parsed(received.data)["Message-ID"] == next(s for s in sent if s)[0]
    assert "3 failures in 1 DAG" in _subject(received)


def _claim_and_die(state: str, when: str, archive: str | None, claimed, after_send: bool) -> None:
    """Claim the slot, then get SIGKILLed: before sending, or after sending but before recording it."""
    import os
    import signal

    from airflow_secure_mail import AlertDigest, SecureEmailNotifier
    from airflow_secure_mail.alerts import flush
    from airflow_secure_mail.alerts.state import DigestState

    def die() -> None:
        claimed.set()
        os.kill(os.getpid(), signal.SIGKILL)

    if after_send:
        real = DigestState.create_json

        def create_json(self, name, data):
            if name.endswith(".sent.json"):
                die()
            return real(self, name, data)

        DigestState.create_json = create_json
    else:

        async def hang(state, notifier, claim):
            die()

        flush.send_claim = hang
    at = datetime.fromisoformat(when)
    digest = AlertDigest(state=state, clock=lambda: at, lease="5m")
    digest.flush(SecureEmailNotifier(to="oncall@example.com", digest=digest, archive=archive))


def _killed_claimant(state: str, archive: str | None, *, after_send: bool) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    claimed = ctx.Event()
    when = (START + timedelta(minutes=1)).isoformat()
    proc = ctx.Process(target=_claim_and_die, args=(state, when, archive, claimed, after_send))
    proc.start()
    assert claimed.wait(timeout=300)
    proc.join(timeout=60)
    assert proc.exitcode == -9


def test_claimant_killed_before_sending_is_taken_over_after_the_lease(mail_env, notifier_for, clock, tmp_path):
    state = f"file://{tmp_path}/state"
    digest = AlertDigest(state=state, clock=clock, lease="5m")
    digest.record(_event(START))
    _killed_claimant(state, None, after_send=False)
    assert mail_env.smtp.messages == []
    notifier = notifier_for(digest)
    clock.now = START + timedelta(minutes=5)
    assert digest.flush(notifier) == []  # the lease (from 00:01) still holds
    clock.now = START + timedelta(minutes=6, seconds=1)
    [message_id] = digest.flush(notifier)
    assert digest.flush(notifier) == []
    [received] = mail_env.smtp.messages
    assert _parsed(received.data)["Message-ID"] == message_id
    assert "finance_daily.load  x1 since 00:00" in _text(received)
    claims = sorted(p.name for p in (tmp_path / "state" / "claims").rglob("*.json"))
    assert claims == ["00000001.json", "00000001.lease-1.json", "00000001.sent.json"]


def test_claimant_killed_after_sending_is_not_sent_twice_with_the_archive(mail_env, notifier_for, clock, tmp_path):
    from airflow_secure_mail import SecureEmailNotifier

    state, archive = f"file://{tmp_path}/state", f"file://{tmp_path}/archive"
    digest = AlertDigest(state=state, clock=clock, lease="5m")
    digest.record(_event(START))
    _killed_claimant(state, archive, after_send=True)
    assert len(mail_env.smtp.messages) == 1
    clock.now = START + timedelta(minutes=7)
    notifier = SecureEmailNotifier(to="oncall@example.com", digest=digest, archive=archive)
    [message_id] = digest.flush(notifier)
    assert len(mail_env.smtp.messages) == 1  # the archive's committed record stopped the second delivery
    assert _parsed(mail_env.smtp.messages[0].data)["Message-ID"] == message_id


def _cli(capsys, *args: str) -> tuple[int, str]:
    from airflow_secure_mail.cli import main

    code = main(["silence", *args])
    return code, capsys.readouterr().out


def test_silence_holds_mail_until_it_ends_and_the_next_digest_says_what_was_held(
    mail_env, notifier_for, clock, tmp_path, capsys
):
    state = f"file://{tmp_path}/state"
    digest = AlertDigest(state=state, clock=clock)
    notifier = notifier_for(digest)
    code, out = _cli(
        capsys,
        "add",
        "--state",
        state,
        "--match",
        "dag_id=finance_daily",
        "--starts",
        "2026-11-28T00:00Z",
        "--until",
        "2026-11-28T02:00Z",
        "--reason",
        "warehouse migration",
    )
    assert code == 0
    silence_id = out.split()[0]
    for minutes in (10, 20, 30):
        clock.now = START + timedelta(minutes=minutes)
        digest.record(_event(clock.now))
        digest.record(_event(clock.now, dag="hr_sync", task="pull"))
        digest.flush(notifier)
    assert [_subject(m) for m in mail_env.smtp.messages] == ["[Airflow] 1 failure in 1 DAG since 00:10 UTC (hr_sync)"]
    clock.now = START + timedelta(hours=1, minutes=59)
    digest.flush(notifier)
    assert len(mail_env.smtp.messages) == 1
    clock.now = START + timedelta(hours=2)
    digest.flush(notifier)
    held = [m for m in mail_env.smtp.messages if "finance_daily" in _subject(m)]
    [received] = held
    assert _subject(received) == "[Airflow] 3 alerts held by a silence in 1 DAG since 00:10 UTC (finance_daily)"
    text = _text(received)
    assert f"- 3 events held by silence {silence_id} (dag_id=finance_daily) until 02:00: warehouse migration" in text
    assert "finance_daily.load x3" in text
    code, out = _cli(capsys, "list", "--state", state)
    assert code == 0 and silence_id in out and "dag_id=finance_daily" in out and "# warehouse migration" in out


def test_silence_expire_ends_it_early(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AIRFLOW_SECURE_MAIL_DIGEST_STATE", f"file://{tmp_path}/state")
    code, out = _cli(capsys, "add", "--match", "task_id=~load_.*", "--until", "2099-01-01T00:00Z", "--reason", "r")
    silence_id = out.split()[0]
    assert code == 0 and "task_id=~load_.*" in out
    assert _cli(capsys, "list")[1].split()[1] == "active"
    assert _cli(capsys, "expire", silence_id)[0] == 0
    assert _cli(capsys, "list")[1].split()[1] == "ended"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list"], "error: give --state URL (e.g. s3://bucket/alert-state) or set AIRFLOW_SECURE_MAIL_DIGEST_STATE."),
        (
            ["add", "--state", "file:///tmp/x", "--until", "2099-01-01T00:00", "--match", "dag_id=a", "--reason", "r"],
            "error: silence end 2099-01-01T00:00:00 has no time zone: add Z or +HH:MM.",
        ),
        (
            ["add", "--state", "file:///tmp/x", "--until", "2099-01-01T00:00Z", "--match", "owner=me", "--reason", "r"],
            "error: silence matcher 'owner=me': write LABEL=VALUE (or !=, =~, !~) with LABEL one of dag_id, task_id,",
        ),
        (
            ["add", "--state", "file:///tmp/x", "--until", "2099-01-01T00:00Z", "--reason", "r"],
            "error: a silence needs at least one --match LABEL=VALUE (it would silence everything).",
        ),
        (["expire", "--state", "file:///tmp/x", "../../etc"], "error: silence id '../../etc' is not one"),
    ],
)
def test_silence_cli_refuses_bad_input_with_one_line(capsys, monkeypatch, args, message):
    monkeypatch.delenv("AIRFLOW_SECURE_MAIL_DIGEST_STATE", raising=False)
    code, out = _cli(capsys, *args)
    assert code == 2 and out.startswith(message) and out.count("\n") == 1


def test_send_resolved_reports_a_recovered_key(mail_env, notifier_for, clock, tmp_path):
    digest = AlertDigest(state=f"file://{tmp_path}/state", clock=clock, send_resolved=True, group_interval="15m")
    notifier = notifier_for(digest)
    digest.record(_event(START))
    digest.flush(notifier)
    clock.now = START + timedelta(minutes=5)
    digest.record(_event(clock.now, kind=Kind.SUCCESS, run="scheduled__0005"))
    digest.flush(notifier)
    assert len(mail_env.smtp.messages) == 1  # group_interval holds the resolution until 00:15
    clock.now = START + timedelta(minutes=15)
    digest.flush(notifier)
    received = mail_env.smtp.messages[1]
    assert _subject(received) == "[Airflow] resolved: 1 alert (finance_daily)"
    assert "Resolved\n- finance_daily.load at 00:05" in _text(received)
    clock.now = START + timedelta(hours=8)
    digest.flush(notifier)
    assert len(mail_env.smtp.messages) == 2  # nothing firing: no repeat


@pytest.mark.skipif(__import__("shutil").which("chromium") is None, reason="chromium not installed (make sysdeps)")
@pytest.mark.browser
def test_digest_html_renders_on_a_phone_screen_in_headless_chromium(mail_env, notifier_for, clock, tmp_path):
    import shutil

    digest = AlertDigest(state=f"file://{tmp_path}/state", clock=clock, group_by=(), group_wait="1m", max_items=6)
    for i in range(5):
        digest.record(
            _event(
                START,
                task="load",
                map_index=i,
                run="scheduled__2026-11-28",
                error=f"RuntimeError: shard {i} <unreachable> & retrying",
            )
        )
    digest.record(_event(START, task="(run)", run="scheduled__2026-11-28", kind=Kind.RUN_FAILURE, error="task_failure"))
    for dag in ("billing", "crm_export"):
        digest.record(_event(START, dag=dag, task="push", error="ConnectionError: api.example timed out"))
    clock.now = START + timedelta(minutes=1)
    digest.flush(notifier_for(digest))
    [received] = mail_env.smtp.messages
    page = tmp_path / "digest.html"
    page.write_text(_parsed(received.data).get_body(("html",)).get_content())
    shot = tmp_path / "digest.png"
    dom = render(page, shot, width=390, height=1100, profile=tmp_path / "profile")
    assert _subject(received) == "[Airflow] 7 failures in 3 DAGs since 00:00 UTC (billing, crm_export, ...)"
    for expected in (
        "DAG run failed: finance_daily",
        "5 failed task instances",
        "load[3], try 1 of 1",
        "RuntimeError: shard 3 &lt;unreachable&gt; &amp; retrying",
        "billing.push",
        "×1",
        "+1 more not listed",
    ):
        assert expected in dom
    assert shot.stat().st_size > 1000
    artefacts = ROOT / ".artifacts"
    artefacts.mkdir(exist_ok=True)
    shutil.copy(shot, artefacts / "digest-mail.png")


def test_importing_digest_api_loads_no_heavy_dependency():
    loaded = modules_loaded_by(
        "from airflow_secure_mail import AlertDigest, AlertDigestFlushOperator, SecureEmailNotifier\n"
        "AlertDigest(state='s3://bucket/alerts', group_interval='1h')"
    )
    loaded = {m.split(".")[0] for m in loaded}
    assert not loaded & {"fsspec", "s3fs", "aiosmtplib", "jinja2", "hvac", "cryptography", "tenacity"}


def test_a_new_alert_key_waits_for_group_interval_then_lists_the_whole_group(mail_env, notifier_for, clock, tmp_path):
    digest = AlertDigest(state=f"file://{tmp_path}/state", clock=clock, group_interval="15m")
    notifier = notifier_for(digest)
    digest.record(_event(START, task="extract"))
    digest.flush(notifier)
    clock.now = START + timedelta(minutes=5)
    digest.record(_event(clock.now, task="load", error="ValueError: bad row 17"))
    digest.flush(notifier)
    clock.now = START + timedelta(minutes=14, seconds=59)
    digest.flush(notifier)
    assert len(mail_env.smtp.messages) == 1
    clock.now = START + timedelta(minutes=15)
    digest.flush(notifier)
    second = _text(mail_env.smtp.messages[1])
    assert _subject(mail_env.smtp.messages[1]) == "[Airflow] 1 failure in 1 DAG since 00:00 UTC (finance_daily)"
    assert second.index("finance_daily.load  x1 since 00:05") < second.index("finance_daily.extract  x1 since 00:00")
    assert "Last error: ValueError: bad row 17" in second


def test_digest_never_carries_a_masked_secret_or_a_traceback(mail_env, tmp_path):

    from airflow_secure_mail import SecureEmailNotifier
    from airflow_secure_mail._masking import mask

    mask("pa55-w0rd-in-a-dsn", "password")
    digest = AlertDigest(state=f"file://{tmp_path}/state")
    try:
        raise ConnectionError("cannot connect to postgres://etl:pa55-w0rd-in-a-dsn@db/sales\nTraceback: line 2")
    except ConnectionError as exc:
        error = exc
    SecureEmailNotifier(to="oncall@example.com", digest=digest).notify(alert_context(error))
    [received] = mail_env.smtp.messages
    assert b"pa55-w0rd-in-a-dsn" not in received.data and b"Traceback" not in received.data
    assert "ConnectionError: cannot connect to postgres://etl:***@db/sales" in _text(received)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*.json"))
    assert b"pa55-w0rd-in-a-dsn" not in stored


def test_prune_drops_reported_state_past_retention_and_the_chain_goes_on(mail_env, notifier_for, clock, tmp_path):
    digest = AlertDigest(state=f"file://{tmp_path}/state", clock=clock, retention="7d", resolve_timeout="1h")
    notifier = notifier_for(digest)
    for minute in (0, 1, 2):
        clock.now = START + timedelta(minutes=minute)
        digest.record(_event(clock.now))
        digest.flush(notifier)
    assert digest.prune() == 0  # nothing is past retention yet
    clock.now = START + timedelta(days=8)
    digest.record(_event(clock.now, run="scheduled__day8"))
    [message_id] = digest.flush(notifier)
    assert digest.prune() == 3 + 2  # the three old events (index entries; event objects too) and claim 1 with .sent
    state = tmp_path / "state"
    assert len(list((state / "events").rglob("*.json"))) == 1
    assert sorted(p.name for p in (state / "claims").rglob("*.json")) == ["00000002.json", "00000002.sent.json"]
    clock.now += timedelta(hours=2)
    digest.record(_event(clock.now, task="report"))
    [later] = digest.flush(notifier)
    assert later != message_id
    assert "finance_daily.report  x1" in _text(mail_env.smtp.messages[-1])


def test_notify_on_retry_mails_the_retry_and_group_by_task_splits_groups(mail_env, notifier_for, clock, tmp_path):
    digest = AlertDigest(
        state=f"file://{tmp_path}/state", clock=clock, notify_on_retry=True, group_by=("dag_id", "task_id")
    )
    notifier = notifier_for(digest)
    digest.record(_event(START, task="extract", kind=Kind.RETRY, error="TimeoutError: api slow"))
    digest.record(_event(START, task="load"))
    digest.flush(notifier)
    subjects = sorted(_subject(m) for m in mail_env.smtp.messages)
    assert subjects == [
        "[Airflow] 1 failure in 1 DAG since 00:00 UTC (finance_daily)",
        "[Airflow] 1 retry in 1 DAG since 00:00 UTC (finance_daily)",
    ]
    load, extract = sorted(_text(m) for m in mail_env.smtp.messages)
    assert "finance_daily.extract  x1 since 00:00, last 00:00, 1 retry" in extract
    assert "finance_daily.load  x1 since 00:00" in load and "extract" not in load


def test_silence_matchers_follow_alertmanager_operators():
    from airflow_secure_mail.alerts.silences import Matcher

    labels = {"dag_id": "finance_daily", "task_id": "load_orders", "kind": "failure"}
    assert Matcher.parse("task_id=~load_.*").matches(labels)
    assert not Matcher.parse("task_id=~load").matches(labels)  # the whole value, as in Alertmanager
    assert Matcher.parse("dag_id!=hr_sync").matches(labels)
    assert not Matcher.parse("kind!~fail.*").matches(labels)
    with pytest.raises(ConfigurationError, match=r"silence matcher 'task_id=~\(': bad regular expression"):
        Matcher.parse("task_id=~(")
