"""The content fingerprint of a message: equal for two tries of the same message, different for other content.

A retry of the same message is serialised anew: compose stamps a new Date, MIME boundaries are random and
the docs' recipe for inline images draws a fresh Content-ID (``make_msgid``) at each build. The fingerprint
hashes every header field and every decoded leaf part, preamble and epilogue, without those three. It is
taken before our protection (``protect_all``), so a fresh session key or signing time never counts.

For a message protected elsewhere: a ``multipart/signed`` body is walked in full but for its signature part
(signing anew changes only that); an encrypted body (``multipart/encrypted``, ``application/pkcs7-mime``,
whose plaintext is never seen here) is hashed byte for byte, so a retry that re-encrypts a message built
elsewhere under the same Message-ID is refused: keep the bytes, or give it a new Message-ID.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from email.message import Message

VERSION = "v1"
"""Written in front of every fingerprint: a later way of fingerprinting never compares equal to this one."""
_VOLATILE = frozenset({"date", "resent-date"})
"""Header fields a retry of the same message may set anew (compose stamps Date at each try)."""
ENCRYPTED = frozenset({"multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"})
"""Bodies whose plaintext is not seen here (also opaque S/MIME signed-data, whose content is inside the CMS)."""


def fingerprint(data: bytes) -> str:
    """The content fingerprint of the message in ``data`` (``v1:`` and a SHA-256 in hex)."""
    from email import message_from_bytes

    message = message_from_bytes(data)
    h = hashlib.sha256()
    if message.get_content_type() in ENCRYPTED:
        h.update(b"exact\x00" + data)  # nothing to decode: any byte that differs is other content
        return f"{VERSION}:{h.hexdigest()}"
    ids = _content_ids(message)
    for part in _parts(message):
        _add_headers(h, part, ids)
        if part.is_multipart():
            h.update(f"preamble:{part.preamble or ''}\x00epilogue:{part.epilogue or ''}\x00".encode(errors="replace"))
        else:
            h.update(hashlib.sha256(_payload(part, ids)).digest())
    return f"{VERSION}:{h.hexdigest()}"


def headers_fingerprint(data: bytes) -> str:
    """A hash of the top-level header fields only (Date and boundary left out): how records written before
    content fingerprints compared two tries of an encrypted message, whose ciphertext differs each time."""
    from email import message_from_bytes

    message = message_from_bytes(data)
    h = hashlib.sha256()
    _add_headers(h, message, {})
    return h.hexdigest()


def _parts(message: Message) -> list[Message]:
    """Every part in order; of a ``multipart/signed`` only its signed (first) part, never the signature."""
    out = [message]
    if message.is_multipart():
        children = [child for child in message.get_payload() if not isinstance(child, str)]
        if message.get_content_type() == "multipart/signed":
            children = children[:1]
        for child in children:
            out += _parts(child)
    return out


def _content_ids(message: Message) -> dict[str, str]:
    """Each Content-ID (without its angle brackets) mapped to its place of appearance: ``cid-0``, ``cid-1``..."""
    ids: dict[str, str] = {}
    for part in _parts(message):
        value = str(part.get("Content-ID", "")).strip().strip("<>").strip()
        if value and value not in ids:
            ids[value] = f"cid-{len(ids)}"
    return ids


def _normalised(text: str, ids: dict[str, str]) -> str:
    """``text`` with every Content-ID replaced by its place: random IDs of a rebuilt message compare equal."""
    for value, place in ids.items():
        text = text.replace(value, place)
    return text


def _add_headers(h: hashlib._Hash, part: Message, ids: dict[str, str]) -> None:
    """Hash the part's header fields in order, whitespace folded, without Date and the MIME boundary."""
    for name, value in part.items():
        lowered = name.lower()
        if lowered in _VOLATILE:
            continue
        if lowered == "content-type":
            params = [p for p in part.get_params() or [] if p[0].lower() != "boundary"]
            value = repr(sorted((str(k).lower(), str(v)) for k, v in params))
        text = _normalised(" ".join(str(value).split()), ids) if ids else " ".join(str(value).split())
        h.update(f"{lowered}:{text}\x00".encode("utf-8", "surrogateescape"))


def _payload(part: Message, ids: dict[str, str]) -> bytes:
    """The decoded body of a leaf part; in an HTML part, ``cid:`` references normalised like the Content-IDs."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    if ids and part.get_content_type() == "text/html":
        charset = part.get_content_charset() or "utf-8"
        try:
            text = data.decode(charset, "surrogateescape")
        except LookupError:  # an unknown charset: the IDs are ASCII, so latin-1 keeps every byte and finds them
            charset, text = "latin-1", data.decode("latin-1")
        data = _normalised(text, ids).encode(charset, "surrogateescape")
    return data


__all__ = ["ENCRYPTED", "VERSION", "fingerprint", "headers_fingerprint"]
