"""Hypothesis strategies shared by the pure mail tests: valid addresses, control characters, encoded words."""

from __future__ import annotations

import base64
from urllib.parse import quote

from hypothesis import strategies as st

# Everything addresses.check_no_control refuses: C0, DEL, C1 and the Unicode line and paragraph separators.
CONTROL_CHARS = st.one_of(
    st.characters(min_codepoint=0x00, max_codepoint=0x1F),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
    st.sampled_from(["\u2028", "\u2029"]),
)
SAFE_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-", max_size=12)

_LOCAL_ATOM = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+_-", min_size=1, max_size=10
)
# single hyphens only: "ab--" at the start of a label is reserved for IDNA (RFC 5891) and refused
_LABEL = st.from_regex(r"\A[a-z0-9]{1,5}(?:-[a-z0-9]{1,4})?\Z")


@st.composite
def addr_specs(draw: st.DrawFn) -> tuple[str, str]:
    """A valid ``local@domain`` as a caller might write it (mixed-case domain) and its normalized form."""
    local = ".".join(draw(st.lists(_LOCAL_ATOM, min_size=1, max_size=3)))
    labels = draw(st.lists(_LABEL, min_size=1, max_size=3))
    domain = ".".join([*labels, draw(st.sampled_from(["com", "org", "net", "example", "de"]))])
    written = "".join(c.upper() if draw(st.booleans()) else c for c in domain)
    return f"{local}@{written}", f"{local}@{domain}"


def encoded_word(text: str, charset: str, encoding: str) -> str:
    """``text`` as one RFC 2047 encoded word, every byte escaped (``q``) or base64 (``b``)."""
    raw = text.encode(charset if charset != "x-unknown" else "utf-8")
    if encoding == "b":
        return f"=?{charset}?b?{base64.b64encode(raw).decode('ascii')}?="
    return f"=?{charset}?q?{''.join(f'={byte:02X}' for byte in raw)}?="


def rfc2231_value(text: str) -> str:
    """``text`` as an RFC 2231 extended value, ``charset'lang'percent-encoded``."""
    return "utf-8''" + quote(text.encode("utf-8"), safe="")


@st.composite
def encoded_controls(draw: st.DrawFn) -> tuple[str, str]:
    """(form, value): text around one control character, hidden in an RFC 2047 word or an RFC 2231 value."""
    text = draw(SAFE_TEXT) + draw(CONTROL_CHARS) + draw(SAFE_TEXT)
    form = draw(st.sampled_from(["q", "b", "rfc2231"]))
    if form == "rfc2231":
        return form, rfc2231_value(text)
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1", "utf-16", "x-unknown"]))
    try:
        text.encode(charset if charset != "x-unknown" else "utf-8")
    except UnicodeEncodeError:
        charset = "utf-8"
    return form, encoded_word(text, charset, form)
