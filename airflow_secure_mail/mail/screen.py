"""Screen: MailPolicy rules checked on a composed message before any connection is opened."""

from __future__ import annotations

import io
import logging
import mimetypes
import re
import zipfile
from dataclasses import dataclass, fields
from email.message import EmailMessage
from typing import Any, Protocol

from airflow_secure_mail.errors import ConfigurationError, PolicyViolation
from airflow_secure_mail.mail._filetypes import COMPRESSED
from airflow_secure_mail.mail.addresses import check_decoded, check_no_control, normalize_domain
from airflow_secure_mail.mail.compose import Attachment
from airflow_secure_mail.mail.html_screen import check_html_mode
from airflow_secure_mail.scanning.clamd import ClamdScanner
from airflow_secure_mail.scanning.spamd import SpamAssassinScanner

log = logging.getLogger(__name__)

DEFAULT_ALLOWED_TYPES: tuple[str, ...] = (
    "application/pdf",
    "text/csv",
    "text/plain",
    "text/tab-separated-values",
    "application/json",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/zip",
    "application/gzip",
    "application/pgp-keys",
)
_TEXT_TYPES = {
    "text/csv",
    "text/plain",
    "text/tab-separated-values",
    "application/json",
    "application/pgp-keys",
}
_OOXML = {
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xl/",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "word/",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "ppt/",
}
_GZIP = "application/gzip"
_TYPE_ALIASES = {"application/x-gzip": _GZIP}
"""Legacy names of one format (RFC 6713 registered application/gzip): declared, sniffed or allowed alike."""
_GZIPPED_TAR_TYPES = {"application/x-tar", "application/x-gtar", "application/x-compressed-tar", "application/x-tgz"}
"""What a ``.tgz`` / ``.tar.gz`` may be declared as: a tarball, gzip on the wire (as Python's mimetypes says)."""
_ODF_MIMETYPE_MAX = 256
_SCRIPT_START = re.compile(rb"^\s*(#!|<\?php|<script|@echo off|MZ)", re.IGNORECASE)


@dataclass(frozen=True)
class MailPolicy:
    """What a message may be. Checked before connecting; a breach raises PolicyViolation."""

    max_message_bytes: int = 10_000_000
    max_attachment_bytes: int | None = None
    allowed_attachment_types: tuple[str, ...] = DEFAULT_ALLOWED_TYPES
    allowed_recipient_domains: tuple[str, ...] | None = None
    max_recipients: int = 100
    allow_special_use_domains: bool = False
    """Addresses under .local, .internal, .test and other special-use names (internal relays)."""
    malware_scan: ClamdScanner | None = None
    """Scan every part with clamd before protection (the pipeline's async step); see mail/scan.py."""
    html: str = "refuse_active"
    """``refuse_active`` or ``strip`` scripts, forms, handlers, ``javascript:``; deceptive links are refused."""
    spam_scan: SpamAssassinScanner | None = None
    """Score every outgoing copy with spamd before protection (the pipeline's async step); None = no spam score."""
    record_refused_recipients: bool = False
    """A refusal record in the archive names the recipients' domains only; True keeps their addresses too."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "malware_scan", ClamdScanner.from_value(self.malware_scan))
        object.__setattr__(self, "spam_scan", SpamAssassinScanner.from_value(self.spam_scan))
        check_html_mode(self.html)
        if self.max_message_bytes <= 0:
            raise ConfigurationError("MailPolicy.max_message_bytes must be positive.")
        if self.max_recipients <= 0:
            raise ConfigurationError("MailPolicy.max_recipients must be positive.")
        allowed = dict.fromkeys(_canonical(t) for t in self.allowed_attachment_types)
        object.__setattr__(self, "allowed_attachment_types", tuple(allowed))
        if self.allowed_recipient_domains is not None:
            if isinstance(self.allowed_recipient_domains, str):
                raise ConfigurationError("MailPolicy.allowed_recipient_domains must be a list of domains.")
            object.__setattr__(
                self,
                "allowed_recipient_domains",
                tuple(normalize_domain(d) for d in self.allowed_recipient_domains),
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MailPolicy:
        """From the connection's ``policy`` extra; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigurationError(f"unknown MailPolicy field(s) {sorted(unknown)}; known: {sorted(known)}.")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def sniff(att: Attachment) -> str:
    """The attachment's type judged by its bytes (libmagic when installed, else ``filetype``)."""
    data = att.content
    kind = _magic(data)
    if kind in ("application/zip", "application/x-zip-compressed") or data[:4] == b"PK\x03\x04":
        return _zip_kind(data)
    if kind:
        return _canonical(kind)
    if _is_text(data):
        declared = att.declared_type
        if declared == "text/html" and _HTML_START.match(data[:1024]):
            return "text/html"
        return declared if declared in _TEXT_TYPES else "text/plain"
    return "application/octet-stream"


def _magic(data: bytes) -> str | None:
    """A binary format's type (libmagic, else filetype); None leaves text to the caller's judgement."""
    try:
        import magic

        kind = str(magic.from_buffer(data[:8192], mime=True))
        if kind not in ("application/octet-stream", "inode/x-empty") and not kind.startswith("text/"):
            return kind
    except Exception:  # python-magic or libmagic missing: fall back to filetype
        log.debug("libmagic unavailable; sniffing with filetype")
    import filetype

    guess = filetype.guess(data[:8192])
    return guess.mime if guess else None


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    try:  # in slices: a large attachment is not copied into one big str
        for start in range(0, len(data), 1 << 20):
            decoder.decode(data[start : start + (1 << 20)])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return not _SCRIPT_START.match(data[:64])


def _zip_kind(data: bytes) -> str:
    """Zip containers by their members: macros anywhere, OOXML parts, the ODF ``mimetype`` entry.

    A zip that cannot be read, or whose ``mimetype`` entry is damaged or lies about its size, is
    ``application/octet-stream``: never a raw zipfile error, never a guess.
    """
    from airflow_secure_mail.scanning.containers import ZIP_ERRORS, ArchiveUnchecked

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if any(n.lower().endswith("vbaproject.bin") for n in names):
                return "application/vnd.ms-office.macroenabled"
            if "[Content_Types].xml" in names:
                for kind, prefix in _OOXML.items():
                    if any(n.startswith(prefix) for n in names):
                        return kind
            if "mimetype" in names:
                return _odf_mimetype(data, zf.getinfo("mimetype"))
    except (*ZIP_ERRORS, ArchiveUnchecked):
        return "application/octet-stream"
    return "application/zip"


def _odf_mimetype(data: bytes, info: zipfile.ZipInfo) -> str:
    """An ODF file's declared type: its small, unencrypted ``mimetype`` entry, read within a byte budget."""
    from airflow_secure_mail.scanning.containers import inflate_member

    if info.file_size > _ODF_MIMETYPE_MAX or info.flag_bits & 0x1:
        return "application/zip"  # not an ODF mimetype entry (the format keeps it short and in the clear)
    _, raw = inflate_member("mimetype", data, info, _ODF_MIMETYPE_MAX)
    return (raw or b"").decode("ascii", "replace").strip() or "application/zip"


def _canonical(kind: str) -> str:
    """One name per format: ``application/x-gzip`` is ``application/gzip``."""
    kind = kind.lower()
    return _TYPE_ALIASES.get(kind, kind)


def _implied_type(filename: str) -> str | None:
    """The type a file name says its bytes are: ``.csv.gz`` is gzip, ``.tar.bz2`` bzip2, ``.csv.xz`` xz.

    mimetypes reports ``report.csv.gz`` as text/csv with encoding gzip: the bytes are the gzip, not the csv.
    The table is compose's (``_filetypes.COMPRESSED``), so the name's type is the type it goes out as.
    """
    guessed, encoding = mimetypes.guess_type(filename)
    return COMPRESSED.get(encoding or "", guessed)


def _extension_agrees(filename: str, sniffed: str) -> bool:
    """The type the file name's extension implies is what the bytes are (an unknown extension never agrees)."""
    implied = _implied_type(filename)
    return implied is not None and _types_agree(implied, sniffed)


def _declared_agrees(filename: str, wire: str, sniffed: str) -> bool:
    """The type on the wire names the bytes; a gzipped tarball may also go as a tar type under a tarball's name."""
    if sniffed == _GZIP and wire in _GZIPPED_TAR_TYPES:
        return mimetypes.guess_type(filename) == ("application/x-tar", "gzip")
    return _types_agree(wire, sniffed)


class HasRecipients(Protocol):
    """What screen needs of an envelope: the exact addresses the message goes to (compose's ``Envelope``)."""

    @property
    def recipients(self) -> tuple[str, ...]: ...


def screen(
    message: EmailMessage,
    envelope: HasRecipients,
    policy: MailPolicy,
    attachments: tuple[Attachment, ...] = (),
    *,
    encoded_size: int | None = None,
) -> None:
    """Raise PolicyViolation naming the rule and the item on the first breach; nothing is sent.

    Headers are judged as emitted (every part, decoded as a reader decodes them); recipients are the
    envelope's, already validated by compose; attachments are judged by their bytes.
    """
    wire_types = _check_emitted_headers(message)
    screen_recipients(envelope.recipients, policy)
    for att in attachments:
        _check_attachment(att, wire_types.get(att.filename, att.declared_type), policy)
    if encoded_size is None:
        from email import policy as email_policy

        encoded_size = len(message.as_bytes(policy=email_policy.SMTP))
    check_size(encoded_size, policy)


def screen_recipients(recipients: tuple[str, ...], policy: MailPolicy) -> None:
    """``max_recipients`` and ``allowed_recipient_domains`` against the exact envelope recipients."""
    if len(recipients) > policy.max_recipients:
        raise PolicyViolation(
            f"{len(recipients)} recipients exceed max_recipients={policy.max_recipients}: "
            "split the mail or raise the limit.",
            rule="max_recipients",
        )
    if policy.allowed_recipient_domains is None:
        return
    allowed = set(policy.allowed_recipient_domains)
    for rcpt in recipients:
        domain = normalize_domain(rcpt.rpartition("@")[2])
        if domain not in allowed:
            raise PolicyViolation(
                f"recipient {rcpt} is outside allowed_recipient_domains; add {domain} or remove it.",
                rule="allowed_recipient_domains",
                item=rcpt,
            )


def _check_attachment(att: Attachment, wire: str, policy: MailPolicy) -> None:
    """Size, then the type on the wire and the type by content: both allowed, agreeing, and named truthfully."""
    if policy.max_attachment_bytes is not None and len(att.content) > policy.max_attachment_bytes:
        raise PolicyViolation(
            f"attachment {att.filename!r} is {len(att.content)} bytes, over max_attachment_bytes="
            f"{policy.max_attachment_bytes}.",
            rule="max_attachment_bytes",
            item=att.filename,
        )
    if _canonical(wire) not in policy.allowed_attachment_types:
        raise PolicyViolation(
            f"attachment {att.filename!r} would be sent as {wire}, which allowed_attachment_types does not allow"
            + (_HTML_HINT if wire == "text/html" else "."),
            rule="allowed_attachment_types",
            item=att.filename,
        )
    kind = sniff(att)
    _check_content_type(att, wire, kind, policy)
    if kind == "text/html":
        _screen_html_attachment(att)


def _check_content_type(att: Attachment, wire: str, kind: str, policy: MailPolicy) -> None:
    """The sniffed ``kind`` agrees with a declared type, is allowed, and matches the file name's extension."""
    if att.content_type and not _declared_agrees(att.filename, wire, kind):  # else the extension rule judges
        raise PolicyViolation(
            f"attachment {att.filename!r} is declared {wire} but its content is {kind}: declare {kind} "
            "or leave content_type unset.",
            rule="declared_type_mismatch",
            item=att.filename,
        )
    if kind not in policy.allowed_attachment_types:
        raise PolicyViolation(
            f"attachment {att.filename!r} is {kind} by content, which allowed_attachment_types does not allow.",
            rule="allowed_attachment_types",
            item=att.filename,
        )
    if not _extension_agrees(att.filename, kind):
        raise PolicyViolation(
            f"attachment {att.filename!r} holds {kind} but its name says otherwise: rename it to match.",
            rule="extension_mismatch",
            item=att.filename,
        )
    if not _declared_agrees(att.filename, wire, kind):  # a type taken from the name, e.g. text/csv for .csv.gz
        raise PolicyViolation(
            f"attachment {att.filename!r} would be sent as {wire} but its content is {kind}: "
            f"set content_type={kind!r}.",
            rule="declared_type_mismatch",
            item=att.filename,
        )


_HTML_START = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|table|div|p|h[1-6])[\s>]",
    re.IGNORECASE | re.DOTALL,
)
_HTML_HINT = (
    ": HTML attachments are a common phishing vector, so they are off by default; add 'text/html' to "
    "allowed_attachment_types to send them (their content is then screened like an HTML body)."
)


def _screen_html_attachment(att: Attachment) -> None:
    """An allowed HTML attachment obeys the HTML body rules; it is never rewritten, so active content refuses."""
    from airflow_secure_mail.mail.html_screen import screen_html

    try:
        screen_html(att.content.decode("utf-8"), "refuse_active")
    except PolicyViolation as exc:
        raise PolicyViolation(
            f"attachment {att.filename!r}: {exc}", rule=exc.rule, item=f"{att.filename}: {exc.item}"
        ) from None


def _check_emitted_headers(message: EmailMessage) -> dict[str, str]:
    """Every header and MIME parameter of every part, as a reader decodes it; returns attachment wire types.

    This is the one decoded check (RFC 2047 words, RFC 2231 values): compose only refuses control characters
    in the raw values it hands the email package. An attachment's file name and parameters come first, so
    the error names them as the caller wrote them (``attachment file name``, ``content_type``).
    """
    wire_types: dict[str, str] = {}
    for index, part in enumerate(message.walk()):
        attachment = part.get_content_disposition() == "attachment"
        where = "attachment header" if attachment else "header" if index == 0 else f"MIME part {index} header"
        filename = part.get_filename()
        if attachment and filename is not None:
            check_decoded(filename, "attachment file name")
            wire_types[filename] = part.get_content_type()
        for header, label in (("Content-Type", "content_type"), ("Content-Disposition", "content_disposition")):
            _check_params(part, f"attachment {label}" if attachment else f"{where} {header}", header)
        for name, value in part.items():
            check_no_control(name, f"{where} name")
            check_decoded(str(value), f"{where} {name}")
    return wire_types


def _check_params(part: EmailMessage, what: str, header: str) -> None:
    """The parameters of one header of one part, names and values, RFC 2231 values collapsed as a reader does."""
    from email.utils import collapse_rfc2231_value

    for key, raw in part.get_params(failobj=[], header=header)[1:]:
        check_decoded(key, f"{what} parameter")
        check_decoded(str(collapse_rfc2231_value(raw)), f"{what} parameter {key}")


def _types_agree(wire: str, sniffed: str) -> bool:
    """The type on the wire names what the bytes are (any of the plain-text family counts as text)."""
    wire = _canonical(wire)
    return wire == sniffed or (wire in _TEXT_TYPES and sniffed in _TEXT_TYPES)


def check_size(encoded_size: int, policy: MailPolicy) -> None:
    """The encoded (and, after protection, encrypted) size against ``max_message_bytes``."""
    if encoded_size > policy.max_message_bytes:
        raise PolicyViolation(
            f"message is {encoded_size} bytes encoded, over max_message_bytes={policy.max_message_bytes}.",
            rule="max_message_bytes",
        )
