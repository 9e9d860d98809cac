"""The digest mail: a scannable subject, a plain-text body and a phone-width HTML body, from a claim's view.

Its templates sit beside it (``alerts/templates/digest.*.j2``); it reads a view (plain data) and imports
nothing of the package, so flush can call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

_TEMPLATES = Path(__file__).resolve().with_name("templates")
_MAX_DAGS_IN_SUBJECT = 2


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{n} {word[:-1]}ies"
    return f"{n} {word}{'es' if word.endswith('s') else 's'}"


def _clock_time(value: str | None, ref: datetime) -> str:
    """``02:10`` on the digest's own day, ``Nov 28 02:10`` otherwise (UTC: workers may sit anywhere)."""
    if not value:
        return ""
    at = datetime.fromisoformat(value)
    return at.strftime("%H:%M") if at.date() == ref.date() else at.strftime("%b %d %H:%M")


def counts_of(view: Mapping[str, Any]) -> str:
    """The digest's totals in words, as the subject and the summary line both say them (empty if none)."""
    parts = [_plural(int(view.get("failures", 0)), "failure"), _plural(int(view.get("retries", 0)), "retry")]
    return ", ".join(p for p in parts if not p.startswith("0 "))


def summary_of(view: Mapping[str, Any]) -> str:
    """The body's first line: every total of this digest, with what it counts."""
    parts = []
    if view.get("failures"):
        parts.append(f"{_plural(view['failures'], 'failure')} (task instances that failed)")
    if view.get("retries"):
        parts.append(f"{_plural(view['retries'], 'retry')} (retried tries)")
    if view.get("failed_runs"):
        parts.append(_plural(view["failed_runs"], "failed DAG run"))
    if view.get("other", {}).get("successes"):
        parts.append(_plural(view["other"]["successes"], "success"))
    held = sum(h["count"] for h in view.get("held", []))
    if held:
        parts.append(f"{_plural(held, 'event')} held by a silence")
    return f"This digest: {', '.join(parts)}." if parts else ""


def subject_of(view: Mapping[str, Any]) -> str:
    """ASCII only (``...``, not an ellipsis): an encoded word would let the header folder put spaces in it."""
    ref = datetime.fromisoformat(view["at"])
    dags = list(view["dags"]) or [str(v) for v in view["group"].values()]
    names = ", ".join(dags[:_MAX_DAGS_IN_SUBJECT]) + (", ..." if len(dags) > _MAX_DAGS_IN_SUBJECT else "")
    where = f"in {_plural(len(dags), 'DAG')} since {_clock_time(view['since'], ref)} UTC ({names})"
    counts = counts_of(view)
    if counts:
        what = counts
    elif view.get("failed_runs"):
        what = _plural(view["failed_runs"], "failed DAG run")
    elif view["held"]:
        what = f"{_plural(sum(h['count'] for h in view['held']), 'alert')} held by a silence"
    elif view["firing"]:
        what = f"still failing: {_plural(view['firing'], 'alert')}"
    else:
        what = f"resolved: {_plural(len(view['resolved']), 'alert')}"
        where = f"({names})"
    return " ".join(f"[Airflow] {what} {where}".split())


def _task_label(task: Mapping[str, Any]) -> str:
    index = f"[{task['map_index']}]" if task.get("map_index", -1) >= 0 else ""
    tries = f"try {task['try_number']}" + (f" of {task['max_tries']}" if task.get("max_tries") else "")
    retried = " (retried)" if task.get("kind") == "retry" else ""
    return f"{task['task_id']}{index}, {tries}{retried}"


def render_digest(view: Mapping[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html); deterministic in ``view`` so a takeover composes the same Message-ID."""
    import jinja2

    ref = datetime.fromisoformat(view["at"])
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html.j2", "html"], default_for_string=False),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda value: _clock_time(value, ref)
    env.filters["task_label"] = _task_label
    env.filters["plural"] = _plural
    subject = subject_of(view)
    fields = dict(view, subject=subject, summary=summary_of(view), as_of=ref.strftime("%Y-%m-%d %H:%M UTC"))
    return (
        subject,
        env.get_template("digest.txt.j2").render(**fields),
        env.get_template("digest.html.j2").render(**fields),
    )
