"""Deceptive and active HTML in a mail body: refuse it (``refuse_active``) or strip active content (``strip``).

Markup is judged the way the recipient's mail client will parse it, by an HTML5-conformant parser
(selectolax on Lexbor), not by the stdlib's ``html.parser``, whose tokenizer differs from browsers on
comments, ``</script`` and malformed tags in exactly the places filters are bypassed. Deceptive links are
refused in both modes: stripping cannot make a lying link honest, the template must change.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from airflow_secure_mail.errors import ConfigurationError, PolicyViolation

HTML_MODES = ("refuse_active", "strip")
_SCRIPT = frozenset({"script"})
_EMBEDDED = frozenset({"iframe", "frame", "frameset", "object", "embed", "applet"})
_FORM = frozenset({"form"})
_CONTROLS = frozenset({"input", "button", "select", "textarea"})
_URL_ATTRIBUTES = frozenset(
    {"href", "src", "action", "formaction", "xlink:href", "data", "background", "poster", "codebase", "cite",
     "longdesc", "dynsrc", "lowsrc", "to", "from", "values", "srcdoc"}
)  # fmt: skip
_ACTIVE_SCHEMES = ("javascript:", "vbscript:", "data:text/html", "data:image/svg+xml")
_LINK_SCHEMES = frozenset({"http", "https", "ftp"})
_INVISIBLE = re.compile(r"[\x00-\x20\x7f]+")
_BARE_HOST = re.compile(r"^(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+([^\W\d_]{2,63})$")
_PUNCTUATION = "()[]<>{}\"',;:!?.\u2018\u2019\u201c\u201d"


@dataclass(frozen=True)
class _Finding:
    rule: str
    what: str
    node: Any
    attribute: str | None = None


def check_html_mode(mode: str) -> None:
    if mode not in HTML_MODES:
        raise ConfigurationError(f"MailPolicy.html={mode!r}: use 'refuse_active' (default) or 'strip'.")


def screen_html(html: str, mode: str = "refuse_active") -> str:
    """The body to send: ``html`` itself when clean, else stripped (``strip``) or refused (PolicyViolation).

    Rules: ``html_script``, ``html_embedded``, ``html_form``, ``html_event_handler``,
    ``html_javascript_url`` and ``html_deceptive_link``; the error names the offending element.
    """
    check_html_mode(mode)
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    findings = _findings(tree.root)
    if not findings:
        return html
    deceptive = [f for f in findings if f.rule == "html_deceptive_link"]
    first = deceptive[0] if mode == "strip" and deceptive else findings[0]
    if mode == "refuse_active" or first.rule == "html_deceptive_link":
        raise PolicyViolation(f"HTML body: {first.what}", rule=first.rule, item=_start_tag(first.node))
    for finding in findings:
        _strip(finding)
    return str(tree.html)


def _findings(root: Any) -> list[_Finding]:
    """Every rule breach in document order; a removed element's descendants are not visited again."""
    found: list[_Finding] = []
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        tag = (node.tag or "").lower()
        element = _element_finding(node, tag)
        if element is not None:
            found.append(element)
            if tag not in _FORM:
                continue  # removed whole; a form is unwrapped, so its contents are still judged
        for name, value in node.attributes.items() if element is None else ():
            attribute = _attribute_finding(node, tag, name.lower(), value or "")
            if attribute is not None:
                found.append(attribute)
        if tag == "a":
            deceit = _deceptive_link(node)
            if deceit is not None:
                found.append(deceit)
        stack.extend(reversed(list(node.iter(include_text=False))))
    return found


def _element_finding(node: Any, tag: str) -> _Finding | None:
    if tag in _SCRIPT:
        return _Finding("html_script", "<script> elements are not allowed in mail.", node)
    if tag in _EMBEDDED:
        return _Finding("html_embedded", f"<{tag}> embeds active content; link to it instead.", node)
    if tag in _FORM:
        return _Finding("html_form", "forms are not allowed in mail (credential phishing); link to a web page.", node)
    if tag in _CONTROLS:
        return _Finding("html_form", f"form control <{tag}> is not allowed in mail.", node)
    if tag == "meta" and (node.attributes.get("http-equiv") or "").lower() == "refresh":
        return _Finding("html_javascript_url", "<meta http-equiv=refresh> redirects are not allowed in mail.", node)
    return None


def _attribute_finding(node: Any, tag: str, name: str, value: str) -> _Finding | None:
    if name.startswith("on"):
        return _Finding("html_event_handler", f"event handler {name}= on <{tag}> is not allowed in mail.", node, name)
    if name in _URL_ATTRIBUTES or (name == "style" and "javascript:" in _INVISIBLE.sub("", value).lower()):
        compact = _INVISIBLE.sub("", value).lower()
        scheme = next((s for s in _ACTIVE_SCHEMES if compact.startswith(s) or f"url({s}" in compact), None)
        if scheme is not None:
            return _Finding("html_javascript_url", f"{scheme} URL in {name}= on <{tag}> is not allowed.", node, name)
    return None


def _deceptive_link(node: Any) -> _Finding | None:
    """A link whose visible text names a host other than (a parent or child of) the one it points to."""
    target = _link_host(node.attributes.get("href") or "")
    if target is None:
        return None
    for shown in _hosts_named(node.text(deep=True, separator=" ")):
        if not _same_site(shown, target):
            return _Finding(
                "html_deceptive_link",
                f"a link shows {shown} but points to {target}: make the visible text match the link.",
                node,
            )
    return None


def _link_host(href: str) -> str | None:
    compact = _INVISIBLE.sub("", href)
    if compact.lower().startswith("mailto:"):
        return _normalize(compact.partition("?")[0].rpartition("@")[2]) if "@" in compact else None
    try:
        parts = urlsplit(compact)
        return _normalize(parts.hostname) if parts.scheme.lower() in _LINK_SCHEMES and parts.hostname else None
    except ValueError:
        return "(an unparseable address)"


def _hosts_named(text: str) -> list[str]:
    hosts: list[str] = []
    for word in (w.strip(_PUNCTUATION) for w in text.split()):
        lowered = word.lower()
        host: str | None = None
        try:
            if "://" in word:
                host = urlsplit(word).hostname
            elif lowered.startswith("www."):
                host = urlsplit(f"http://{word}").hostname
            elif "@" in word and _looks_like_host(word.rpartition("@")[2]):
                host = word.rpartition("@")[2]
            elif _looks_like_host(word.rstrip("/")):
                host = word.rstrip("/")
        except ValueError:
            continue
        if host:
            hosts.append(_normalize(host))
    return hosts


def _looks_like_host(word: str) -> bool:
    """``example.com`` yes, ``report.pdf`` no: a dotted name whose last label is not a file extension."""
    match = _BARE_HOST.match(word)
    return match is not None and _file_types().guess_type(f"x.{match.group(1)}", strict=False)[0] is None


@cache
def _file_types() -> mimetypes.MimeTypes:
    """Python's built-in extension table only: Debian's /etc/mime.types lists ``.com`` as a program."""
    return mimetypes.MimeTypes(filenames=())


def _normalize(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _same_site(shown: str, target: str) -> bool:
    """Equal, or one a subdomain of the other (``www.`` aside): whoever holds a domain holds the names under it.

    Sibling names (``a.example.com`` and ``b.example.com``) differ: without the public suffix list
    ``a.github.io`` and ``b.github.io`` would look alike, and they have different owners.
    """
    shown, target = shown.removeprefix("www."), target.removeprefix("www.")
    return shown == target or shown.endswith("." + target) or target.endswith("." + shown)


def _start_tag(node: Any) -> str:
    attributes = "".join(f' {k}="{v}"' if v is not None else f" {k}" for k, v in node.attributes.items())
    text = f"<{node.tag}{attributes}>"
    return text if len(text) <= 120 else text[:117] + "...>"


def _strip(finding: _Finding) -> None:
    if finding.attribute is not None:
        del finding.node.attrs[finding.attribute]
    elif (finding.node.tag or "").lower() in _FORM:
        finding.node.unwrap()
    else:
        finding.node.decompose()


__all__ = ["HTML_MODES", "check_html_mode", "screen_html"]
