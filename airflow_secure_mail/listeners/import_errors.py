"""DAG import errors by mail: one per file and error, repeats throttled, a resolved line when the file parses.

Airflow's dag-processor calls ``on_new_dag_import_error`` when a file first fails to import and
``on_existing_dag_import_error`` at every later parse that still fails (every ``min_file_process_interval``),
both with the file's full path and the stack trace. Nothing is called when a file parses again, so
:meth:`ImportErrorAlerts.resolve` compares the import-error table (what the processor currently reports as
broken) with the files we mailed about; the plugin runs it from a thread in the dag-processor.

State is write-once objects in the digest state (:class:`~airflow_secure_mail.alerts.state.DigestState`, under
``import-errors/``), so several dag-processors sharing an ``s3://`` state mail once::

    import-errors/<file>/episodes/<n>.json               the file broke (n-th time), when
    import-errors/<file>/episodes/<n>.mailed.json         ... and someone was told
    import-errors/<file>/episodes/<n>.resolved.json       ... it parses again (the resolved line went out)
    import-errors/<file>/errors/<error>/<n>.json          the n-th mail of this error of this file (a claim)
    import-errors/<file>/errors/<error>/<n>.sent.json     ... delivered

The same error of the same file is mailed again only ``repeat_interval`` after its last mail, whether or not
the file was fixed in between.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_secure_mail.alerts.knobs import parse_duration
from airflow_secure_mail.alerts.state import DigestState, group_id

if TYPE_CHECKING:
    from airflow_secure_mail.listeners.config import ListenerSettings
    from airflow_secure_mail.listeners.mailer import ListenerMailer

log = logging.getLogger(__name__)

PREFIX = "import-errors"
LEASE = timedelta(minutes=5)
"""A claim not marked sent within this time was abandoned (the process died): the next report takes over."""

MAX_LINES = 20
MAX_CHARS = 2000

_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:[a-z0-9_]*_)?(?:password|passwd|pwd|secret|token|api_?key|access_?key|private_?key|"
    r"authorization|credentials?))(['\"]?\s*[:=]\s*)(['\"]?)(?:Bearer\s+|Basic\s+)?[^\s'\",)}\]]+"
)


def mask_stacktrace(text: str) -> str:
    """The first lines of a stack trace with secrets masked and the rest cut off.

    Airflow's masker replaces every secret this process registered (connections' passwords, sensitive
    Variables); the dag-processor may never have seen the one a DAG file used, so credentials in URLs and
    ``password=...``-style assignments are masked as well.
    """
    try:
        from airflow.sdk.log import redact  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover
        from airflow.sdk._shared.secrets_masker import redact
    masked = str(redact(text))
    masked = _URL_CREDENTIALS.sub(r"\1***:***@", masked)
    masked = _SECRET_ASSIGNMENT.sub(r"\1\2\3***", masked)
    lines = masked.strip("\n").splitlines()
    shown = "\n".join(lines[:MAX_LINES])
    cut = len(lines) > MAX_LINES or len(shown) > MAX_CHARS
    shown = shown[:MAX_CHARS]
    return shown + ("\n… (cut; the full trace is in the UI)" if cut else "")


def _fingerprint(stacktrace: str) -> str:
    return hashlib.sha256(stacktrace.strip().encode()).hexdigest()[:16]


def _numbered(names: Iterable[str]) -> dict[int, set[str]]:
    """``00000001.json``, ``00000001.sent.json`` ... → {1: {"", "sent"}}."""
    found: dict[int, set[str]] = {}
    for name in names:
        number, _, rest = name.partition(".")
        if number.isdigit():
            found.setdefault(int(number), set()).add(rest.removesuffix("json").rstrip("."))
    return found


def _name(prefix: str, n: int, suffix: str = "") -> str:
    return f"{prefix}/{n:08d}{'.' + suffix if suffix else ''}.json"


class ImportErrorAlerts:
    """Mail the listener's recipients about DAG files that do not import, and when they import again."""

    def __init__(
        self,
        settings: ListenerSettings,
        mailer: ListenerMailer,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.mailer = mailer
        self.state = DigestState(settings.digest_state)
        self.repeat = parse_duration(settings.repeat_interval, "repeat_interval")
        self.clock = clock

    def now(self) -> datetime:
        return (self.clock() if self.clock is not None else datetime.now(UTC)).astimezone(UTC)

    def relative(self, filename: str) -> str:
        """The file as the DAGs folder names it (the full path for a file outside it)."""
        folder = self.settings.dags_folder
        if folder:
            rel = os.path.relpath(filename, folder)
            if not rel.startswith(".."):
                return rel
        return filename

    # -- a file fails to import ------------------------------------------------------------------
    def report(self, filename: str, stacktrace: str) -> str | None:
        """Mail this error of this file unless it was mailed within ``repeat_interval``; the Message-ID sent."""
        rel = self.relative(filename)
        base = f"{PREFIX}/{group_id({'file': rel})}"
        now = self.now()
        episode, opened = self._open_episode(base, rel, now)
        errors = f"{base}/errors/{_fingerprint(stacktrace)}"
        n = self._claim(errors, now, rel)
        if n is None:
            return None
        subject, text = self._error_mail(rel, mask_stacktrace(stacktrace), opened)
        seed = f"airflow-secure-mail-import-error|{self.state.location}|{errors}|{n}"
        try:
            result = self.mailer.send(subject, text, seed=seed, origin={"import_error": rel})
        except BaseException:
            # given up here, not in flight: the next report (the next parse) claims anew instead of waiting
            # out the lease and logging "already mailed" for a mail that never went out
            self.state.create_json(_name(errors, n, "failed"), {"at": now.isoformat()})
            raise
        message_id = str(result.receipts[0].message_id if result.receipts else "")
        self.state.create_json(_name(errors, n, "sent"), {"message_id": message_id})
        self.state.create_json(_name(f"{base}/episodes", episode, "mailed"), {"at": now.isoformat()})
        return message_id

    def _open_episode(self, base: str, rel: str, now: datetime) -> tuple[int, datetime]:
        """The file's current broken episode (opened now if it was fine): its number and when it opened."""
        episodes = _numbered(self.state.names(f"{base}/episodes"))
        latest = max(episodes, default=0)
        if latest and "resolved" not in episodes[latest]:
            data = self.state.read_json(_name(f"{base}/episodes", latest)) or {}
            return latest, datetime.fromisoformat(str(data.get("opened_at", now.isoformat())))
        if not self.state.create_json(
            _name(f"{base}/episodes", latest + 1), {"file": rel, "opened_at": now.isoformat()}
        ):
            return self._open_episode(base, rel, now)  # another dag-processor opened it first: read theirs
        return latest + 1, now

    def _claim(self, errors: str, now: datetime, rel: str) -> int | None:
        """The number of the mail this process must send now, or None (sent within the interval, or in flight)."""
        claims = _numbered(self.state.names(errors))
        latest = max(claims, default=0)
        if latest and "failed" not in claims[latest]:
            at = datetime.fromisoformat(str((self.state.read_json(_name(errors, latest)) or {}).get("at")))
            sent = "sent" in claims[latest]
            if now < at + (self.repeat if sent else LEASE):
                if sent:
                    log.info(
                        "secure-mail listener: import error of %s already mailed; next mail after the repeat interval",
                        rel,
                    )
                else:
                    log.info("secure-mail listener: the import error mail of %s is being sent elsewhere", rel)
                return None
        if not self.state.create_json(_name(errors, latest + 1), {"at": now.isoformat()}):
            log.info("secure-mail listener: the import error mail of %s is being sent elsewhere", rel)
            return None  # another process claimed it first and sends it
        return latest + 1

    def _error_mail(self, rel: str, trace: str, opened: datetime) -> tuple[str, str]:
        lines = [
            f"The DAG file {rel} does not import: its DAGs are not updated until it does.",
            "",
            f"First seen: {opened.strftime('%Y-%m-%d %H:%M UTC')}",
            "",
            "Error (first lines, secrets masked):",
            *(f"    {line}" for line in trace.splitlines()),
            "",
            *self._links(),
            "",
            f"The same error of this file is mailed again at most every {self.settings.repeat_interval}; "
            "a line follows when the file imports again.",
            "Sent by the airflow-secure-mail listener ([secure_mail] listener_to).",
        ]
        return f"[Airflow] DAG import error: {rel}", "\n".join(lines) + "\n"

    def _links(self) -> list[str]:
        base = (self.settings.base_url or "").rstrip("/")
        if not base:
            return ["Import errors: the Airflow UI, Dashboard, 'Dag Import Errors' ([api] base_url is not set)."]
        return [
            f"Import errors in the UI: {base}/ (Dashboard, 'Dag Import Errors')",
            f"In the REST API: {base}/api/v2/importErrors",
        ]

    # -- files import again ----------------------------------------------------------------------
    def resolve(self, broken: Iterable[str]) -> list[str]:
        """Close the episode of every file not in ``broken`` (full paths); mail one resolved line per file we
        had mailed about. Returns the files resolved in that mail."""
        still = {self.relative(f) for f in broken}
        now = self.now()
        resolved: list[tuple[str, datetime]] = []
        for fkey in self.state.names(PREFIX):
            base = f"{PREFIX}/{fkey}"
            episodes = _numbered(self.state.names(f"{base}/episodes"))
            latest = max(episodes, default=0)
            if not latest or "resolved" in episodes[latest]:
                continue
            data = self.state.read_json(_name(f"{base}/episodes", latest)) or {}
            rel = str(data.get("file", ""))
            if not rel or rel in still:
                continue
            won = self.state.create_json(_name(f"{base}/episodes", latest, "resolved"), {"at": now.isoformat()})
            if won and "mailed" in episodes[latest]:
                resolved.append((rel, datetime.fromisoformat(str(data.get("opened_at", now.isoformat())))))
        if resolved:
            self._send_resolved(sorted(resolved), now)
        return [rel for rel, _ in sorted(resolved)]

    def _send_resolved(self, resolved: list[tuple[str, datetime]], now: datetime) -> None:
        when = now.strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            f"Resolved: {rel} imports again (broken since {opened.strftime('%Y-%m-%d %H:%M UTC')}; "
            f"no import error reported at {when})"
            for rel, opened in resolved
        ]
        text = "\n".join([*lines, "", "Sent by the airflow-secure-mail listener ([secure_mail] listener_to)."]) + "\n"
        names = ", ".join(rel for rel, _ in resolved[:2]) + (", …" if len(resolved) > 2 else "")
        subject = f"[Airflow] DAG import error resolved: {names}"
        seed = f"airflow-secure-mail-import-resolved|{self.state.location}|{now.isoformat()}|{names}"
        self.mailer.send(subject, text, seed=seed, origin={"import_error": "resolved"})


def broken_files() -> set[str]:
    """The files the dag-processor currently reports as broken: the import-error table, as full paths."""
    from airflow.models.errors import ParseImportError
    from airflow.utils.session import create_session
    from sqlalchemy import select

    found: set[str] = set()
    with create_session() as session:
        for row in session.scalars(select(ParseImportError)):
            try:
                found.add(row.full_file_path())
            except Exception:  # a bundle no longer configured: keep its file "broken", never a false resolved line
                found.add(str(row.filename))
    return found
