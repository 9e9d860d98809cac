"""``airflow-secure-mail doctor --coverage``: which alert path each DAG's failures, retries and deadlines take.

The DAG files are parsed here, with Airflow's ``BundleDagBag`` over the folder (as ``airflow dags list --local``
does for a bundle; cluster policies applied), so the command runs where the DAG files are. What a path reaches
is judged from the DAG objects and Airflow's configuration in this process: ``[email] email_backend`` and the
provider listener's ``[secure_mail]`` options. The table and the JSON are built in
:mod:`airflow_secure_mail.cli.coverage_report`.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUR_BACKEND = "airflow_secure_mail.email_backend.send_email"
AIRFLOW_DEFAULT_BACKEND = "airflow.utils.email.send_email_smtp"  # Airflow then mails with the stock SmtpNotifier
NOTIFIER = "SecureEmailNotifier"


class Reach(enum.Enum):
    """Where an alert path ends (``RANK`` orders them, weakest first: a DAG is as covered as its weakest path)."""

    NA = "n/a"  # the path does not exist: no task retries, no deadline alert
    NONE = "none"
    OTHER = "other"
    LISTENER = "listener"
    OURS = "ours"


RANK = {Reach.NONE: 0, Reach.OTHER: 1, Reach.LISTENER: 2, Reach.OURS: 3, Reach.NA: 4}


@dataclass(frozen=True)
class AlertConfig:
    """What Airflow's configuration adds to the DAG files: the email backend and the provider's listener."""

    email_backend: str = AIRFLOW_DEFAULT_BACKEND
    listener_failures: bool = False
    listener_import_errors: bool = False
    listener_note: str = "off: [secure_mail] listener_to is empty"

    @property
    def backend_is_ours(self) -> bool:
        return self.email_backend == OUR_BACKEND


def config_from(values: dict[str, str | None]) -> AlertConfig:
    """The config ``values`` describe (option name → raw string, ``email_backend`` for ``[email]``), judged by
    the listener's own reader, so the report and the listener agree on what is on.

    Like the listener itself, an unusable value turns the listener off (it logs one line and runs on).
    """
    from airflow_secure_mail.errors import ConfigurationError
    from airflow_secure_mail.listeners.config import settings_from

    backend = (values.get("email_backend") or "").strip() or AIRFLOW_DEFAULT_BACKEND
    try:
        settings = settings_from({k: v for k, v in values.items() if v is not None})
    except ConfigurationError as exc:
        return AlertConfig(email_backend=backend, listener_note=f"off: {exc}")
    if settings is None:
        return AlertConfig(email_backend=backend)
    catch_all, import_errors = settings.catch_all, settings.import_errors
    said = [what for what, on in (("failures (listener_catch_all)", catch_all), ("import errors", import_errors)) if on]
    note = f"mails {' and '.join(said)} to {len(settings.to)} address(es)" if said else "on, but mails nothing"
    return AlertConfig(backend, catch_all, import_errors, note)


def read_config() -> AlertConfig:
    """From ``airflow.cfg`` and ``AIRFLOW__*`` variables; the ``[secure_mail]`` section may not be declared."""
    from airflow.configuration import conf

    from airflow_secure_mail.get_provider_info import LISTENER_OPTIONS, LISTENER_SECTION

    values = {name: conf.get(LISTENER_SECTION, name, fallback=None) for name in LISTENER_OPTIONS}
    values["email_backend"] = conf.get("email", "email_backend", fallback=None)
    return config_from(values)


# -- judging one path --------------------------------------------------------------------------------------------


def _is_ours(obj: object) -> bool:
    """A SecureEmailNotifier (or a subclass, or the class itself): known by its class, without importing it."""
    cls = obj if isinstance(obj, type) else type(obj)
    return any(k.__name__ == NOTIFIER and k.__module__.startswith("airflow_secure_mail.") for k in cls.__mro__)


def _callbacks(value: Any) -> list[Any]:
    if not value:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _name(callback: Any) -> str:
    if isinstance(callback, functools.partial):
        callback = callback.func
    return str(getattr(callback, "__qualname__", None) or type(callback).__qualname__)


def _judge_callbacks(callbacks: list[Any], where: str) -> tuple[Reach, str] | None:
    if any(_is_ours(cb) for cb in callbacks):
        return Reach.OURS, f"{NOTIFIER} on the {where}"
    if callbacks:
        return Reach.OTHER, f"other callback on the {where}: {', '.join(_name(cb) for cb in callbacks)}"
    return None


def _judge_email(task: Any, flag: str, config: AlertConfig) -> tuple[Reach, str] | None:
    """Airflow mails ``email_on_failure`` / ``email_on_retry`` only when the task has ``email`` too."""
    if not (getattr(task, flag, False) and getattr(task, "email", None)):
        return None
    if config.backend_is_ours:
        return Reach.OURS, f"{flag} through our email_backend"
    if config.email_backend == AIRFLOW_DEFAULT_BACKEND:
        return Reach.OTHER, f"{flag} through Airflow's SmtpNotifier"
    return Reach.OTHER, f"{flag} through email_backend {config.email_backend}"


def judge_failure(task: Any, dag: Any, config: AlertConfig) -> tuple[Reach, str]:
    """A failed task: ours anywhere wins; any alert of its own silences the listener's catch-all (as it does)."""
    own = [
        _judge_callbacks(_callbacks(getattr(task, "on_failure_callback", None)), "task"),
        _judge_callbacks(_callbacks(getattr(dag, "on_failure_callback", None)), "DAG"),
        _judge_email(task, "email_on_failure", config),
    ]
    found = [path for path in own if path is not None]
    if found:
        return max(found, key=lambda path: RANK[path[0]])
    if config.listener_failures:
        return Reach.LISTENER, "the provider's listener (listener_catch_all)"
    return Reach.NONE, "nothing"


def judge_retry(task: Any, config: AlertConfig) -> tuple[Reach, str]:
    """A retried try: the task's ``on_retry_callback`` or ``email_on_retry`` (the listener counts retries, no mail)."""
    own = [
        _judge_callbacks(_callbacks(getattr(task, "on_retry_callback", None)), "task"),
        _judge_email(task, "email_on_retry", config),
    ]
    found = [path for path in own if path is not None]
    return max(found, key=lambda path: RANK[path[0]]) if found else (Reach.NONE, "nothing")


def _resolve(path: str) -> object | None:
    """The callable a deadline callback names (its module was imported when the DAG file built the callback)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except Exception:
        return None


def judge_deadline(alert: Any) -> tuple[Reach, str]:
    """A Deadline Alert's callback runs its callable path (AsyncCallback in the triggerer, SyncCallback in the
    executor)."""
    callback = alert.callback
    path = str(getattr(callback, "path", ""))
    kind = type(callback).__name__
    target = _resolve(path)
    ours = (
        _is_ours(target) if target is not None else path.startswith("airflow_secure_mail.") and path.endswith(NOTIFIER)
    )
    if ours:
        return Reach.OURS, f"{NOTIFIER} as {kind}"
    return Reach.OTHER, f"{kind}: {path}"


# -- one DAG -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """The members (task ids, deadline alert names) whose path ends the same way."""

    reach: Reach
    how: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class KindCoverage:
    """One kind of alert (failures, retries, deadlines) of one DAG: a group per way its members' paths end."""

    unit: str  # "tasks", "deadline alerts"
    total: int
    groups: tuple[Group, ...]
    absent: str = ""  # why the path does not exist (Reach.NA), e.g. "no task retries"

    @property
    def reach(self) -> Reach:
        """The weakest path: a DAG whose one task mails nothing has failures that reach ``none``."""
        return min((g.reach for g in self.groups), key=RANK.__getitem__, default=Reach.NA)


def _grouped(unit: str, judged: Iterable[tuple[str, tuple[Reach, str]]], absent: str) -> KindCoverage:
    by_path: dict[tuple[Reach, str], list[str]] = {}
    for member, path in judged:
        by_path.setdefault(path, []).append(member)
    groups = sorted(
        (Group(reach, how, tuple(members)) for (reach, how), members in by_path.items()),
        key=lambda g: (-RANK[g.reach], -len(g.members), g.how),  # best first, then the larger
    )
    return KindCoverage(unit, sum(len(g.members) for g in groups), tuple(groups), absent)


@dataclass(frozen=True)
class DagCoverage:
    dag_id: str
    file: str
    failures: KindCoverage
    retries: KindCoverage
    deadlines: KindCoverage

    def kinds(self) -> tuple[tuple[str, KindCoverage], ...]:
        return (("failures", self.failures), ("retries", self.retries), ("deadlines", self.deadlines))


def judge_dag(dag: Any, config: AlertConfig, file: str) -> DagCoverage:
    tasks = list(dag.tasks)
    retried = [t for t in tasks if (getattr(t, "retries", 0) or 0) > 0]
    alerts = list(getattr(dag, "deadline", None) or [])
    return DagCoverage(
        dag_id=dag.dag_id,
        file=file,
        failures=_grouped("tasks", ((t.task_id, judge_failure(t, dag, config)) for t in tasks), "no tasks"),
        retries=_grouped("tasks", ((t.task_id, judge_retry(t, config)) for t in retried), "no task retries"),
        deadlines=_grouped(
            "deadline alerts",
            ((a.name or f"#{i}", judge_deadline(a)) for i, a in enumerate(alerts, 1)),
            "no deadline alert",
        ),
    )


@dataclass(frozen=True)
class ImportFailure:
    """A DAG file that does not import: no DAG, no callback; only the listener mails it."""

    file: str
    error: str  # the first line of the exception
    reach: Reach


def first_error_line(stacktrace: str) -> str:
    """``ValueError: …`` out of a traceback: the first line after the last frame (a message may span lines)."""
    lines = stacktrace.strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    for line in lines[frames[-1] + 1 if frames else 0 :]:
        if line.strip() and not line.startswith(" "):
            return line.strip()
    return lines[-1].strip() if lines else ""


@dataclass(frozen=True)
class Coverage:
    dags_folder: str
    config: AlertConfig
    dags: tuple[DagCoverage, ...]
    import_failures: tuple[ImportFailure, ...]

    @property
    def silent_dags(self) -> list[str]:
        """DAGs with a failure that reaches no mail at all."""
        return [d.dag_id for d in self.dags if any(g.reach is Reach.NONE for g in d.failures.groups)]

    @property
    def silent_files(self) -> list[str]:
        return [f.file for f in self.import_failures if f.reach is Reach.NONE]

    @property
    def exit_code(self) -> int:
        return 1 if self.silent_dags or self.silent_files else 0


# -- parsing the DAG files ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _parse_output_to_stderr() -> Iterator[None]:
    """Parse logs and what DAG files print go to stderr: stdout is the report (and must stay valid JSON)."""
    moved = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.__stdout__)
    ]
    previous = [h.setStream(sys.stderr) for h in moved]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for handler, stream in zip(moved, previous, strict=True):
            if stream is not None:
                handler.setStream(stream)


def _bundle_dag_bag(folder: str) -> Any:
    """``airflow dags list --local`` over one bundle: the folder joins ``sys.path`` (DAG files import their helper
    modules from it, as in the dag-processor) and import errors are keyed by paths relative to it."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(folder, bundle_path=Path(folder))


def _relative(path: str, folder: str) -> str:
    full = os.path.join(folder, path)  # an absolute path stays as it is
    return os.path.relpath(full, folder) if full.startswith(folder.rstrip(os.sep) + os.sep) else full


def collect(dags_folder: str, config: AlertConfig) -> Coverage:
    """Parse every DAG file under ``dags_folder`` and judge each DAG and each file that fails to import."""
    folder = os.path.abspath(dags_folder)
    with _parse_output_to_stderr():
        bag = _bundle_dag_bag(folder)
    dags = tuple(judge_dag(dag, config, _relative(dag.fileloc, folder)) for _, dag in sorted(bag.dags.items()))
    reach = Reach.LISTENER if config.listener_import_errors else Reach.NONE
    failures = tuple(
        ImportFailure(_relative(path, folder), first_error_line(trace), reach)
        for path, trace in sorted(bag.import_errors.items())
    )
    return Coverage(folder, config, dags, failures)


def default_dags_folder() -> str:
    from airflow.configuration import conf

    return os.path.expanduser(conf.get("core", "dags_folder"))
