"""The security report: every figure equals a count taken independently from the seeded records (1,000+
records, failed attempts and refusals on file://), the page renders at phone width in Chromium without a
horizontal scroll, and the live posture of a connection (relay certificate, S/MIME signer, credential age)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.ops.report import (
    Posture,
    Report,
    collect,
    errors_by_kind,
    malware_findings,
    per_day,
    per_domain,
    protection_share,
    refusals_by_rule,
    render,
    spam_findings,
    tls_versions,
    vault_errors,
)
from tests.conftest import ROOT
from tests.integration.ops.seed import Seeded, seed

NOW = datetime.now(UTC).replace(microsecond=0)
SINCE, UNTIL = NOW - timedelta(days=8), NOW


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[str, Seeded]:
    """1,000 messages (1,140+ copies) over the last 7 days, 60 refusals; an older batch outside the window."""
    url = f"file://{tmp_path_factory.mktemp('report')}/archive"
    archive = MailArchive(url)
    inside = seed(archive, 1000, end=NOW - timedelta(minutes=5), days=7, refusals=60)
    seed(archive, 50, end=SINCE - timedelta(hours=1), days=2, refusals=10, tag="old")
    return url, inside


def _figures(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="([^"]+)">([^<]*)<', page))


def test_every_figure_equals_an_independent_count(seeded):
    url, s = seeded
    facts = collect(MailArchive(url), SINCE, UNTIL)
    key = lambda m: (m.key, m.committed_at)  # noqa: E731
    assert sorted(map(key, facts.records)) == sorted(map(key, s.records))
    assert sorted(map(key, facts.failures)) == sorted(map(key, s.failures))
    assert sorted(r.id for r in facts.refusals) == sorted(r.id for r in s.refusals)
    assert len(facts.records) >= 1000 and len(facts.refusals) == 60

    ids, rcpts = defaultdict(set), Counter()
    for m in s.records:
        ids[m.committed_at[:10]].add(m.message_id)
        rcpts[m.committed_at[:10]] += len(m.recipients)
    days = per_day(facts.records, SINCE, UNTIL)
    assert {d: (n, r) for d, n, r in days if n} == {d: (len(ids[d]), rcpts[d]) for d in ids}
    assert len(days) == 9 and sum(n for _, n, _ in days) == 1000

    domains = Counter(r.split("@")[1] for m in s.records for r in m.recipients)
    assert dict(per_domain(facts.records, top=99)) == dict(domains)
    top3 = per_domain(facts.records, top=3)
    assert top3[-1] == ("other", sum(sorted(domains.values())[:-3]))

    assert protection_share(facts.records) == {
        "copies": len(s.records),
        "signed": len([m for m in s.records if re.search(r"\bsigned\b", m.protection)]),
        "encrypted": len([m for m in s.records if re.search(r"\bencrypted\b", m.protection)]),
    }
    assert tls_versions(facts.records) == dict(Counter(m.tls["version"] for m in s.records))
    assert refusals_by_rule(facts.refusals) == dict(Counter(r.rule for r in s.refusals))
    infected = [m for m in s.records if (m.malware_scan or {}).get("verdict") == "found"]
    assert len(malware_findings(facts.records, facts.refusals)) == len(infected) + len(
        [r for r in s.refusals if r.rule == "malware"]
    )
    spammy = [m for m in s.records if m.spam_scan and m.spam_scan["score"] >= m.spam_scan["threshold"]]
    assert len(spam_findings(facts.records, facts.refusals)) == len(spammy) + 10  # 60 refusals, rules cycle by 6
    assert errors_by_kind(facts.failures) == dict(Counter(m.error.split(":")[0] for m in s.failures))
    assert vault_errors(facts.failures) == len([m for m in s.failures if m.error.startswith("Vault")])


def test_the_cli_writes_the_page_with_the_same_figures(seeded, tmp_path, capsys):
    from airflow_secure_mail.cli import main

    url, s = seeded
    out = tmp_path / "report.html"
    args = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat(), "--out", str(out)]
    assert main(["report", "--archive", url, *args]) == 0
    printed = capsys.readouterr().out
    page = out.read_text()
    figures = _figures(page)
    copies = len(s.records)
    assert figures["messages"] == "1000"
    assert figures["recipients"] == str(sum(len(m.recipients) for m in s.records))
    signed = len([m for m in s.records if "signed" in m.protection])
    assert figures["signed_share"] == f"{100 * signed / copies:.0f}%"
    assert figures["refusals"] == "60"
    assert figures["failed_attempts"] == figures["failed_attempts_total"] == str(len(s.failures))
    assert figures["vault_errors"] == str(len([m for m in s.failures if "Vault" in m.error]))
    assert figures["partially_refused"] == str(len([m for m in s.records if m.status.value == "partially_refused"]))
    assert figures["malware"] == str(
        len([m for m in s.records if (m.malware_scan or {}).get("verdict") == "found"]) + 10
    )
    assert (
        "old." not in page
        and "<script" not in page
        and "http://" not in page.replace('"http://www.w3.org/2000/svg"', "")
    )
    assert page.count("What to do:") >= 5
    assert printed.splitlines()[1] == f"1000 messages to {figures['recipients']} recipients ({copies} copies; " + (
        f"{signed} signed, {len([m for m in s.records if 'encrypted' in m.protection])} encrypted)"
    )
    assert printed.splitlines()[-1] == f"written: {out}"


def test_an_empty_window_is_a_calm_page(tmp_path):
    url = f"file://{tmp_path}/empty"
    page = render(Report(collect(MailArchive(url), SINCE, UNTIL)))
    figures = _figures(page)
    assert figures["messages"] == "0" and figures["refusals"] == "0" and "What to do:" not in page


def test_red_posture_figures_say_what_to_do():
    facts = collect(MailArchive("file:///nonexistent-report-archive"), SINCE, UNTIL)
    bad = Posture("smtp_prod", 12, "mx (TLSv1.3)", 5, "signer", 200, "secret/smtp/prod v3", "secret/smtp/prod")
    page = render(Report(facts, [bad]))
    figures = _figures(page)
    assert figures["smtp_prod:relay_days_left"] == "12 days"
    assert figures["smtp_prod:credential_age_days"] == "200 days"
    assert (
        "What to do: renew the relay&#x27;s certificate; check it with airflow-secure-mail doctor --conn-id smtp_prod."
        in page
    )
    assert "What to do: rotate the SMTP password at the relay and write it to secret/smtp/prod" in page
    good = Posture("smtp_prod", 300, "", 200, "", 3, "", "secret/smtp/prod")
    assert "What to do:" not in render(Report(facts, [good]))


def _days_left(pem: str) -> int:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate"], input=pem, capture_output=True, text=True, check=True
    )
    end = datetime.strptime(out.stdout.strip().removeprefix("notAfter="), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
    return (end - datetime.now(UTC)).days


def test_posture_of_a_live_connection(mail_env, server_factory, ca, tmp_path, capsys):
    import ssl

    from airflow_secure_mail.cli import main
    from airflow_secure_mail.testing.keys import seed_vault_keys

    soon = datetime.now(UTC) + timedelta(days=12, hours=1)
    relay = server_factory(server_context=ca.server_context("localhost", "127.0.0.1", not_after=soon))
    mail_env.set_smtp_conn("smtp_soon", port=relay.port(starttls=False))
    keys = seed_vault_keys(mail_env.bao.client(), "board@example.com", "airflow@example.com", signing_path="rep-sign")
    pem = ssl.get_server_certificate(("127.0.0.1", relay.port(starttls=False)))
    out = tmp_path / "r.html"
    code = main(["report", "--archive", f"file://{tmp_path}/a", "--since", "7d", "--out", str(out),
                 "--smtp-conn-id", "smtp_soon", "--signing-vault-path", "rep-sign"])  # fmt: skip
    assert code == 0, capsys.readouterr().out
    figures = _figures(out.read_text())
    assert figures["smtp_soon:relay_days_left"] == f"{_days_left(pem)} days" == "12 days"
    assert figures["smtp_soon:smime_days_left"] == f"{_days_left(keys.signer_smime.certificate)} days"
    assert figures["smtp_soon:credential_age_days"] == "0 days"  # mail_env wrote the secret just now
    assert "What to do: renew the relay&#x27;s certificate" in out.read_text()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make sysdeps)")
@pytest.mark.browser
def test_the_page_reads_on_a_phone_in_chromium(seeded, tmp_path):
    from playwright.sync_api import sync_playwright

    from airflow_secure_mail.testing.browser import CHROMIUM, CHROMIUM_ARGS

    url, _ = seeded
    page_file = tmp_path / "report.html"
    bad = Posture("secure_smtp_default", 12, "mx.example (TLSv1.3)", None, "no signer configured", 120, "v1", "x")
    page_file.write_text(render(Report(collect(MailArchive(url), SINCE, UNTIL), [bad])))
    shot = tmp_path / "report.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=True)
            context.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
            page = context.new_page()
            page.goto(page_file.as_uri())
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            dom = page.content()
            figures = page.evaluate(
                "Object.fromEntries([...document.querySelectorAll('[data-figure]')]"
                ".map(e => [e.dataset.figure, e.textContent]))"
            )
            svg_width = page.evaluate(
                "Math.max(...[...document.querySelectorAll('svg')].map(e => e.getBoundingClientRect().right))"
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert widths[0] <= widths[1] == 390, widths
    assert svg_width <= 390
    assert figures["messages"] == "1000" and figures["refusals"] == "60"
    assert figures["secure_smtp_default:relay_days_left"] == "12 days"
    assert "What to do:" in dom
    assert shot.stat().st_size > 10_000
    artefacts = ROOT / ".artifacts"
    artefacts.mkdir(exist_ok=True)
    shutil.copy(shot, artefacts / "security-report.png")
