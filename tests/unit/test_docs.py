"""The manual: the docs site builds with --strict, lists every public name, and the README stays a front door."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import airflow_secure_mail

# The repository root, wherever this file sits under tests/ (it may move to tests/integration/).
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "mkdocs.yml").is_file())
README = ROOT / "README.md"
DOCS = ROOT / "docs"
_MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "index.html").is_file()


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"


def test_api_reference_lists_every_public_name() -> None:
    reference = "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("reference*.md")))
    listed = set(re.findall(r"^::: airflow_secure_mail\.(\w+)\s*$", reference, re.MULTILINE))
    public = {name for name in airflow_secure_mail.__all__ if name != "__version__"}
    assert public - listed == set(), "add `::: airflow_secure_mail.<Name>` to docs/reference.md"


def test_readme_relative_links_point_at_files() -> None:
    text = README.read_text(encoding="utf-8")
    targets = _MD_LINK.findall(text) + _REF_LINK.findall(text)
    relative = [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t, re.IGNORECASE)]
    assert relative, "the README should link to the docs pages"
    missing = [t for t in relative if not (README.parent / t.split("#", 1)[0]).exists()]
    assert missing == []


_PY_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _python_snippets() -> list[tuple[str, str]]:
    pages = [README, *sorted(DOCS.glob("*.md"))]
    return [(f"{p.name}#{n}", code) for p in pages for n, code in enumerate(_PY_BLOCK.findall(p.read_text()), 1)]


def test_python_snippets_compile() -> None:
    """Every Python block in the README and the manual is valid Python (top-level ``await`` allowed)."""
    import ast

    for where, code in _python_snippets():
        try:
            compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            raise AssertionError(f"{where}: {exc}") from None


def test_dag_snippets_run_as_written() -> None:
    """A block that defines a DAG runs as pasted, and every ``@task`` it defines is called (issue 21, item 10:
    the notifier example defined a task and never called it, so its DAG had no task)."""
    import types

    from airflow.sdk.definitions._internal.contextmanager import DagContext

    dag_blocks = [(w, c) for w, c in _python_snippets() if "with DAG(" in c or "@dag" in c]
    assert dag_blocks, "the manual should show a DAG"
    for n, (where, code) in enumerate(dag_blocks):
        module = types.ModuleType(f"_docs_snippet_{n}")
        sys.modules[module.__name__] = module
        DagContext.current_autoregister_module_name = module.__name__
        try:
            exec(compile(code, where, "exec"), module.__dict__)  # our own documentation
        finally:
            DagContext.current_autoregister_module_name = None
            del sys.modules[module.__name__]
        dags = [d for d, m in DagContext.autoregistered_dags if m is module]
        assert dags, f"{where}: no DAG was made"
        for dag in dags:
            assert dag.tasks, f"{where}: DAG {dag.dag_id} has no task"
        defined = set(re.findall(r"@task\b[^\n]*\n\s*def (\w+)", code))
        used = {t.task_id for d in dags for t in d.tasks}
        assert defined <= used, f"{where}: @task {sorted(defined - used)} defined but never called"
