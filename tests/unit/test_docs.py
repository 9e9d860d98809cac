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
