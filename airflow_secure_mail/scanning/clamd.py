"""ClamdScanner: scan a message's plaintext parts with ClamAV's clamd (INSTREAM) before protection; fail closed.

A small asyncio client rather than a library: the maintained ones are synchronous (``clamdpy``,
``clamav-client``) and the asyncio one (``aioclamd``) speaks TCP only, without a timeout. The protocol is
a length-prefixed byte stream (``man clamd``), so the whole client is ``mail/clamd_wire.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from airflow_secure_mail.errors import ConfigurationError, MalwareFound, MalwareScanError, PolicyViolation
from airflow_secure_mail.scanning.clamd_wire import ScanUnavailable, exchange, one_line, parse_address
from airflow_secure_mail.scanning.containers import ArchiveUnchecked, check_archive

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
"""Debian's clamd ships ``StreamMaxLength 25M``; a larger part would only earn a size-limit reply."""
_EICAR_PARTS = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-TEST-FILE!$H+H*")


def eicar() -> bytes:
    """The EICAR anti-virus test file, assembled at run time so no file of ours is itself flagged."""
    return "".join(_EICAR_PARTS).encode("ascii")


class Verdict(StrEnum):
    CLEAN = "clean"
    FOUND = "found"
    UNSCANNED = "unscanned"


@dataclass(frozen=True)
class ScanReport:
    """The scan of one message, as the archive records it (``to_metadata``)."""

    verdict: Verdict
    scanner: str | None = None
    signature: str | None = None
    item: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        # item and reason may carry zip member names (attacker text): one line from here on, wherever built
        for name in ("item", "reason"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, one_line(value))

    def to_metadata(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "signature": self.signature,
            "scanner": self.scanner,
            "item": self.item,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ClamdScanner:
    """clamd over ``tcp://host:port`` or ``unix:///path``; ``on_error="allow"`` lets unscannable mail through.

    A finding always refuses the message, even one clamd sends before the end of the stream. An outage, a
    timeout, clamd's size-limit reply, ``Heuristics.Limits.Exceeded``, any other reply before the whole
    stream was sent, a part above ``max_bytes``, a zip or gzip member inflating past it, a corrupt zip,
    gzip or tar, or archives (zip, gzip, tar: each a level) nested deeper than ``max_archive_depth``
    refuse it too, unless ``on_error="allow"`` (then it is sent marked unscanned).
    """

    address: str = "unix:///run/clamav/clamd.ctl"
    timeout: float = 30.0
    max_bytes: int = DEFAULT_MAX_BYTES
    on_error: str = "reject"
    allow_encrypted_archives: bool = False
    max_archive_depth: int = 5
    _target: tuple[str, str | int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.on_error not in ("reject", "allow"):
            raise ConfigurationError("ClamdScanner.on_error must be 'reject' (default) or 'allow'.")
        if self.timeout <= 0 or self.max_bytes <= 0 or self.max_archive_depth < 1:
            raise ConfigurationError("ClamdScanner timeout, max_bytes and max_archive_depth must be positive.")
        object.__setattr__(self, "_target", parse_address(self.address))

    @classmethod
    def from_value(cls, value: Any) -> ClamdScanner | None:
        """From a policy field: a scanner, an address string, a dict of fields (connection JSON), or None."""
        if value is None or isinstance(value, ClamdScanner):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls) if f.init}
            unknown = set(value) - known
            if unknown:
                raise ConfigurationError(f"unknown ClamdScanner field(s) {sorted(unknown)}; known: {sorted(known)}.")
            return cls(**value)
        raise ConfigurationError(f"malware_scan={value!r}: give ClamdScanner(...) or an address like tcp://host:3310.")

    async def version(self) -> str:
        """clamd's VERSION reply: ``ClamAV 1.4.6/27065/<database date>`` (no date with local signatures only)."""
        return await exchange(self._target, self.address, self.timeout, b"VERSION")

    async def instream(self, data: bytes) -> str:
        """clamd's raw reply for ``data``: ``stream: OK``, ``stream: <name> FOUND`` or ``... ERROR``."""
        return await exchange(self._target, self.address, self.timeout, b"INSTREAM", data)

    async def ascan(self, parts: Sequence[tuple[str, bytes]]) -> ScanReport:
        """Scan every ``(name, bytes)`` part; raise on a finding or (unless allowed) an unscannable part."""
        problems: list[tuple[str, str]] = []  # could not be scanned: refused unless on_error="allow"
        accepted: list[tuple[str, str]] = []  # encrypted content let through by allow_encrypted_archives
        to_scan: list[tuple[str, bytes]] = []
        for name, data in parts:
            try:
                accepted.extend((name, f"encrypted member {m} not scanned") for m in self._precheck(name, data))
                to_scan.append((name, data))
            except ScanUnavailable as exc:
                problems.append((name, str(exc)))
        results = await asyncio.gather(
            self._guarded(self.version()), *(self._guarded(self.instream(data)) for _, data in to_scan)
        )
        version = results[0] if isinstance(results[0], str) else None
        for (name, _), reply in zip(to_scan, results[1:], strict=True):
            try:
                if isinstance(reply, ScanUnavailable):
                    raise reply
                allowed = self._judge(name, reply)
                if allowed is not None:
                    accepted.append((name, f"encrypted content ({allowed}) not scanned"))
            except ScanUnavailable as exc:
                problems.append((name, str(exc)))
        if problems and self.on_error != "allow":
            name, reason = (one_line(text) for text in problems[0])
            raise MalwareScanError(
                f"{name!r} could not be scanned ({reason}); nothing was sent. Fix the scanner or the part, "
                "or set ClamdScanner(on_error='allow') to send unscanned mail.",
                item=name,
                reason=reason,
            )
        if not (problems or accepted):
            return ScanReport(Verdict.CLEAN, scanner=version)
        name, reason = (problems or accepted)[0]
        report = ScanReport(Verdict.UNSCANNED, scanner=version, item=name, reason=reason)
        log.warning("sending unscanned: %s: %s", report.item, report.reason)
        return report

    def _precheck(self, name: str, data: bytes) -> list[str]:
        """Size and zip structure, before any byte goes to clamd; returns encrypted members allowed through."""
        if len(data) > self.max_bytes:
            raise ScanUnavailable(f"{len(data)} bytes, over the scanner's max_bytes={self.max_bytes}")
        try:
            return check_archive(
                name,
                data,
                max_depth=self.max_archive_depth,
                max_bytes=self.max_bytes,
                allow_encrypted=self.allow_encrypted_archives,
            )
        except ArchiveUnchecked as exc:
            raise ScanUnavailable(str(exc)) from None

    def _judge(self, name: str, reply: str) -> str | None:
        """None for ``OK``; raise for a finding or anything else; an allowed encrypted signature is returned."""
        if reply == "stream: OK":
            return None
        if reply.startswith("stream: ") and reply.endswith(" FOUND"):
            signature = reply[len("stream: ") : -len(" FOUND")]
            if signature.startswith("Heuristics.Limits.Exceeded"):
                raise ScanUnavailable(f"clamd stopped at a scan limit ({signature})")
            if signature.startswith("Heuristics.Encrypted"):
                if self.allow_encrypted_archives:
                    return signature
                raise PolicyViolation(
                    f"attachment {name!r} is encrypted ({signature}) and cannot be scanned: send it unencrypted.",
                    rule="encrypted_archive",
                    item=name,
                )
            raise MalwareFound(
                f"malware in {name!r}: clamd found {signature}; nothing was sent.", item=name, signature=signature
            )
        if "size limit exceeded" in reply:
            raise ScanUnavailable("clamd's StreamMaxLength is smaller than the part")
        raise ScanUnavailable(f"clamd replied {reply[:120]!r}")

    async def _guarded(self, call: Any) -> Any:
        try:
            return await call
        except ScanUnavailable as exc:
            return exc


def database_date(version: str) -> datetime | None:
    """The signature database's build time from a VERSION reply, if clamd loaded a dated (official) one."""
    pieces = version.split("/")
    if len(pieces) < 3:
        return None
    try:
        return datetime.strptime(pieces[2].strip(), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return None


def scanner_checks(policy_defaults: Mapping[str, Any] | str | None) -> list[tuple[str, str, str]]:
    """The doctor's rows for a connection's ``policy`` extra: scanner reachable, version, database age, EICAR."""
    import json

    from airflow_secure_mail._sync import run_sync

    try:
        policy = json.loads(policy_defaults) if isinstance(policy_defaults, str) else dict(policy_defaults or {})
        scanner = ClamdScanner.from_value(policy.get("malware_scan"))
    except (ConfigurationError, ValueError, TypeError) as exc:
        return [("FAIL", "malware scanner", str(exc))]
    if scanner is None:
        return [("WARN", "malware scanner", "none configured (policy.malware_scan): attachments are not scanned")]
    return list(run_sync(_probe(scanner)))


async def _probe(scanner: ClamdScanner) -> list[tuple[str, str, str]]:
    try:
        version = await scanner.version()
        reply = await scanner.instream(eicar())
    except ScanUnavailable as exc:
        return [("FAIL", "malware scanner", str(exc))]
    checks = [("PASS", "malware scanner", f"{scanner.address}: {version.split('/')[0]}")]
    built = database_date(version)
    if built is None:
        checks.append(("WARN", "signature database age", "undated (local signatures only, no official database)"))
    else:
        days = (datetime.now(UTC) - built).days
        checks.append(("WARN" if days > 7 else "PASS", "signature database age", f"{days} days ({built:%Y-%m-%d})"))
    if reply.endswith(" FOUND") and not reply.startswith("stream: Heuristics."):
        checks.append(("PASS", "EICAR test file", f"detected as {reply[len('stream: ') : -len(' FOUND')]}"))
    else:
        checks.append(("FAIL", "EICAR test file", f"not detected: clamd replied {reply[:80]!r}"))
    return checks


__all__ = [
    "ClamdScanner",
    "ScanReport",
    "Verdict",
    "database_date",
    "eicar",
    "scanner_checks",
]
