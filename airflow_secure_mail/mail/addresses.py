"""Strict address handling: we parse what callers give us ourselves and validate with email-validator.

The standard library's ``parseaddr``/``getaddresses`` are not trusted for decisions (CVE-2023-27043
on Python < 3.11.10), so a mailbox is either a bare addr-spec or ``Display Name <addr-spec>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_secure_mail.errors import PolicyViolation

# C0 and C1 controls plus the Unicode line separators: str.splitlines() (and so the email package) breaks on them
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAME_ADDR = re.compile(r'^\s*(?:"([^"\\]*)"|([^"<>@,;:\\]*?))\s*<([^<>\s]+)>\s*$')


@dataclass(frozen=True)
class Mailbox:
    """A validated mailbox: ``addr`` is the normalized addr-spec used in the envelope."""

    addr: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2]


def check_no_control(value: str, what: str) -> None:
    """Refuse CR, LF and other control characters (header injection, SMTP smuggling)."""
    if _CONTROL.search(value):
        raise PolicyViolation(
            f"{what} contains a control character (CR/LF or similar): remove it.",
            rule="header_injection",
            item=what,
        )


def parse_mailbox(value: str, what: str = "address") -> Mailbox:
    """``a@b.example`` or ``Name <a@b.example>`` → Mailbox; anything else is a PolicyViolation."""
    from email_validator import EmailNotValidError, validate_email

    if not isinstance(value, str):
        raise PolicyViolation(f"{what} must be a string, got {type(value).__name__}.", rule="address", item=what)
    check_no_control(value, what)
    name = ""
    addr = value.strip()
    match = _NAME_ADDR.match(value)
    if match:
        name = (match.group(1) if match.group(1) is not None else match.group(2) or "").strip()
        addr = match.group(3)
    elif any(c in addr for c in '<>",;()\\ '):
        raise PolicyViolation(
            f"{what} {value!r} is not a single address: use 'user@domain' or 'Name <user@domain>'.",
            rule="address",
            item=value,
        )
    try:
        result = validate_email(addr, check_deliverability=False, allow_quoted_local=False, allow_domain_literal=False)
    except EmailNotValidError as exc:
        raise PolicyViolation(f"{what} {addr!r} is invalid: {exc}", rule="address", item=addr) from None
    local, _, _ = result.normalized.rpartition("@")
    domain = result.ascii_domain.lower()
    return Mailbox(addr=f"{local}@{domain}", name=name)


def parse_mailboxes(values: str | list[str] | tuple[str, ...] | None, what: str) -> list[Mailbox]:
    """A comma-free list of mailboxes; a single string may hold several separated by commas or semicolons
    only when every piece is a bare address (names with commas must come as list items)."""
    if values is None:
        return []
    if isinstance(values, str):
        pieces = [p for p in re.split(r"[,;]", values) if p.strip()] if "<" not in values else [values]
    else:
        pieces = list(values)
    return [parse_mailbox(p, what) for p in pieces]


def normalize_domain(domain: str) -> str:
    """Case-fold and IDNA-encode a domain so allow-list checks compare like with like."""
    import idna

    domain = domain.strip().rstrip(".").lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise PolicyViolation(f"domain {domain!r} is not a valid IDNA name.", rule="domain", item=domain) from None
