"""Griffe extension for the docs build: Sphinx roles in docstrings (:meth:`send`) rendered as inline code.

The package's docstrings use reST roles; Markdown would print them as ":meth: send". This rewrites them to
`send` (the last dotted part of a ``~``-prefixed target, as Sphinx shows it) without touching the package.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_ROLE = re.compile(r":(?:py:)?(?:meth|func|class|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    target = match.group(2)
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(Extension):
    """Rewrite reST roles in every docstring to Markdown inline code."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)
