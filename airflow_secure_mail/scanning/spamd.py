"""SpamAssassinScanner: score a message as its recipients will see it (before PGP/S-MIME) with spamd; fail closed.

A copy at or above ``max_score`` is refused (``SpamRefused``) or, with ``on_spam="warn"``, sent with a warning.
spamd down, a timeout or a protocol error refuses (``SpamScanError``) unless ``on_error="allow"``. The wire
protocol is ``scanning/spamc_wire.py`` (one ``REPORT`` request: the score, spamd's threshold and the rules hit).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from airflow_secure_mail import _metrics
from airflow_secure_mail.errors import ConfigurationError, SpamRefused, SpamScanError
from airflow_secure_mail.scanning.spamc_wire import SpamdUnavailable, parse_address, report_rules, request

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10_000_000
"""MailPolicy's default max_message_bytes: every message the policy lets through is scored."""
TOP_RULES = 5
"""Rules kept in a verdict (highest points first): enough to say why, small enough for XCom."""
_GTUBE_PARTS = ("XJS*C4JDBQADN1.NSBN3*2IDNEN*", "GTUBE-STANDARD-ANTI-UBE-TEST-", "EMAIL*C.34X")


def gtube() -> str:
    """SpamAssassin's GTUBE test string (scores 1000), assembled at run time so no file of ours is flagged."""
    return "".join(_GTUBE_PARTS)


class SpamVerdict(StrEnum):
    HAM = "ham"
    """Scored below ``max_score``."""
    SPAM = "spam"
    """Scored at or above ``max_score`` and sent anyway (``on_spam="warn"``); a refused copy has no record."""
    UNSCORED = "unscored"
    """Not scored: spamd failed under ``on_error="allow"``, or a protected message from outside."""


@dataclass(frozen=True)
class SpamReport:
    """The spam score of one message, as the archive record (``to_metadata``) and XCom (``to_xcom``) keep it."""

    verdict: SpamVerdict
    score: float | None = None
    threshold: float | None = None
    rules: tuple[tuple[str, float], ...] = ()
    reason: str | None = None

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.rules)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "score": self.score,
            "threshold": self.threshold,
            "rules": [{"name": name, "score": points} for name, points in self.rules],
            "reason": self.reason,
        }

    def to_xcom(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "score": self.score,
            "threshold": self.threshold,
            "rules": list(self.rule_names),
        }


@dataclass(frozen=True)
class SpamAssassinScanner:
    """spamd over ``tcp://host:port`` or ``unix:///path``; refuses (or warns about) mail scoring ``max_score``+.

    ``on_spam``: ``refuse`` (default) raises ``SpamRefused``; ``warn`` logs and sends. ``on_error``:
    ``reject`` (default) refuses mail that could not be scored; ``allow`` sends it marked unscored. A
    message over ``max_bytes`` is not sent to spamd and counts as an error.
    """

    address: str = "tcp://127.0.0.1:783"
    max_score: float = 5.0
    on_spam: str = "refuse"
    timeout: float = 30.0
    on_error: str = "reject"
    max_bytes: int = DEFAULT_MAX_BYTES
    _target: tuple[str, str | int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.on_spam not in ("refuse", "warn"):
            raise ConfigurationError("SpamAssassinScanner.on_spam must be 'refuse' (default) or 'warn'.")
        if self.on_error not in ("reject", "allow"):
            raise ConfigurationError("SpamAssassinScanner.on_error must be 'reject' (default) or 'allow'.")
        if isinstance(self.max_score, bool) or not isinstance(self.max_score, int | float):
            raise ConfigurationError(f"SpamAssassinScanner.max_score={self.max_score!r}: give a number like 5.0.")
        if not self.timeout > 0 or self.max_bytes <= 0:
            raise ConfigurationError("SpamAssassinScanner timeout and max_bytes must be positive.")
        object.__setattr__(self, "max_score", float(self.max_score))
        object.__setattr__(self, "_target", parse_address(self.address))

    @classmethod
    def from_value(cls, value: Any) -> SpamAssassinScanner | None:
        """From a policy field: a scanner, an address string, a dict of fields (connection JSON), or None."""
        if value is None or isinstance(value, SpamAssassinScanner):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls) if f.init}
            unknown = set(value) - known
            if unknown:
                raise ConfigurationError(
                    f"unknown SpamAssassinScanner field(s) {sorted(unknown)}; known: {sorted(known)}."
                )
            return cls(**value)
        raise ConfigurationError(
            f"spam_scan={value!r}: give SpamAssassinScanner(...) or an address like tcp://127.0.0.1:783."
        )

    async def ping(self) -> str:
        """spamd's PING reply text (``PONG``); raises SpamdUnavailable."""
        reply = await request(self._target, self.address, self.timeout, "PING")
        return reply.text

    async def report(
        self, data: bytes, *, timeout: float | None = None
    ) -> tuple[float, float, list[tuple[str, float]]]:
        """spamd's ``(score, required, rules)`` for ``data``; raises SpamdUnavailable."""
        if len(data) > self.max_bytes:
            raise SpamdUnavailable(f"the message is {len(data)} bytes, over the scanner's max_bytes={self.max_bytes}")
        wait = self.timeout if timeout is None else min(self.timeout, timeout)
        reply = await request(self._target, self.address, wait, "REPORT", data)
        score, required = reply.spam_header(self.address)
        return score, required, report_rules(reply.body)

    async def ascore(self, data: bytes, *, timeout: float | None = None) -> SpamReport:
        """Score ``data`` (a whole message); raise SpamRefused or SpamScanError, else the verdict to record.

        ``timeout`` shortens the scanner's own (what is left of the send's deadline).
        """
        try:
            score, _, hits = await self.report(data, timeout=timeout)
        except SpamdUnavailable as exc:
            reason = str(exc)
            _metrics.incr("spam_scanned", verdict="error")
            if self.on_error != "allow":
                raise SpamScanError(
                    f"the message could not be scored for spam ({reason}); nothing was sent. Fix spamd, "
                    "or set SpamAssassinScanner(on_error='allow') to send unscored mail.",
                    reason=reason,
                ) from None
            log.warning("sending without a spam score: %s", reason)
            return SpamReport(SpamVerdict.UNSCORED, threshold=self.max_score, reason=reason)
        score += 0.0  # spamd says -0.0 for a message no rule scored
        rules = tuple(sorted((r for r in hits if r[1] > 0), key=lambda r: (-r[1], r[0]))[:TOP_RULES])
        if score < self.max_score:
            _metrics.incr("spam_scanned", verdict=SpamVerdict.HAM.value)
            return SpamReport(SpamVerdict.HAM, score, self.max_score, rules)
        named = ", ".join(f"{name} {points:g}" for name, points in rules) or "none reported"
        if self.on_spam == "warn":
            _metrics.incr("spam_scanned", verdict=SpamVerdict.SPAM.value)
            log.warning(
                "spam score %.1f >= %.1f (rules: %s): sending anyway (on_spam='warn')", score, self.max_score, named
            )
            return SpamReport(SpamVerdict.SPAM, score, self.max_score, rules)
        _metrics.incr("spam_scanned", verdict="refused")
        raise SpamRefused(
            f"spam score {score:.1f} >= {self.max_score:.1f} (rules: {named}): the message would land in spam "
            "folders; nothing was sent. Change the template (the rules say what looks like spam) or raise "
            "SpamAssassinScanner(max_score=...).",
            score=score,
            threshold=self.max_score,
            rules=tuple(name for name, _ in rules),
        )


def unscored(reason: str) -> SpamReport:
    """The verdict for a copy that is not scored on purpose (a protected message from outside)."""
    return SpamReport(SpamVerdict.UNSCORED, reason=reason)


def spam_checks(policy_defaults: Mapping[str, Any] | str | None) -> list[tuple[str, str, str]]:
    """The doctor's rows for a connection's ``policy`` extra: spamd reachable, GTUBE scored as spam."""
    import json

    from airflow_secure_mail._sync import run_sync

    try:
        policy = json.loads(policy_defaults) if isinstance(policy_defaults, str) else dict(policy_defaults or {})
        scanner = SpamAssassinScanner.from_value(policy.get("spam_scan"))
    except (ConfigurationError, ValueError, TypeError) as exc:
        return [("FAIL", "spam scanner", str(exc))]
    if scanner is None:
        return [("WARN", "spam scanner", "none configured (policy.spam_scan): mail is not scored before sending")]
    return list(run_sync(_probe(scanner)))


def _sample(body: str) -> bytes:
    return (
        "From: doctor@example.com\r\nTo: doctor@example.com\r\nSubject: airflow-secure-mail doctor\r\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <doctor@example.com>\r\n\r\n{body}\r\n"
    ).encode("ascii")


async def _probe(scanner: SpamAssassinScanner) -> list[tuple[str, str, str]]:
    try:
        pong = await scanner.ping()
        score, required, _ = await scanner.report(_sample(gtube()))
    except SpamdUnavailable as exc:
        return [("FAIL", "spam scanner", str(exc))]
    checks = [("PASS", "spam scanner", f"{scanner.address}: {pong}, spamd's own threshold {required:.1f}")]
    if score >= scanner.max_score:
        checks.append(("PASS", "GTUBE test message", f"scored {score:.1f} >= max_score {scanner.max_score:.1f}"))
    else:
        checks.append(("FAIL", "GTUBE test message", f"scored {score:.1f} < max_score {scanner.max_score:.1f}"))
    return checks


__all__ = [
    "SpamAssassinScanner",
    "SpamReport",
    "SpamVerdict",
    "gtube",
    "spam_checks",
    "unscored",
]
