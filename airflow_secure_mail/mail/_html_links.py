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
# Labels left of the registrable part: a subdomain may hold ``_`` (``secure_login.paypal.com`` is a host claim).
_SUBDOMAIN_LABEL = re.compile(r"^[\w-]{1,63}$")
# A bare dotted name is a host claim only under these top-level domains (and two-letter country domains):
# ``orders.date``, ``dim.store``, ``dbt.run``, ``events.data`` are names of tables and commands, not hosts.
_LEGACY_TLDS = frozenset({"com", "net", "org", "edu", "gov", "mil", "int", "info", "biz"})
# Schemes whose ``scheme://host`` a reader takes for a web address; ``s3://bucket``, ``hdfs://``, ``file://`` are not.
_WEB_URL = re.compile(
    r"(?<![\w+.-])(?:https?|ftp|wss?):(?://|[/\\]*(?=[^\s/\\]))", re.IGNORECASE
)  # http:host, http:\\host too
_PORT = re.compile(r":\d{1,5}$")
# Shown as a full stop, read as one by the browser's IDNA mapping: ideographic, full-width and half-width stops.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
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


def deceit(node: Any, bases: tuple[str, ...]) -> tuple[str, str, bool] | None:
    """``(shown, target, bare)`` when a link's text names a host other than (a parent or child of) its target.

    ``bare`` says the host was a dotted word (``paypal.com``), not a URL, ``www.`` name or mail address.
    """
    href = node.attributes.get("href") or node.attributes.get("xlink:href")
    targets = _targets(href, bases) if href is not None else set()
    if not targets:
        return None
    # Two readings of the text: as the browser lays it out, where inline elements join (``paypal<b>.com</b>``
    # shows paypal.com) and blocks and <br> separate; and words split at every element, as read before.
    # A third: laid out without elements hidden by an inline style, so paypal<span hidden>_</span>.com is paypal.com.
    # A fourth: what stands for images and shows on hover (``alt``, ``title``), read where images are blocked.
    readings = (
        _laid_out_text(node),
        node.text(deep=True, separator=" "),
        _laid_out_text(node, unhidden=True),
        _stand_in_text(node),
    )
    for shown, bare in dict.fromkeys(h for reading in readings for h in hosts_named(_as_seen(reading))):
        for target in sorted(targets):
            if not _same_site(shown, target):
                return shown, target, bare
    return None


def _as_seen(text: str) -> str:
    """The text as the reader sees it: no invisible format characters (zero-width, soft hyphen, bidi
    isolates: Unicode category Cf), and look-alike full stops as ``.``, so ``pay\\u200dpal\\u3002com`` is paypal.com.
    """
    import unicodedata

    return "".join(ch for ch in text.translate(_DOTS) if unicodedata.category(ch) != "Cf")


def _laid_out_text(node: Any, *, unhidden: bool = False) -> str:
    """The text as a browser shows it: inline elements run together, block elements and ``<br>`` break words.

    ``unhidden`` leaves out elements hidden by their own ``hidden`` attribute or inline style.
    """
    parts: list[str] = []
    for child in node.iter(include_text=True):
        tag = (child.tag or "").lower()
        if tag == "-text":
            parts.append(child.text_content or "")
        elif tag.startswith("-") or tag in _UNSHOWN or (unhidden and _hidden(child)):
            continue
        elif tag in _BREAKS:
            parts.append(f" {_laid_out_text(child, unhidden=unhidden)} ")
        else:
            parts.append(_laid_out_text(child, unhidden=unhidden))
    return "".join(parts)


def _stand_in_text(node: Any) -> str:
    """The ``alt`` and ``title`` texts of the link and what it holds: a mail client that blocks images shows
    ``<img alt="paypal.com">`` as that text, in the link."""
    nodes = [node, *node.css("[alt], [title]")]
    return " ".join(n.attributes.get(a) or "" for n in nodes for a in ("alt", "title"))


def _hidden(node: Any) -> bool:
    from airflow_secure_mail.mail._html_css import hides_text

    attributes = node.attributes
    return "hidden" in attributes or hides_text(attributes.get("style") or "")


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


def hosts_named(text: str) -> list[tuple[str, bool]]:
    """``(host, bare)`` for each host a reader takes ``text`` to name: web URLs, ``www.`` names, mail domains,
    and bare dotted names that end in a country or legacy top-level domain.

    Decision (issue 19): a bare dotted name (no scheme, no ``www.``) is a host only when its last label is a
    two-letter country domain, an internationalized one, or com, net, org, edu, gov, mil, int, info or biz, and
    not a common file extension; its last two labels hold no underscore. So ``paypal.com``, ``bank.co.uk``,
    ``amazon.de`` and ``secure_login.paypal.com`` are hosts, while ``orders.date``, ``dim.store``, ``events.data``,
    ``orders_v2.parquet`` and ``report.zip`` are tables and files. ``users.id`` and ``df.info`` still read as
    hosts (.id is Indonesia): keep such a name out of the link text or write it without the dot. Only http,
    https, ftp, ws and wss URLs name hosts; ``s3://bucket/report.csv`` or ``hdfs://...`` do not. A mail
    address's domain is judged under every top-level domain.
    """
    hosts: list[tuple[str, bool]] = []
    for word in (w.strip(_PUNCTUATION) for w in text.split()):
        claim = _host_in_word(word)
        if claim is not None and claim[0]:
            hosts.append((_ascii_host(claim[0]), claim[1]))
    return hosts


def _host_in_word(word: str) -> tuple[str, bool] | None:
    web = _WEB_URL.search(word)
    if web is not None or word.lower().startswith("www."):
        url = _resolve(word[web.start() :] if web is not None else f"http://{word}", _DOCUMENT_URLS[0])
        return (url.hostname, False) if url is not None and url.hostname != _STAND_IN else None
    if "://" in word:
        return None  # s3://bucket, gs://, hdfs://, file://: storage paths, not web addresses
    if "@" in word:
        domain = word.rpartition("@")[2]
        return (domain, False) if _looks_like_host(domain, any_tld=True) else None
    name = _PORT.sub("", word.partition("/")[0])  # bank.com/login and bank.com:443 name bank.com
    return (name, True) if _looks_like_host(name) else None


def _looks_like_host(name: str, *, any_tld: bool = False) -> bool:
    """Could a reader take ``name`` for a host: host-name labels, a TLD that is not a file extension."""
    labels = name.rstrip(".").split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels[-2:]):
        return False
    if not all(_SUBDOMAIN_LABEL.match(label) for label in labels[:-2]):
        return False
    last = _ascii_host(labels[-1])
    return last not in _FILE_EXTENSIONS and (_is_tld(last) if any_tld else _is_claimed_tld(last))


def _is_claimed_tld(tld: str) -> bool:
    """Top-level domains under which a bare dotted name reads as a host: country, legacy generic, IDN."""
    if tld in _LEGACY_TLDS:
        return True
    return (len(tld) == 2 or tld.startswith("xn--")) and _is_tld(tld)


def _is_tld(label: str) -> bool:
    from airflow_secure_mail.mail._tlds import is_tld

    return is_tld(label)


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
