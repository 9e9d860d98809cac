"""The security report: one self-contained HTML page of what the mail path did in a window, for a phone.

Every figure comes from the archive's METADATA (committed records, failed attempts, refusal records), never
from a body, and is computed by one small function here (tested against counts taken independently from the
records). Live posture (relay certificate, S/MIME signer certificate, credential age) is read per connection
when asked. Charts are inline SVG drawn here: no script, no external fetch.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_secure_mail.archive.reader import ArchiveReader
from airflow_secure_mail.archive.record import RecordMetadata
from airflow_secure_mail.archive.refusals import RefusalRecord, iter_refusals

EXPIRY_WARNING_DAYS = 30
CREDENTIAL_MAX_AGE_DAYS = 90
TOP_DOMAINS = 8
OLD_TLS = ("SSLv3", "TLSv1", "TLSv1.1")


# -- what the archive holds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveFacts:
    """The window's metadata: committed records, failed attempts (``<key>.failed-N.json``), refusals."""

    since: datetime
    until: datetime
    records: list[RecordMetadata]
    failures: list[RecordMetadata]
    refusals: list[RefusalRecord]


def collect(archive: ArchiveReader, since: datetime, until: datetime) -> ArchiveFacts:
    """Read the metadata of ``[since, until)``: one listing per day folder, no message body read."""
    records: list[RecordMetadata] = []
    failures: list[RecordMetadata] = []
    first = archive.first_day()
    day = max((since - timedelta(days=1)).date(), first) if first else None
    while day is not None and day <= until.date():
        folder = f"messages/{day:%Y/%m/%d}"
        for name in sorted(archive.list_names(folder)):
            suffix = name.partition(".")[2]
            if suffix != "json" and not (suffix.startswith("failed-") and suffix.endswith(".json")):
                continue
            raw = archive.read(f"{folder}/{name}")
            if raw is None:
                continue
            meta = RecordMetadata.from_json(raw, where=f"{folder}/{name}")
            when = datetime.fromisoformat(meta.committed_at or meta.staged_at)
            if since <= when < until:
                (records if suffix == "json" else failures).append(meta)
        day += timedelta(days=1)
    return ArchiveFacts(since, until, records, failures, list(iter_refusals(archive, since, until)))


# -- the figures (each a function, each tested) -------------------------------------------------------------


def _day(meta: RecordMetadata) -> str:
    return datetime.fromisoformat(meta.committed_at or meta.staged_at).astimezone(UTC).strftime("%Y-%m-%d")


def per_day(records: Iterable[RecordMetadata], since: datetime, until: datetime) -> list[tuple[str, int, int]]:
    """(day, messages, recipients) for every day of the window: a message is one Message-ID (its per-recipient
    copies count once), recipients the envelope recipients of every copy."""
    ids: dict[str, set[str]] = {}
    recipients: Counter[str] = Counter()
    for meta in records:
        ids.setdefault(_day(meta), set()).add(meta.message_id or meta.key)
        recipients[_day(meta)] += len(meta.recipients)
    days, day = [], since.astimezone(UTC).date()
    while day <= (until - timedelta(microseconds=1)).astimezone(UTC).date():
        label = day.isoformat()
        days.append((label, len(ids.get(label, ())), recipients[label]))
        day += timedelta(days=1)
    return days


def per_domain(records: Iterable[RecordMetadata], top: int = TOP_DOMAINS) -> list[tuple[str, int]]:
    """Recipients per recipient domain, the ``top`` largest and ``other`` (ties by name)."""
    counts = Counter(r.rpartition("@")[2].lower() for meta in records for r in meta.recipients)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    rest = sum(n for _, n in ranked[top:])
    return ranked[:top] + ([("other", rest)] if rest else [])


def protection_share(records: Iterable[RecordMetadata]) -> dict[str, int]:
    """Copies in all, signed and encrypted (the record's ``protection``: ``signed (pgp), encrypted (pgp)``)."""
    copies = list(records)
    return {
        "copies": len(copies),
        "signed": sum(1 for m in copies if "signed" in m.protection),
        "encrypted": sum(1 for m in copies if "encrypted" in m.protection),
    }


def tls_versions(records: Iterable[RecordMetadata]) -> dict[str, int]:
    """Copies per negotiated TLS version (``none`` = no TLS recorded)."""
    counts = Counter(str((m.tls or {}).get("version") or "none") for m in records)
    return dict(sorted(counts.items()))


def refusals_by_rule(refusals: Iterable[RefusalRecord]) -> dict[str, int]:
    counts = Counter(r.rule for r in refusals)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def partially_refused(records: Iterable[RecordMetadata]) -> int:
    """Copies some of whose recipients the relay refused."""
    return sum(1 for m in records if m.status.value == "partially_refused")


@dataclass(frozen=True)
class Finding:
    at: str
    where: str
    """``sent <Message-ID>`` or ``refused (dag.task)``."""
    detail: str


def malware_findings(records: Iterable[RecordMetadata], refusals: Iterable[RefusalRecord]) -> list[Finding]:
    """A ``found`` verdict in a record's ``malware_scan``, and every refusal with rule ``malware``."""
    found = [
        Finding(m.committed_at or m.staged_at, f"sent {m.message_id}", str(m.malware_scan.get("signature")))
        for m in records
        if m.malware_scan and m.malware_scan.get("verdict") == "found"
    ]
    found += [
        Finding(r.at, f"refused ({_task(r.airflow)})", str((r.malware or {}).get("signature") or r.reason))
        for r in refusals
        if r.rule == "malware"
    ]
    return sorted(found, key=lambda f: f.at)


def spam_findings(records: Iterable[RecordMetadata], refusals: Iterable[RefusalRecord]) -> list[Finding]:
    """A record whose ``spam_scan`` score reached its threshold (sent under ``on_spam="warn"``), and every
    refusal with rule ``spam``."""
    found = []
    for m in records:
        scan = m.spam_scan or {}
        score, threshold = scan.get("score"), scan.get("threshold")
        if isinstance(score, int | float) and isinstance(threshold, int | float) and score >= threshold:
            found.append(Finding(m.committed_at or m.staged_at, f"sent {m.message_id}", _spam(scan)))
    found += [Finding(r.at, f"refused ({_task(r.airflow)})", _spam(r.spam or {})) for r in refusals if r.rule == "spam"]
    return sorted(found, key=lambda f: f.at)


def errors_by_kind(failures: Iterable[RecordMetadata]) -> dict[str, int]:
    """Failed attempts per error type (``VaultUnavailable``, ``SmtpTemporaryError``...), from their ``error``."""
    counts = Counter((m.error or "unknown").split(":", 1)[0].strip() or "unknown" for m in failures)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def vault_errors(failures: Iterable[RecordMetadata]) -> int:
    """Failed attempts whose error names Vault (the rest are the relay's or the network's)."""
    return sum(1 for m in failures if "vault" in (m.error or "").lower())


def _task(origin: Mapping[str, Any]) -> str:
    return ".".join(str(origin[k]) for k in ("dag_id", "task_id") if origin.get(k)) or "outside a task"


def _spam(scan: Mapping[str, Any]) -> str:
    rules = ", ".join(str(r) for r in list(scan.get("rules") or [])[:3])
    return f"score {scan.get('score')} / {scan.get('threshold')}" + (f" ({rules})" if rules else "")


# -- live posture per connection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Posture:
    """What one connection's live checks found; a None figure comes with the note that says why."""

    conn_id: str
    relay_days_left: int | None = None
    relay_note: str = ""
    smime_days_left: int | None = None
    smime_note: str = ""
    credential_age_days: int | None = None
    credential_note: str = ""
    credential_path: str = ""


def posture(conn_id: str, *, signing_vault_path: str | None = None, now: datetime | None = None) -> Posture:
    """The relay certificate's days left (one TLS session, nothing sent), the S/MIME signer certificate's
    (``smime_certificate`` at ``signing_vault_path``), and the age of the SMTP secret (KV v2 metadata)."""
    from airflow.sdk import BaseHook

    from airflow_secure_mail.connection.settings import SmtpSettings

    now = now or datetime.now(UTC)
    try:
        settings = SmtpSettings.from_connection(BaseHook.get_connection(conn_id))
    except Exception as exc:
        why = _one_line(exc)
        return Posture(conn_id, relay_note=why, smime_note=why, credential_note=why)
    relay_days, relay_note = _relay_days(settings)
    smime_days, smime_note = _smime_days(settings.vault_conn_id, signing_vault_path, now)
    age, age_note = _credential_age(settings, now)
    where = f"{settings.vault_mount}/{settings.vault_path}" if settings.vault_path else ""
    return Posture(conn_id, relay_days, relay_note, smime_days, smime_note, age, age_note, where)


def _relay_days(settings: Any) -> tuple[int | None, str]:
    from airflow_secure_mail._sync import run_sync
    from airflow_secure_mail.connection.client import session_info
    from airflow_secure_mail.transport.describe import certificate_expiry
    from airflow_secure_mail.vault import vault_for

    try:
        info = run_sync(session_info(settings, vault_for(settings.vault_conn_id)))
    except Exception as exc:
        return None, f"no TLS session: {_one_line(exc)}"
    expiry = certificate_expiry(info)
    if expiry is None:
        return None, "the relay presented no certificate"
    return expiry.days_left, f"{info.cert_subject} ({info.tls_version})"


def _smime_days(vault_conn_id: str, path: str | None, now: datetime) -> tuple[int | None, str]:
    if not path:
        return None, "no signer configured for the report (--signing-vault-path)"
    from cryptography import x509

    from airflow_secure_mail.vault import vault_for

    try:
        pem = vault_for(vault_conn_id).read(path).get("smime_certificate")
        if not pem:
            return None, f"no smime_certificate at secret/{path}"
        cert = x509.load_pem_x509_certificate(str(pem).encode())
    except Exception as exc:
        return None, _one_line(exc)
    return (cert.not_valid_after_utc - now).days, f"{cert.subject.rfc4514_string()} at secret/{path}"


def _credential_age(settings: Any, now: datetime) -> tuple[int | None, str]:
    """Days since the current version of the SMTP secret was written (KV v2 ``created_time``)."""
    if not settings.vault_path:
        return None, "the connection reads no secret from Vault"
    if settings.vault_kv_version != 2:
        return None, "KV v1 keeps no creation time"
    from airflow_secure_mail.vault import vault_for

    path, mount = settings.vault_path.strip("/"), settings.vault_mount
    try:
        created, version = vault_for(settings.vault_conn_id).secret_written_at(path, mount=mount)
    except Exception as exc:
        return None, f"metadata of {mount}/{path} not readable: {_one_line(exc)}"
    return (now - created).days, f"{mount}/{path} version {version}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# -- the page ---------------------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything the page shows, computed once; ``headline()`` is what the DAG's mail and the demo print."""

    facts: ArchiveFacts
    postures: list[Posture] = field(default_factory=list)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def messages(self) -> int:
        return sum(n for _, n, _ in per_day(self.facts.records, self.facts.since, self.facts.until))

    @property
    def recipients(self) -> int:
        return sum(n for _, _, n in per_day(self.facts.records, self.facts.since, self.facts.until))

    def headline(self) -> dict[str, int]:
        share = protection_share(self.facts.records)
        return {
            "messages": self.messages,
            "recipients": self.recipients,
            "copies": share["copies"],
            "signed": share["signed"],
            "encrypted": share["encrypted"],
            "refusals": len(self.facts.refusals),
            "malware": len(malware_findings(self.facts.records, self.facts.refusals)),
            "spam": len(spam_findings(self.facts.records, self.facts.refusals)),
            "failed_attempts": len(self.facts.failures),
        }

    def summary(self) -> str:
        """A few lines of text: the mail's body beside the HTML attachment."""
        h = self.headline()
        lines = [
            f"Mail security report {self.facts.since:%Y-%m-%d %H:%M} to {self.facts.until:%Y-%m-%d %H:%M} UTC",
            f"{h['messages']} messages to {h['recipients']} recipients ({h['copies']} copies; "
            f"{h['signed']} signed, {h['encrypted']} encrypted)",
            f"{h['refusals']} refused by the screens; {h['malware']} malware and {h['spam']} spam findings; "
            f"{h['failed_attempts']} failed attempts",
        ]
        lines += [
            f"{p.conn_id}: relay certificate {_days(p.relay_days_left, p.relay_note)}; S/MIME signer certificate "
            f"{_days(p.smime_days_left, p.smime_note)}; SMTP credential "
            + (f"{p.credential_age_days} days old" if p.credential_age_days is not None else "age unknown")
            for p in self.postures
        ]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        return render(self)


def build(
    archive: ArchiveReader,
    since: datetime,
    until: datetime,
    *,
    conn_ids: Sequence[str] = (),
    signing_vault_path: str | None = None,
) -> Report:
    facts = collect(archive, since, until)
    return Report(facts, [posture(c, signing_vault_path=signing_vault_path) for c in conn_ids])


def _days(days: int | None, note: str) -> str:
    return f"{days} days left" if days is not None else f"unknown ({note})"


_CSS = """
*{box-sizing:border-box}
body{margin:0;padding:12px;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;
background:#f4f5f7;overflow-wrap:break-word}
td{overflow-wrap:anywhere}
.pos{padding:4px 0;border-bottom:1px solid #eaecef}
.pos b{white-space:nowrap}
.pos small{display:block;color:#57606a;overflow-wrap:anywhere}
main{max-width:760px;margin:0 auto}
h1{font-size:1.3em;margin:.2em 0}
h2{font-size:1.05em;margin:0 0 .4em}
.sub{color:#57606a;margin:0 0 12px}
section{background:#fff;border-radius:8px;padding:12px;margin:0 0 12px;box-shadow:0 1px 2px #0002}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(104px,1fr));gap:8px}
.card{background:#fff;border-radius:8px;padding:8px 10px;box-shadow:0 1px 2px #0002}
.card b,.fig{font-size:1.35em;font-weight:700;display:block}
.card span.l{color:#57606a;font-size:.85em}
.red{color:#b42318}
.ok{color:#1a7f37}
.todo{margin:.2em 0 .6em;padding:6px 8px;background:#fdecea;border-left:3px solid #b42318;font-size:.9em}
svg{display:block;width:100%;height:auto}
table{width:100%;border-collapse:collapse;font-size:.9em}
td,th{text-align:left;padding:3px 4px;border-bottom:1px solid #eaecef;vertical-align:top}
td.n{text-align:right;white-space:nowrap}
td.t{white-space:nowrap}
.none{color:#57606a}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def bars(items: Sequence[tuple[str, int]], *, title: str, red: bool = False) -> str:
    """A horizontal bar chart as inline SVG: a label, a bar and its value per row, scaled to the largest."""
    if not items:
        return '<p class="none">none</p>'
    row, width, label_w, value_w = 22, 340, 130, 44
    most = max(v for _, v in items) or 1
    height = row * len(items) + 4
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" font-size="12" font-family="system-ui,sans-serif">'
    ]
    colour = "#d1453b" if red else "#3b6fd1"
    for i, (label, value) in enumerate(items):
        y = 2 + i * row
        length = round((width - label_w - value_w) * value / most)
        short = label if len(label) <= 18 else label[:17] + "…"
        parts.append(
            f'<text x="0" y="{y + 15}" fill="#1b1f24">{_e(short)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(length, 1)}" height="15" rx="2" fill="{colour}"/>'
            f'<text x="{label_w + max(length, 1) + 4}" y="{y + 15}" fill="#1b1f24">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _card(name: str, label: str, value: object, *, red: bool = False) -> str:
    cls = "red" if red else ""
    return (
        f'<div class="card"><b class="{cls}" data-figure="{name}">{_e(value)}</b>'
        f'<span class="l">{_e(label)}</span></div>'
    )


def _todo(text: str) -> str:
    return f'<p class="todo">What to do: {_e(text)}</p>'


def _findings(items: Sequence[Finding]) -> str:
    if not items:
        return '<p class="none">none</p>'
    rows = "".join(
        f'<tr><td class="t">{_e(f.at[5:16].replace("T", " "))}</td><td>{_e(f.where)}</td><td>{_e(f.detail)}</td></tr>'
        for f in items[-10:]
    )
    more = f'<p class="none">and {len(items) - 10} earlier</p>' if len(items) > 10 else ""
    return f"<table><tr><th>when</th><th>what</th><th>finding</th></tr>{rows}</table>{more}"


def _posture(p: Posture) -> str:
    rows: list[str] = []

    def figure(name: str, label: str, value: int | None, note: str, bad: bool, todo: str) -> None:
        shown = f"{value} days" if value is not None else "unknown"
        cls = "red" if bad else ("ok" if value is not None else "none")
        rows.append(
            f'<div class="pos"><span>{_e(label)}</span> <b class="{cls}" data-figure="{_e(p.conn_id)}:{name}">'
            f"{_e(shown)}</b><small>{_e(note)}</small></div>"
        )
        if bad:
            rows.append(_todo(todo))

    relay_bad = p.relay_days_left is not None and p.relay_days_left < EXPIRY_WARNING_DAYS
    figure(
        "relay_days_left",
        "relay certificate expires in",
        p.relay_days_left,
        p.relay_note,
        relay_bad,
        f"renew the relay's certificate; check it with airflow-secure-mail doctor --conn-id {p.conn_id}.",
    )
    smime_bad = p.smime_days_left is not None and p.smime_days_left < EXPIRY_WARNING_DAYS
    figure(
        "smime_days_left",
        "S/MIME signer certificate expires in",
        p.smime_days_left,
        p.smime_note,
        smime_bad,
        "issue a new signer certificate; store it as smime_certificate beside the key in Vault.",
    )
    age_bad = p.credential_age_days is not None and p.credential_age_days > CREDENTIAL_MAX_AGE_DAYS
    figure(
        "credential_age_days",
        "SMTP credential age",
        p.credential_age_days,
        p.credential_note,
        age_bad,
        f"rotate the SMTP password at the relay and write it to {p.credential_path} (bao kv put ...).",
    )
    return f"<h2>Connection {_e(p.conn_id)}</h2>{''.join(rows)}"


def render(report: Report) -> str:
    """The whole page: self-contained HTML (inline CSS and SVG), readable at 390 px."""
    facts = report.facts
    records, refusals, failures = facts.records, facts.refusals, facts.failures
    h = report.headline()
    share = protection_share(records)
    tls = tls_versions(records)
    old_tls = sum(n for version, n in tls.items() if version in OLD_TLS or version == "none")
    malware = malware_findings(records, refusals)
    spam = spam_findings(records, refusals)
    rules = refusals_by_rule(refusals)
    errors = errors_by_kind(failures)
    vault = vault_errors(failures)
    partial = partially_refused(records)
    days = per_day(records, facts.since, facts.until)

    def pct(n: int) -> str:
        return f"{100 * n / share['copies']:.0f}%" if share["copies"] else "-"

    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        "<title>Mail security report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>Mail security report</h1>",
        f'<p class="sub">{facts.since:%Y-%m-%d %H:%M} to {facts.until:%Y-%m-%d %H:%M} UTC · from archive metadata '
        f"only · generated {report.generated_at:%Y-%m-%d %H:%M} UTC</p>",
        '<div class="cards">',
        _card("messages", "messages", h["messages"]),
        _card("recipients", "recipients", h["recipients"]),
        _card("signed_share", f"signed ({share['signed']} of {share['copies']})", pct(share["signed"])),
        _card("encrypted_share", f"encrypted ({share['encrypted']})", pct(share["encrypted"])),
        _card("refusals", "refused by screens", h["refusals"], red=h["refusals"] > 0),
        _card("failed_attempts", "failed attempts", h["failed_attempts"], red=h["failed_attempts"] > 0),
        "</div><p></p>",
        "<section><h2>Messages per day</h2>",
        bars([(d[5:], n) for d, n, _ in days], title="messages per day"),
        "<h2>Recipients per day</h2>",
        bars([(d[5:], n) for d, _, n in days], title="recipients per day"),
        "</section>",
        "<section><h2>Recipients per domain</h2>",
        bars(per_domain(records), title="recipients per domain"),
        "</section>",
        "<section><h2>Protection and TLS</h2>",
        bars(
            [
                ("signed", share["signed"]),
                ("encrypted", share["encrypted"]),
                ("neither", sum(1 for m in records if m.protection == "none")),
            ],
            title="copies by protection",
        ),
        bars(list(tls.items()), title="copies by TLS version", red=old_tls > 0),
    ]
    if old_tls:
        out.append(
            f'<p class="red"><b data-figure="old_tls">{old_tls}</b> copies went out without TLS 1.2 or newer</p>'
        )
        out.append(_todo("set min_tls_version to TLSv1.2 (or TLSv1.3) on the connection, then run doctor."))
    out += ["</section>", "<section><h2>Refused by the screens</h2>"]
    out.append(bars(list(rules.items()), title="refusals by rule", red=bool(rules)))
    if rules:
        out.append(
            _todo(
                "list them with airflow-secure-mail incident trace --archive URL --since 7d; fix the DAG that sent it, "
                "or widen MailPolicy if the rule was wrong."
            )
        )
    out.append(
        f'<p>Copies partly refused by the relay: <b class="{"red" if partial else ""}" '
        f'data-figure="partially_refused">{partial}</b></p>'
    )
    if partial:
        out.append(_todo("read the refused addresses in those records' receipt and correct the recipient lists."))
    out += ["</section>", "<section><h2>Malware findings</h2>"]
    out.append(f'<p><b class="fig {"red" if malware else "ok"}" data-figure="malware">{len(malware)}</b></p>')
    if malware:
        out.append(_todo("find the task that attached it (listed), check its source data; nothing infected left."))
    out += [_findings(malware), "</section>", "<section><h2>Spam findings</h2>"]
    out.append(f'<p><b class="fig {"red" if spam else "ok"}" data-figure="spam">{len(spam)}</b></p>')
    if spam:
        out.append(_todo("rewrite the templates the rules name (shown) so reports do not land in spam folders."))
    out += [_findings(spam), "</section>", "<section><h2>Vault and relay errors</h2>"]
    out.append(
        f'<p>Failed attempts: <b class="{"red" if failures else ""}" data-figure="failed_attempts_total">'
        f'{len(failures)}</b>, of them Vault: <b class="{"red" if vault else ""}" data-figure="vault_errors">'
        f"{vault}</b></p>"
    )
    out.append(bars(list(errors.items()), title="failed attempts by error", red=bool(errors)))
    if vault:
        out.append(_todo("check that Vault is unsealed and reachable from every worker, and the token's policy."))
    if len(failures) > vault:
        out.append(_todo("run airflow-secure-mail doctor --conn-id ID for the relay; retries sent what they could."))
    out.append("</section>")
    for p in report.postures:
        out.append(f"<section>{_posture(p)}</section>")
    if not report.postures:
        out.append(
            '<section><h2>Certificates and credentials</h2><p class="none">not checked: give --smtp-conn-id '
            "to check the relay certificate, the S/MIME signer and the credential age.</p></section>"
        )
    out.append("</main></body></html>")
    return "\n".join(out)


__all__ = [
    "ArchiveFacts",
    "Finding",
    "Posture",
    "Report",
    "bars",
    "build",
    "collect",
    "errors_by_kind",
    "malware_findings",
    "partially_refused",
    "per_day",
    "per_domain",
    "posture",
    "protection_share",
    "refusals_by_rule",
    "spam_findings",
    "tls_versions",
    "vault_errors",
]
