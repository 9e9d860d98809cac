"""CSS that puts text on the page the markup does not hold: ``content:``, list markers, quotes and remote sheets.

A link's visible text can come from a stylesheet (``a::after{content:"paypal.com"}``), so the deceptive-link
check, which reads the markup, would judge a link the reader sees differently. Rather than compute the cascade,
the screen refuses (or strips) any CSS that can generate text: a ``content`` declaration anywhere (but an
empty one, the clearfix idiom), a list marker that is a string or a page-defined counter style
(``list-style-type:'paypal.com '``, ``@counter-style``), ``quotes:`` other than ``none``/``auto`` (what ``<q>``
shows), and stylesheets it cannot read (``@import``, ``<link rel=stylesheet>``).
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
_COUNTER_STYLE = re.compile(r"@counter-style\b")
# Declarations start after ``{``, ``;`` or ``}`` (CSS nesting), or at the start of a style attribute.
_LIST_STYLE = re.compile(r"(?:^|[{;}])\s*list-style(?:-type)?\s*:([^;}]*)")
_QUOTES = re.compile(r"(?:^|[{;}])\s*quotes\s*:([^;}]*)")
_GLOBAL = frozenset({"inherit", "initial", "unset", "revert", "revert-layer"})
# The browser's own markers: bullets and numbers, which a page's @counter-style cannot redefine unseen (any
# @counter-style is refused). A string, a custom name or symbols() can show any text.
_MARKER_WORDS = _GLOBAL | {
    "none", "disc", "circle", "square", "decimal", "decimal-leading-zero", "lower-roman", "upper-roman",
    "lower-alpha", "upper-alpha", "lower-latin", "upper-latin", "lower-greek", "disclosure-open",
    "disclosure-closed", "inside", "outside",
}  # fmt: skip
# Functions a ``list-style`` shorthand may hold for its image; anything else (symbols(), var(), attr()) may be text.
_IMAGE_FUNCTIONS = frozenset(
    {"url", "image-set", "-webkit-image-set", "linear-gradient", "radial-gradient", "conic-gradient",
     "repeating-linear-gradient", "repeating-radial-gradient", "repeating-conic-gradient", "rgb", "rgba", "hsl", "hsla"}
)  # fmt: skip
_FUNCTION = re.compile(r"([\w-]*)\([^()]*\)")
_ZERO_SIZE = re.compile(r"[+-]?(?:0+\.?0*|\.0+)(?:[a-z]+|%)?")  # 0, 0px, 0.0em, .0pt


def generated_text(css: str) -> str | None:
    """What in ``css`` can show text that is not in the markup (``content:`` or ``@import``), or None."""
    plain = _unescape(_COMMENT.sub(" ", css)).lower()
    if any(_shows_text(value) for value in _CONTENT.findall(plain)):
        return "CSS content: declarations"
    if any(_marker_shows_text(value) for value in _LIST_STYLE.findall(plain)):
        return "CSS list markers (list-style with a string or a custom counter style)"
    if _COUNTER_STYLE.search(plain):
        return "CSS @counter-style rules"
    if any(_bare(value) not in _GLOBAL | {"none", "auto"} for value in _QUOTES.findall(plain)):
        return "CSS quotes: declarations"
    if _IMPORT.search(plain):
        return "CSS @import of a remote stylesheet"
    return None


def _shows_text(value: str) -> bool:
    return _bare(value) not in _NO_TEXT


def _bare(value: str) -> str:
    return value.replace("!important", "").strip()


def _marker_shows_text(value: str) -> bool:
    """A ``list-style(-type)`` value whose marker is not one of the browser's bullets or numbers."""
    value = _bare(value)
    while (call := _FUNCTION.search(value)) is not None:  # innermost first: url(), gradients with rgb() inside
        if call.group(1) not in _IMAGE_FUNCTIONS:
            return True
        value = value[: call.start()] + " " + value[call.end() :]
    return any(quote in value for quote in "'\"") or not set(value.split()) <= _MARKER_WORDS


def hides_text(style: str) -> bool:
    """Does a ``style=`` attribute hide its element's text (``display:none``, ``font-size:0``, ``visibility:hidden``)?

    Only these simple inline forms: hiding by class, clipping, colour or position is not read.
    """
    declarations = (d.partition(":") for d in _unescape(_COMMENT.sub(" ", style)).lower().split(";"))
    return any(_hiding(name.strip(), _bare(value)) for name, _, value in declarations)


def _hiding(name: str, value: str) -> bool:
    if name == "font-size":
        return _ZERO_SIZE.fullmatch(value) is not None
    return (name, value) in {("display", "none"), ("visibility", "hidden"), ("visibility", "collapse")}


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
