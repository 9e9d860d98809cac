"""Where a link goes and which host its visible text names, both read the way the reader's browser reads them.

Targets are parsed by ada (a WHATWG URL parser, the standard browsers implement), not ``urllib.parse``:
backslashes, ``https:host`` without slashes, scheme-relative ``//host`` and ``<base href>`` all reach the host
a browser reaches. The mail's own address is unknown (a webmail page, a local file), so a link is resolved
against both an ``https:`` and an ``http:`` stand-in for it, after the document's ``<base href>``; a host either
reading reaches counts. A relative link that stays on the stand-in has no host of its own and is not judged.
"""

from __future__ import annotations

import re
from typing import Any

_STAND_IN = "mail-document.invalid"
_DOCUMENT_URLS = (f"https://{_STAND_IN}/inbox/", f"http://{_STAND_IN}/inbox/")
_UNPARSEABLE = "(an unparseable address)"
_PUNCTUATION = "()[]<>{}\"',;:!?.\u2018\u2019\u201c\u201d"
_LABEL = re.compile(r"^[^\W_](?:[^\W_]|-){0,62}$")  # letters, digits, inner hyphens: no underscore, as in host names
# Top-level domains that are also common file extensions, read as file names in a data pipeline's mail:
# ``report.zip``, ``clip.mov``, ``README.md``, ``etl.py``. Country domains people visit more than such files
# (.ai .au .me .pl .tr .ms) stay host names.
_UNSHOWN = frozenset({"script", "style", "template", "title", "noscript"})
_BREAKS = frozenset(
    {"address", "article", "aside", "blockquote", "br", "caption", "center", "dd", "details", "dialog", "div", "dl",
     "dt", "fieldset", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
     "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "td", "th", "tr", "ul"}
)  # fmt: skip
_FILE_EXTENSIONS = frozenset({"zip", "mov", "movie", "md", "py", "sh", "so", "ps", "rs", "nc", "tz", "dot", "man"})


def document_bases(tree: Any) -> tuple[str, ...]:
    """The base URLs a link may be resolved against: the first ``<base href>`` (as browsers do) over the stand-ins."""
    base = next((n for n in tree.css("base") if n.attributes.get("href") is not None), None)
    if base is None:
        return _DOCUMENT_URLS
    resolved = tuple(r for r in (_resolve(base.attributes["href"] or "", d) for d in _DOCUMENT_URLS) if r)
    return tuple(r.href for r in resolved) or _DOCUMENT_URLS  # an unparseable base is ignored, as browsers do


def deceit(node: Any, bases: tuple[str, ...]) -> tuple[str, str] | None:
    """``(shown, target)`` when a link's visible text names a host other than (a parent or child of) its target."""
    href = node.attributes.get("href") or node.attributes.get("xlink:href")
    targets = _targets(href, bases) if href is not None else set()
    if not targets:
        return None
    # Two readings of the text: as the browser lays it out, where inline elements join (``paypal<b>.com</b>``
    # shows paypal.com) and blocks and <br> separate; and words split at every element, as read before.
    readings = (_laid_out_text(node), node.text(deep=True, separator=" "))
    for shown in dict.fromkeys(h for reading in readings for h in hosts_named(reading)):
        for target in sorted(targets):
            if not _same_site(shown, target):
                return shown, target
    return None


def _laid_out_text(node: Any) -> str:
    """The text as a browser shows it: inline elements run together, block elements and ``<br>`` break words."""
    parts: list[str] = []
    for child in node.iter(include_text=True):
        tag = (child.tag or "").lower()
        if tag == "-text":
            parts.append(child.text_content or "")
        elif tag in _BREAKS:
            parts.append(f" {_laid_out_text(child)} ")
        elif not tag.startswith("-") and tag not in _UNSHOWN:
            parts.append(_laid_out_text(child))
    return "".join(parts)


def _targets(href: str, bases: tuple[str, ...]) -> set[str]:
    """Every host ``href`` reaches under any reading; the stand-in (a relative link) is no host."""
    compact = href.strip("\x00\t\n\f\r ").replace("\t", "").replace("\n", "").replace("\r", "")
    if compact[:7].lower() == "mailto:":
        domain = compact.partition("?")[0].rpartition("@")[2] if "@" in compact else ""
        return {_ascii_host(domain)} if domain else set()
    parsed = [url for url in (_resolve(href, base) for base in bases) if url is not None]
    if not parsed:
        return {_UNPARSEABLE}
    return {url.hostname for url in parsed if url.hostname and url.hostname != _STAND_IN}


def _resolve(href: str, base: str) -> Any:
    from ada_url import URL

    try:
        return URL(href, base)
    except ValueError:
        return None


def hosts_named(text: str) -> list[str]:
    """Host names a reader takes ``text`` to name: URLs, ``www.`` names, mail domains, dotted names ending in a TLD.

    A bare dotted name is a host only when its last label is a top-level domain and not a common file
    extension, and no label has an underscore: ``analytics.orders``, ``config.yaml``, ``orders_v2.parquet``
    and ``report.zip`` are names of tables and files, ``paypal.com`` and ``bank.co.uk`` are hosts. A schema
    or table whose last part is a TLD (``analytics.events``) reads as a host: link it to a page on a host it
    does not contradict, or show it without the dot.
    """
    hosts: list[str] = []
    for word in (w.strip(_PUNCTUATION) for w in text.split()):
        host = _host_in_word(word)
        if host:
            hosts.append(_ascii_host(host))
    return hosts


def _host_in_word(word: str) -> str | None:
    lowered = word.lower()
    if "://" in word or lowered.startswith("www."):
        url = _resolve(word if "://" in word else f"http://{word}", _DOCUMENT_URLS[0])
        return url.hostname if url is not None and url.hostname != _STAND_IN else None
    if "@" in word:
        domain = word.rpartition("@")[2]
        return domain if _looks_like_host(domain) else None
    name = word.partition("/")[0]  # bank.com/login names bank.com
    return name if _looks_like_host(name) else None


def _looks_like_host(name: str) -> bool:
    from airflow_secure_mail.mail._tlds import is_tld

    labels = name.rstrip(".").split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return False
    last = _ascii_host(labels[-1])
    return is_tld(last) and last not in _FILE_EXTENSIONS


def _ascii_host(host: str) -> str:
    """The host as browsers compare it: lower case, IDNA (UTS 46) ASCII, no trailing dot."""
    from ada_url import idna_to_ascii

    host = host.strip().rstrip(".").lower()
    try:
        ascii_form = idna_to_ascii(host)  # bytes; empty when the name is not valid IDNA
    except (ValueError, UnicodeError):
        return host
    return ascii_form.decode("ascii") if ascii_form else host


def _same_site(shown: str, target: str) -> bool:
    """Equal, or one a subdomain of the other (``www.`` aside): whoever holds a domain holds the names under it.

    Sibling names (``a.example.com`` and ``b.example.com``) differ: without the public suffix list
    ``a.github.io`` and ``b.github.io`` would look alike, and they have different owners.
    """
    shown, target = shown.removeprefix("www."), target.removeprefix("www.")
    return shown == target or shown.endswith("." + target) or target.endswith("." + shown)
