"""The ``doctor --coverage`` report: a table for people, JSON for scripts, the same facts in both."""

from __future__ import annotations

import json
import os
from typing import Any

from airflow_secure_mail.cli.coverage import (
    Coverage,
    DagCoverage,
    Group,
    KindCoverage,
    Reach,
    collect,
    default_dags_folder,
    read_config,
)

HELP = (
    "list every DAG and whether its failures, retries and deadlines reach a secure-mail path "
    "(ours: SecureEmailNotifier or email_on_* through our email_backend; listener: the provider's listener; "
    "other: another callback or backend; none; n/a: no such path). Parses the DAG files here with Airflow's "
    "DagBag: run it where the DAG files and the Airflow configuration of your workers are. Exit 1 when a "
    "failure reaches no mail."
)
SHOWN_MEMBERS = 5
_ORDER = (Reach.OURS, Reach.LISTENER, Reach.OTHER, Reach.NONE, Reach.NA)


def run(dags_folder: str | None, as_json: bool) -> int:
    """Print the report; exit 1 when a DAG's failure or a broken DAG file reaches no mail, 2 without a folder."""
    folder = dags_folder or default_dags_folder()
    if not os.path.isdir(folder):
        print(f"FAIL  DAGs folder {folder} is not a directory: pass --dags-folder PATH or set [core] dags_folder")
        return 2
    coverage = collect(folder, read_config())
    print(json.dumps(as_dict(coverage), indent=2) if as_json else "\n".join(table(coverage)))
    return coverage.exit_code


# -- the table ---------------------------------------------------------------------------------------------------


def _members(group: Group, total: int) -> str:
    """Which members, unless the group holds most of them (then the others are named in their own groups)."""
    members = group.members
    if 2 * len(members) > total:
        return ""
    shown = ", ".join(members[:SHOWN_MEMBERS])
    more = len(members) - SHOWN_MEMBERS
    return f" ({shown}, +{more} more)" if more > 0 else f" ({shown})"


def _cells(kind: KindCoverage) -> list[tuple[str, str]]:
    """(reaches, how) lines of one kind: one line when every member's path ends the same way."""
    if not kind.groups:
        return [(Reach.NA.value, kind.absent)]
    if len(kind.groups) == 1:
        return [(kind.groups[0].reach.value, kind.groups[0].how)]
    return [
        (g.reach.value, f"{len(g.members)}/{kind.total} {kind.unit}: {g.how}{_members(g, kind.total)}")
        for g in kind.groups
    ]


def _dag_rows(dag: DagCoverage) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for name, kind in dag.kinds():
        for i, (reach, how) in enumerate(_cells(kind)):
            rows.append(("" if rows else dag.dag_id, "" if i else name, reach, how))
    return rows


def table(coverage: Coverage) -> list[str]:
    config = coverage.config
    rows = [row for dag in coverage.dags for row in _dag_rows(dag)]
    width = max([3, *(len(r[0]) for r in rows), *(len(f.file) for f in coverage.import_failures)])
    lines = [
        f"airflow-secure-mail doctor --coverage: {coverage.dags_folder}",
        f"  email_backend  {config.email_backend} ({'ours' if config.backend_is_ours else 'not ours'})",
        f"  listener       {config.listener_note}",
        "",
        f"  {'DAG':<{width}}  {'KIND':<9}  {'REACHES':<8}  HOW",
        *(f"  {dag:<{width}}  {kind:<9}  {reach:<8}  {how}" for dag, kind, reach, how in rows),
    ]
    if coverage.import_failures:
        lines += [
            "",
            f"  {'FILE':<{width}}  {'KIND':<9}  {'REACHES':<8}  ERROR (no DAG runs: only the listener mails it)",
        ]
        lines += [
            f"  {f.file:<{width}}  {'import':<9}  {f.reach.value:<8}  {f.error}" for f in coverage.import_failures
        ]
    return [line.rstrip() for line in lines] + ["", summary(coverage)]


def _counted(reaches: list[Reach]) -> str:
    return ", ".join(f"{reaches.count(r)} {r.value}" for r in _ORDER if r in reaches) or "0"


def summary(coverage: Coverage) -> str:
    dags, files = coverage.dags, coverage.import_failures
    parts = [
        f"{len(dags)} DAG{'s' * (len(dags) != 1)}, {len(files)} file{'s' * (len(files) != 1)} failing to import",
        *(
            f"{name}: {_counted([getattr(d, name).reach for d in dags])}"
            for name in ("failures", "retries", "deadlines")
        ),
    ]
    silent_dags, silent_files = len(coverage.silent_dags), len(coverage.silent_files)
    if silent_dags or silent_files:
        verdict = f"FAIL: {silent_dags} DAG(s) and {silent_files} file(s) reach no mail on failure"
    else:
        verdict = "every failure reaches a mail"
    return f"summary: {'; '.join(parts)}; {verdict}"


# -- JSON --------------------------------------------------------------------------------------------------------


def _group(group: Group, total: int) -> dict[str, Any]:
    return {
        "reach": group.reach.value,
        "how": group.how,
        "count": len(group.members),
        "of": total,
        "members": list(group.members),
    }


def _kind(kind: KindCoverage) -> dict[str, Any]:
    return {
        "reach": kind.reach.value,
        "unit": kind.unit,
        "paths": [_group(g, kind.total) for g in kind.groups],
        **({} if kind.groups else {"absent": kind.absent}),
    }


def as_dict(coverage: Coverage) -> dict[str, Any]:
    config = coverage.config
    return {
        "dags_folder": coverage.dags_folder,
        "email_backend": config.email_backend,
        "email_backend_ours": config.backend_is_ours,
        "listener": {
            "failures": config.listener_failures,
            "import_errors": config.listener_import_errors,
            "note": config.listener_note,
        },
        "dags": [{"dag_id": d.dag_id, "file": d.file, **{n: _kind(k) for n, k in d.kinds()}} for d in coverage.dags],
        "import_errors": [{"file": f.file, "error": f.error, "reach": f.reach.value} for f in coverage.import_failures],
        "summary": {
            "dags": len(coverage.dags),
            "import_errors": len(coverage.import_failures),
            **{
                name: {r.value: n for r in _ORDER if (n := [getattr(d, name).reach for d in coverage.dags].count(r))}
                for name in ("failures", "retries", "deadlines")
            },
            "dags_without_failure_mail": coverage.silent_dags,
            "files_without_mail": coverage.silent_files,
        },
        "exit_code": coverage.exit_code,
    }
