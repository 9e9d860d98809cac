"""Was this mail ours? A saved message judged against the archive: same Message-ID, byte-identical content.

The archive is keyed by (Message-ID, envelope), so the copies are found by scanning record metadata (never
bodies) of the day folders around the file's ``Date:``. A mail saved from a mailbox carries the header
fields the relays prepended (Received, DKIM-Signature, ...) and may have LF line endings: after normalising
to CRLF, the archived bytes must be exactly a suffix of the file, and what comes before them only complete
header fields that are not the message's own (a prepended second Subject or From is a forgery). The header
block is split by a strict field-name pattern, never by Python's email parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from airflow_secure_mail.archive.reader import ArchiveReader, committed_at
from airflow_secure_mail.archive.record import ArchiveRecord
from airflow_secure_mail.errors import ArchiveIntegrityError

_FIELD = re.compile(rb"^([!-9;-~]+):")
"""A header field's first line: its name (printable US-ASCII but colon, RFC 5322 §3.6.8) and a colon."""
OWN_FIELDS = frozenset(
    {"from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to", "sender", "mime-version"}
)
"""The message's own fields (and every ``Content-*``): one of these before the archived copy is a forgery."""
SPAN = timedelta(days=2)


@dataclass(frozen=True)
class Verdict:
    """The answer: ``ours`` with the matching record, or not with the one-line reason."""

    ours: bool
    reason: str
    record: ArchiveRecord | None = None
    relay_fields: tuple[str, ...] = ()
    """Names of the header fields the relays prepended (accepted)."""
    notes: tuple[str, ...] = field(default=())


def crlf(data: bytes) -> bytes:
    """``data`` with every line ending CRLF (a mailbox saves LF)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def header_fields(data: bytes) -> tuple[list[tuple[str, bytes]], bytes] | None:
    """(name, whole field with CRLF) of the header block, and the body; None when the block is not fields."""
    end = data.find(b"\r\n\r\n")
    head, body = (data, b"") if end < 0 else (data[: end + 2], data[end + 4 :])
    fields = _split_fields(head)
    return None if fields is None else (fields, body)


def _split_fields(block: bytes) -> list[tuple[str, bytes]] | None:
    """``block`` (lines ending CRLF) as complete header fields, or None when a line is neither field nor fold."""
    if block and not block.endswith(b"\r\n"):
        return None
    fields: list[tuple[str, bytes]] = []
    for line in block.split(b"\r\n")[:-1] if block else []:
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + b"\r\n")
            continue
        match = _FIELD.match(line)
        if match is None:
            return None
        fields.append((match.group(1).decode("ascii").lower(), line + b"\r\n"))
    return fields


def _value(raw: bytes) -> str:
    return " ".join(raw.split(b":", 1)[1].decode("utf-8", "replace").split())


def message_ids(data: bytes) -> list[str]:
    """Every Message-ID in the header block, as written (``<...>``)."""
    parsed = header_fields(crlf(data))
    found = [_value(raw) for name, raw in (parsed[0] if parsed else []) if name == "message-id"]
    return [v for v in dict.fromkeys(found) if v]


def date_of(data: bytes) -> datetime | None:
    """The message's ``Date:`` (the last one: relays prepend, the message's own comes after), aware."""
    parsed = header_fields(crlf(data))
    dates = [_value(raw) for name, raw in (parsed[0] if parsed else []) if name == "date"]
    if not dates:
        return None
    try:
        when = parsedate_to_datetime(dates[-1])
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def own(name: str) -> bool:
    return name in OWN_FIELDS or name.startswith("content-")


def compare(saved: bytes, archived: bytes) -> tuple[bool, str, tuple[str, ...]]:
    """(same?, the reason, the relay fields accepted): ``saved`` (CRLF) against the archived bytes."""
    if saved == archived:
        return True, "byte-identical to the archived copy", ()
    if saved.endswith(archived) and archived:
        prefix = _split_fields(saved[: len(saved) - len(archived)])
        if prefix is None:
            return False, "text that is not a header field precedes the archived copy", ()
        forged = [raw.split(b":", 1)[0].decode("ascii") for name, raw in prefix if own(name)]
        if forged:
            return False, f"a second {', '.join(forged)} field is prepended to the archived copy: forged", ()
        names = tuple(dict.fromkeys(raw.split(b":", 1)[0].decode("ascii") for _, raw in prefix))
        return True, "the archived copy, byte-identical, after header fields the relays added", names
    return False, _where_it_differs(saved, archived), ()


def _where_it_differs(saved: bytes, archived: bytes) -> str:
    """One line: which header field was added, changed or removed, or that the body differs."""
    mine, theirs = header_fields(saved), header_fields(archived)
    if mine is None or theirs is None:
        return "content differs: the header block is not well formed"
    (new_fields, new_body), (old_fields, old_body) = mine, theirs
    old = {name: raw for name, raw in old_fields}
    # relay fields come first in a saved copy: judge the fields from the first of the archived copy's own
    first = next((i for i, (name, _) in enumerate(new_fields) if name == old_fields[0][0]), 0) if old_fields else 0
    new_own = new_fields[first:]
    new = {name: raw for name, raw in new_own}
    display = {name: raw.split(b":", 1)[0].decode("ascii") for name, raw in [*old_fields, *new_own]}
    changes = [f"header {display[n]} changed" for n in old if n in new and new[n] != old[n]]
    changes += [f"header {display[n]} added" for n in new if n not in old]
    changes += [f"header {display[n]} removed" for n in old if n not in new]
    if new_body != old_body:
        changes.append(f"body differs (from byte {_first_difference(new_body, old_body)} of the body)")
    if not changes:
        changes.append("header fields reordered or repeated")
    return "content differs from the archived copy: " + "; ".join(changes)


def _first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def find_copies(archive: ArchiveReader, ids: Iterable[str], start: datetime, end: datetime) -> list[ArchiveRecord]:
    """Committed records with one of ``ids`` as Message-ID in ``[start, end)``: metadata only, no body read."""
    wanted = set(ids)
    found = []
    for key, prefix in archive.record_refs(start, end):
        record = archive.record_at(key, prefix)
        if record.meta.message_id in wanted and start <= committed_at(record) < end:
            found.append(record)
    return found


def search_window(
    data: bytes, since: datetime | None, until: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The file's Date ±2 days, widened by ``since``/``until``; the whole archive up to now without a Date."""
    now = now or datetime.now(UTC)
    when = date_of(data)
    if when is None:
        return since or datetime(1970, 1, 1, tzinfo=UTC), until or now + SPAN
    start, end = when - SPAN, when + SPAN
    return min(start, since) if since else start, max(end, until) if until else end


def verify_message(
    archive: ArchiveReader,
    data: bytes,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    signing_vault_path: str | None = None,
    vault_conn_id: str = "vault_default",
) -> Verdict:
    """Judge ``data`` (a saved .eml) against ``archive``; integrity and Transit checks as ``ArchiveReader.verify``."""
    saved = crlf(data)
    ids = message_ids(saved)
    if not ids:
        return Verdict(False, "the message has no Message-ID: it was not sent by airflow-secure-mail")
    start, end = search_window(saved, since, until)
    copies = find_copies(archive, ids, start, end)
    if not copies:
        span = f"{start:%Y-%m-%d} to {end:%Y-%m-%d} (widen with --since/--until)"
        return Verdict(False, f"unknown Message-ID {ids[-1]}: no archived copy from {span}")
    rejections: list[str] = []
    for record in copies:
        try:
            archived = archive.verify(record)
        except ArchiveIntegrityError as exc:
            rejections.append(f"the archived copy {record.prefix} is damaged: {exc}")
            continue
        same, reason, relays = compare(saved, archived)
        if not same:
            rejections.append(reason)
            continue
        good, note = signature_check(record, archived, signing_vault_path, vault_conn_id)
        if good is False:
            return Verdict(False, note, record, relays)
        return Verdict(True, reason, record, relays, (note,) if note else ())
    return Verdict(False, min(rejections, key=_severity), copies[0])


def _severity(reason: str) -> tuple[int, int]:
    """The rejection to report among per-recipient copies: a forgery or damage first, then the smallest diff."""
    first = 0 if ("forged" in reason or "damaged" in reason or "signature" in reason) else 1
    return first, reason.count(";")


def signature_check(
    record: ArchiveRecord, archived: bytes, signing_vault_path: str | None, vault_conn_id: str
) -> tuple[bool | None, str]:
    """(good?, what was checked): a PGP/MIME signature (``multipart/signed``) checked by GnuPG against the
    signer key in Vault; None when the check cannot run (encrypted, S/MIME, no key given), with why."""
    protection = record.meta.protection
    if "signed" not in protection:
        return None, ""
    copy = f"signature: the file carries, byte for byte, the signed copy we sent ({protection})"
    if "encrypted" in protection:
        return None, f"{copy}; the signature is inside the encryption: only a recipient can check it"
    if "(pgp)" not in protection:
        return None, f"{copy}; an S/MIME signature is not checked here (openssl cms -verify checks it)"
    if not signing_vault_path:
        return None, f"{copy}; give --signing-vault-path to check the signature against the signer key"
    parts = _signed_parts(archived)
    if parts is None:
        return False, "signature bad: the message is not a well-formed PGP/MIME multipart/signed"
    from airflow_secure_mail.vault import vault_for

    key = vault_for(vault_conn_id).read(signing_vault_path, setting="--signing-vault-path").get("pgp_private_key")
    if not key:
        return None, f"{copy}; no pgp_private_key at secret/{signing_vault_path} to check the signature with"
    return _gpg_verify(parts[0], parts[1], str(key))


def _signed_parts(data: bytes) -> tuple[bytes, bytes] | None:
    """(the signed part's exact bytes, the armored signature) of a PGP/MIME ``multipart/signed`` message."""
    parsed = header_fields(data)
    if parsed is None:
        return None
    fields, body = parsed
    content_type = " ".join(_value(raw) for name, raw in fields if name == "content-type")
    if not content_type.lower().startswith("multipart/signed"):
        return None
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if found is None:
        return None
    boundary = b"--" + found.group(1).encode()
    start = body.find(boundary + b"\r\n")
    middle = body.find(b"\r\n" + boundary + b"\r\n", start + 1)
    end = body.find(b"\r\n" + boundary + b"--", middle + 1)
    if min(start, middle, end) < 0:
        return None
    signature_part = body[middle + len(boundary) + 4 : end]
    head_end = signature_part.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    return body[start + len(boundary) + 2 : middle], signature_part[head_end + 4 :].strip()


def _gpg_verify(signed: bytes, signature: bytes, private_key: str) -> tuple[bool, str]:
    """GnuPG's judgement of a detached signature, in a throwaway home holding only the signer's key."""
    import logging
    import os
    import shutil
    import subprocess
    import tempfile

    import gnupg

    logging.getLogger("gnupg").setLevel(logging.WARNING)  # it logs what it feeds gpg (the key) at DEBUG
    shm = "/dev/shm"  # noqa: S108 (a fresh 0700 directory on tmpfs: the key never reaches a disk)
    home = tempfile.mkdtemp(prefix="asm-verify-", dir=shm if os.access(shm, os.W_OK) else None)
    try:
        gpg = gnupg.GPG(gnupghome=home)
        imported = [str(f) for f in gpg.import_keys(private_key).fingerprints]
        sig_file = f"{home}/signature.asc"
        with open(sig_file, "wb") as fh:
            fh.write(signature)
        result = gpg.verify_data(sig_file, signed)
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, timeout=10, check=False)
        shutil.rmtree(home, ignore_errors=True)
    signer = str(result.fingerprint or result.key_id or "")
    if result.valid and signer and any(f.endswith(signer[-16:]) for f in imported):
        return True, f"signature: good PGP signature by {signer[-16:]} (the signer key in Vault), checked by GnuPG"
    why = str(result.status or "no valid signature")
    return False, f"signature bad: GnuPG says {why!r} for the signer key in Vault"


def describe(verdict: Verdict) -> list[str]:
    """The lines ``verify`` prints."""
    if not verdict.ours:
        return [f"NOT OURS: {verdict.reason}"]
    assert verdict.record is not None
    meta = verdict.record.meta
    origin = meta.airflow
    task = ".".join(str(origin[k]) for k in ("dag_id", "task_id") if origin.get(k)) or "outside a task"
    tls = meta.tls or {}
    lines = [
        f"OURS: {verdict.reason}",
        f"  Message-ID   {meta.message_id}",
        f"  sent         {meta.committed_at or meta.staged_at} ({meta.status.value})",
        f"  by           {task}" + (f", run {origin['run_id']}" if origin.get("run_id") else ""),
        f"  recipients   {len(meta.recipients)}",
        f"  TLS          {tls.get('version') or 'none'} {tls.get('cipher') or ''}".rstrip(),
        f"  protection   {meta.protection}",
        f"  record       {verdict.record.prefix}.json",
    ]
    if verdict.relay_fields:
        lines.append(f"  relay fields {', '.join(verdict.relay_fields)} (added after sending: not compared)")
    lines += [f"  {note}" for note in verdict.notes]
    return lines


__all__ = [
    "OWN_FIELDS",
    "Verdict",
    "compare",
    "crlf",
    "describe",
    "find_copies",
    "message_ids",
    "signature_check",
    "verify_message",
]
