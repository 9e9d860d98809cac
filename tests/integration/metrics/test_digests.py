"""``digests_suppressed``: the alert mails a digest saved, by reason (folded, silenced, claimed), against the
catcher and a file:// digest state."""

from __future__ import annotations

from datetime import timedelta

from airflow_secure_mail import SecureEmailNotifier
from airflow_secure_mail.alerts.digest import AlertDigest
from airflow_secure_mail.alerts.silences import add_silence
from airflow_secure_mail.alerts.state import DigestState
from tests.integration.alerts.test_digest import START, Clock, _event

P = "airflow.secure_mail."


def test_three_failures_in_one_digest_count_two_folded(mail_env, statsd, tmp_path):
    clock = Clock()
    digest = AlertDigest(state=f"file://{tmp_path}/state", clock=clock)
    for task in ("extract", "load", "report"):
        digest.record(_event(START, task=task))
    clock.advance(minutes=1)
    digest.flush(SecureEmailNotifier(to="oncall@example.com", digest=digest))
    assert len(mail_env.smtp.messages) == 1
    assert statsd.total(P + "digests_suppressed.folded") == 2
    assert statsd.total(P + "digests_suppressed") == 2
    assert statsd.total(P + "sent") == 1


def test_events_a_silence_held_are_counted_silenced_when_their_digest_goes_out(mail_env, statsd, tmp_path):
    clock = Clock()
    state = f"file://{tmp_path}/state"
    add_silence(
        DigestState(state), ["dag_id=finance_daily"], starts=START, until=START + timedelta(hours=2), reason="migration"
    )
    digest = AlertDigest(state=state, clock=clock)
    notifier = SecureEmailNotifier(to="oncall@example.com", digest=digest)
    for minutes in (10, 20, 30):
        clock.now = START + timedelta(minutes=minutes)
        digest.record(_event(clock.now))
        digest.flush(notifier)
    assert mail_env.smtp.messages == [] and statsd.total(P + "digests_suppressed") == 0
    clock.now = START + timedelta(hours=2)
    digest.flush(notifier)
    assert len(mail_env.smtp.messages) == 1
    assert statsd.total(P + "digests_suppressed.silenced") == 2  # three held events, one mail
    assert statsd.total(P + "digests_suppressed.folded") == 0


def test_a_slot_another_worker_claimed_first_is_counted_claimed(mail_env, statsd, tmp_path, monkeypatch):
    """The other worker's claim lands on the real store between our planning and our write-once create."""
    clock = Clock()
    digest = AlertDigest(state=f"file://{tmp_path}/state", clock=clock)
    digest.record(_event(START))
    clock.advance(minutes=1)
    real = DigestState.create_json

    def other_worker_first(self, name, data):  # type: ignore[no-untyped-def]
        if name.startswith("claims/") and name.endswith("/00000001.json"):
            real(self, name, dict(data))
        return real(self, name, data)

    monkeypatch.setattr(DigestState, "create_json", other_worker_first)
    assert digest.flush(SecureEmailNotifier(to="oncall@example.com", digest=digest)) == []
    assert mail_env.smtp.messages == []
    assert statsd.total(P + "digests_suppressed.claimed") == 1
