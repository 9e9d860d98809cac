"""CSS that puts text on the page the markup does not hold: ``content:`` (``::before``/``::after``) and remote sheets.

A link's visible text can come from a stylesheet (``a::after{content:"paypal.com"}``), so the deceptive-link
check, which reads the markup, would judge a link the reader sees differently. Rather than compute the cascade,
the screen refuses (or strips) any CSS that can generate text: a ``content`` declaration anywhere (but an
empty one, the clearfix idiom), and stylesheets it cannot read (``@import``, ``<link rel=stylesheet>``).
CSS escapes and comments are undone first, as the browser's tokenizer does, so ``c\\6f ntent`` and
``content/**/:`` are seen for what they are.
"""

from __future__ import annotations

import re

_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.DOTALL)
_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})(?:\r\n|[ \t\n\r\f])?|(.))", re.DOTALL)
# ``content`` as a property name; ``align-content``, ``justify-content`` and ``place-content`` are other properties.
_CONTENT = re.compile(r"(?<![\w-])content\s*:([^;}]*)")
# Values that show nothing: the clearfix idiom (``.row:after{content:"";display:table}``) of many mail templates.
_NO_TEXT = frozenset({'""', "''", "none", "normal"})
_IMPORT = re.compile(r"@import\b")


def generated_text(css: str) -> str | None:
    """What in ``css`` can show text that is not in the markup (``content:`` or ``@import``), or None."""
    plain = _unescape(_COMMENT.sub(" ", css)).lower()
    if any(_shows_text(value) for value in _CONTENT.findall(plain)):
        return "CSS content: declarations"
    if _IMPORT.search(plain):
        return "CSS @import of a remote stylesheet"
    return None


def _shows_text(value: str) -> bool:
    return value.replace("!important", "").strip() not in _NO_TEXT


def is_remote_stylesheet(rel: str | None) -> bool:
    """``<link rel="stylesheet">``: CSS the screen cannot read, fetched when the mail is opened."""
    return rel is not None and "stylesheet" in rel.lower().split()


def _unescape(css: str) -> str:
    """CSS escapes as the tokenizer reads them: ``\\63 `` is ``c``, ``\\:`` is ``:``, an escaped newline is nothing."""
    return _ESCAPE.sub(_unescaped, css)


def _unescaped(match: re.Match[str]) -> str:
    if match.group(1) is None:
        return "" if match.group(2) in "\r\n\f" else match.group(2)
    value = int(match.group(1), 16)
    return chr(value) if 0 < value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF else "\ufffd"
