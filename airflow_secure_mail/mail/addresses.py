"""Strict address handling: we parse what callers give us ourselves and validate with email-validator.

The standard library's ``parseaddr``/``getaddresses`` are not trusted for decisions (CVE-2023-27043
on Python < 3.11.10), so a mailbox is either a bare addr-spec or ``Display Name <addr-spec>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_secure_mail.errors import PolicyViolation

SPECIAL_USE_SUFFIXES = ("alt", "arpa", "internal", "invalid", "local", "localhost", "onion", "test")
"""Special-use and private-use names (RFC 6761, 6762, 7686, 9476; ICANN's .internal): no public mailbox lives there."""
_NEUTRAL_TLD = "example"
_RFC2231 = re.compile(r"^[A-Za-z0-9_.:-]*'[A-Za-z0-9-]*'(.*)$", re.DOTALL)

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


def check_decoded(value: str, what: str) -> None:
    """Refuse control characters in a header or MIME parameter value as a mail reader will decode it.

    RFC 2047 encoded words (``=?utf-8?q?=0D=0A?=``) and RFC 2231 ``charset'lang'%0D%0A`` values turn into
    CR/LF after our checks of the raw text, and the email package then writes them out as new lines.
    """
    from email.header import decode_header
    from urllib.parse import unquote

    check_no_control(value, what)
    if "=?" in value:
        try:
            words = decode_header(value)
        except Exception:  # a malformed encoded word: the reader will show it raw, which we already checked
            words = []
        check_no_control("".join(_decoded_word(w, c) for w, c in words), what)
    rfc2231 = _RFC2231.match(value)
    if rfc2231 or "%" in value:
        check_no_control(unquote(rfc2231.group(1) if rfc2231 else value, errors="replace"), what)


def _decoded_word(word: bytes | str, charset: str | None) -> str:
    """One ``decode_header`` piece as text; an unknown charset reads as latin-1, so every control byte stays one."""
    if isinstance(word, str):
        return word
    try:
        return word.decode(charset or "latin-1", "replace")
    except LookupError:
        return word.decode("latin-1")


def special_use_suffix(domain: str) -> str | None:
    """The special-use name ``domain`` falls under (``local`` for ``mail.corp.local``), or None."""
    name = domain.strip().rstrip(".").lower()
    return next((s for s in SPECIAL_USE_SUFFIXES if name == s or name.endswith("." + s)), None)


def parse_mailbox(value: str, what: str = "address", *, allow_special_use_domains: bool = False) -> Mailbox:
    """``a@b.example`` or ``Name <a@b.example>`` → Mailbox; anything else is a PolicyViolation.

    Addresses under special-use names (``.local``, ``.internal``, ``.test`` …) are refused unless
    ``allow_special_use_domains`` (``MailPolicy(allow_special_use_domains=True)``, for internal relays).
    """
    if not isinstance(value, str):
        raise PolicyViolation(f"{what} must be a string, got {type(value).__name__}.", rule="address", item=what)
    name, addr = _split_mailbox(value, what)
    local, _, domain = addr.rpartition("@")
    if "=?" in local:
        raise PolicyViolation(
            f"{what} {addr!r} holds an RFC 2047 encoded word ('=?'), which some mail programs decode into "
            "another address: write the address plainly.",
            rule="address",
            item=addr,
        )
    _check_ascii_local(local, addr, what)
    special = special_use_suffix(domain)
    if special and not allow_special_use_domains:
        raise PolicyViolation(
            f"{what} {addr!r} is in the special-use domain .{special}, refused by default: set "
            "MailPolicy(allow_special_use_domains=True) to mail an internal relay.",
            rule="special_use_domain",
            item=addr,
        )
    return Mailbox(addr=_validated(addr, special, what), name=name)


def _check_ascii_local(local: str, addr: str, what: str) -> None:
    """Refuse a non-ASCII local part (``jörg@``): we do not speak SMTPUTF8 (RFC 6531).

    Decision: refuse up front rather than negotiate SMTPUTF8. Supporting it would need the extension checked
    per server, UTF-8 headers instead of encoded words, and a per-copy fallback; refusing here, for every path
    (compose and messages built elsewhere), means no copy of a batch goes out before the error. Non-ASCII
    *domains* are fine: they go on the wire IDNA-encoded.
    """
    if not local.isascii():
        raise PolicyViolation(
            f"{what} {addr!r} has a non-ASCII local part: SMTPUTF8 is not supported; use an ASCII address.",
            rule="address",
            item=addr,
        )


def _split_mailbox(value: str, what: str) -> tuple[str, str]:
    """The display name (checked as a reader decodes it) and the addr-spec of one mailbox."""
    check_no_control(value, what)
    match = _NAME_ADDR.match(value)
    if match is None:
        addr = value.strip()
        if any(c in addr for c in '<>",;()\\ '):
            raise PolicyViolation(
                f"{what} {value!r} is not a single address: use 'user@domain' or 'Name <user@domain>'.",
                rule="address",
                item=value,
            )
        return "", addr
    name = (match.group(1) if match.group(1) is not None else match.group(2) or "").strip()
    check_decoded(name, f"{what} display name")
    return name, match.group(3)


def _validated(addr: str, special: str | None, what: str) -> str:
    """The normalized addr-spec (email-validator, no DNS); a special-use domain is validated under a neutral TLD.

    email-validator refuses special-use names outright, so the checked name swaps the suffix for ``example``.
    """
    from email_validator import EmailNotValidError, validate_email

    local, _, domain = addr.rpartition("@")
    probe = f"{local}@{domain.rstrip('.')[: -len(special)]}{_NEUTRAL_TLD}" if special else addr
    try:
        result = validate_email(probe, check_deliverability=False, allow_quoted_local=False, allow_domain_literal=False)
    except EmailNotValidError as exc:
        raise PolicyViolation(f"{what} {addr!r} is invalid: {exc}", rule="address", item=addr) from None
    normalized_local = result.normalized.rpartition("@")[0]
    normalized_domain = result.ascii_domain.lower()
    if special:
        normalized_domain = normalized_domain[: -len(_NEUTRAL_TLD)] + special
    return f"{normalized_local}@{normalized_domain}"


def parse_mailboxes(
    values: str | list[str] | tuple[str, ...] | None, what: str, *, allow_special_use_domains: bool = False
) -> list[Mailbox]:
    """A comma-free list of mailboxes; a single string may hold several separated by commas or semicolons
    only when every piece is a bare address (names with commas must come as list items)."""
    if values is None:
        return []
    if isinstance(values, str):
        pieces = [p for p in re.split(r"[,;]", values) if p.strip()] if "<" not in values else [values]
    else:
        pieces = list(values)
    return [parse_mailbox(p, what, allow_special_use_domains=allow_special_use_domains) for p in pieces]


def normalize_domain(domain: str) -> str:
    """Case-fold and IDNA-encode a domain so allow-list checks compare like with like."""
    import idna

    domain = domain.strip().rstrip(".").lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise PolicyViolation(f"domain {domain!r} is not a valid IDNA name.", rule="domain", item=domain) from None
