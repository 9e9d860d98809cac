"""The import graph is the architecture: the import-linter contracts in pyproject.toml hold, and they bite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the package found first on the path from ``cwd``, with ``cwd``'s pyproject.toml."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "airflow_secure_mail", tmp_path / "airflow_secure_mail")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_layers_and_has_no_circles():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("mail/wire.py", "from airflow_secure_mail.hooks import smtp", "Floors import only downward BROKEN"),
        ("pipeline/send.py", "from airflow_secure_mail.hooks.smtp import SecureSmtpHook", "Floors import only"),
        ("mail/outgoing.py", "from airflow_secure_mail.mail import compose", "No import circles"),
    ],
)
def test_a_planted_upward_import_or_circle_fails_the_contract(tmp_path, module, planted, contract):
    """Hidden in a function, as the old circles were: still caught."""
    copy = _copy_of_the_package(tmp_path)
    target = copy / "airflow_secure_mail" / module
    target.write_text(target.read_text() + f"\n\ndef _planted() -> None:\n    {planted}  # noqa\n")
    result = _lint_imports(copy)
    assert result.returncode == 1, result.stdout
    assert contract in result.stdout
