"""Deceptive and active HTML in a mail body: refuse it (``refuse_active``) or strip active content (``strip``).

Markup is judged the way the recipient's mail client will parse it, by an HTML5-conformant parser
(selectolax on Lexbor), not by the stdlib's ``html.parser``, whose tokenizer differs from browsers on
comments, ``</script`` and malformed tags in exactly the places filters are bypassed. Where the reading
depends on the reader, the screen refuses rather than guess: ``<noscript>`` (markup with scripting off, text
with it on), ``<base>`` (moves every relative link), CSS that generates text, and markup that parses into
something else when parsed again (mutation XSS through SVG/MathML), whether as sent or after stripping.
Deceptive links are refused in both modes: stripping cannot make a lying link honest, the template must change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from airflow_secure_mail.errors import ConfigurationError, PolicyViolation
from airflow_secure_mail.mail._html_css import generated_text, is_remote_stylesheet
from airflow_secure_mail.mail._html_links import deceit, document_bases

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
_INVISIBLE = re.compile(r"[\x00-\x20\x7f]+")
_DECEPTIVE = "html_deceptive_link"
# Elements whose first newline the parser drops, so the HTML spec's serializer writes one more; Lexbor's does not.
_LEADING_NEWLINE_DROPPED = "pre, listing, textarea"
_MUTATION = "html_mutation"


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

    Rules: ``html_script``, ``html_embedded``, ``html_form``, ``html_event_handler``, ``html_javascript_url``,
    ``html_noscript``, ``html_base``, ``html_generated_text``, ``html_deceptive_link`` and ``html_mutation``;
    the error names the offending element.
    """
    check_html_mode(mode)
    tree = _parse(html)
    findings = _findings(tree)
    if not findings:
        _refuse_if_unstable(_serialized(tree))  # what the reader's parser may read differently from ours
        return html
    deceptive = [f for f in findings if f.rule == _DECEPTIVE]
    first = deceptive[0] if mode == "strip" and deceptive else findings[0]
    if mode == "refuse_active" or first.rule == _DECEPTIVE:
        raise PolicyViolation(f"HTML body: {first.what}", rule=first.rule, item=_start_tag(first.node))
    for finding in findings:
        _strip(finding)
    stripped = _serialized(tree)
    _refuse_if_unstable(stripped)
    return stripped


def _parse(html: str) -> Any:
    from selectolax.lexbor import LexborHTMLParser

    return LexborHTMLParser(html)


def _serialized(tree: Any) -> str:
    """The tree as HTML, keeping a ``<pre>``'s leading blank line (``<pre>\\n\\nx``), which Lexbor's serializer drops.

    The parser drops the newline right after ``<pre>``, ``<listing>`` and ``<textarea>``, so the spec's serializer
    writes one back when the text starts with a newline; without it a log excerpt loses its first blank line and
    reads as a mutation when parsed again.
    """
    for node in tree.css(_LEADING_NEWLINE_DROPPED):
        first = node.child
        if first is not None and first.tag == "-text" and (first.text_content or "").startswith("\n"):
            first.insert_before("\n")
    return tree.html or ""


def _refuse_if_unstable(serialized: str) -> None:
    """Refuse markup that is active, or different, when the reader's browser parses what we send.

    Serializing a parsed tree does not always give back that tree (SVG/MathML foreign content, misnested
    forms): a sanitizer that judged the first parse passes what the second parse turns into a handler.
    """
    again = _parse(serialized)
    found = _findings(again)
    if found:
        raise PolicyViolation(
            f"HTML body: the markup changes when parsed again and then holds this: {found[0].what}",
            rule=_MUTATION,
            item=_start_tag(found[0].node),
        )
    if _serialized(again) != serialized:
        raise PolicyViolation(
            "HTML body: the markup changes when parsed again (misnested SVG/MathML or forms, as in mutation XSS); "
            "simplify it.",
            rule=_MUTATION,
        )


def _findings(tree: Any) -> list[_Finding]:
    """Every rule breach in document order; a removed element's descendants are not visited again."""
    bases = document_bases(tree)
    found: list[_Finding] = []
    stack = [tree.root] if tree.root is not None else []
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
            found.extend(_deceptive_link(node, bases))
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
    return _reader_dependent(node, tag)


def _reader_dependent(node: Any, tag: str) -> _Finding | None:
    """Elements whose effect the screen cannot read from the markup: it depends on the reader's browser."""
    if tag == "noscript":
        # Parsed here with scripting off (its content is markup), in the reader's client with scripting on
        # (its content is text up to the first "</noscript>"): one reading is inert, the other can hold a handler.
        return _Finding("html_noscript", "<noscript> reads differently with scripting on; remove it.", node)
    if tag == "base":
        # Kept, it would move every relative link (and the screen's reading of it) to its host.
        return _Finding("html_base", "<base> redirects every relative link; write absolute links instead.", node)
    if tag == "style":
        css = generated_text(node.text(deep=True))
        if css is not None:
            return _Finding(
                "html_generated_text", f"{css} in <style> can show text that is not in the markup; remove them.", node
            )
    if tag == "link" and is_remote_stylesheet(node.attributes.get("rel")):
        what = "a remote stylesheet (<link rel=stylesheet>) can show text the screen cannot read; inline the CSS."
        return _Finding("html_generated_text", what, node)
    return None


def _attribute_finding(node: Any, tag: str, name: str, value: str) -> _Finding | None:
    if name.startswith("on"):
        return _Finding("html_event_handler", f"event handler {name}= on <{tag}> is not allowed in mail.", node, name)
    if name == "style" and generated_text(value) is not None:
        what = f"{generated_text(value)} in style= on <{tag}> can show text that is not in the markup; remove them."
        return _Finding("html_generated_text", what, node, name)
    if name in _URL_ATTRIBUTES or (name == "style" and "javascript:" in _INVISIBLE.sub("", value).lower()):
        compact = _INVISIBLE.sub("", value).lower()
        scheme = next((s for s in _ACTIVE_SCHEMES if compact.startswith(s) or f"url({s}" in compact), None)
        if scheme is not None:
            return _Finding("html_javascript_url", f"{scheme} URL in {name}= on <{tag}> is not allowed.", node, name)
    return None


def _deceptive_link(node: Any, bases: tuple[str, ...]) -> list[_Finding]:
    """A link whose visible text names a host other than (a parent or child of) the one the browser goes to."""
    lie = deceit(node, bases)
    if lie is None:
        return []
    shown, target, bare = lie
    what = f"a link shows {shown} but points to {target}: make the visible text match the link"
    if bare:  # a table, column or file name that ends in a country domain (users.id, df.info) reads as a host
        what += f" (if {shown} is not a host name, keep it out of the link text or write it without the dot)"
    return [_Finding(_DECEPTIVE, what + ".", node)]


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
