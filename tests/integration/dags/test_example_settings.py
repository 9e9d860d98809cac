"""The example DAGs' settings: read one way, named in each DAG's docstring, and in docs/examples.md's table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
EXAMPLES_DOC = ROOT / "docs" / "examples.md"
LOCAL = "file://$AIRFLOW_HOME/secure-mail"  # what f"file://{LOCAL}" reads as in the docs


def _settings(path: Path) -> dict[str, str]:
    """Every ``os.environ.get(NAME, DEFAULT)`` of a DAG file: {NAME: DEFAULT as docs/examples.md writes it}."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "os.environ.get"):
            continue
        name = ast.literal_eval(node.args[0])
        if name == "AIRFLOW_HOME":
            continue
        assert len(node.args) == 2, f"{path.name}: read {name} as os.environ.get({name!r}, DEFAULT)"
        default = node.args[1]
        if isinstance(default, ast.JoinedStr):  # f"file://{LOCAL}/archive"
            text = ast.unparse(default)[2:-1].replace("file://{LOCAL}", LOCAL)
        else:
            text = ast.literal_eval(default)
        found[name] = text or "none"
    return found


def _doc_table() -> dict[str, tuple[str, str]]:
    """{variable: (default, read by)} from the settings table of docs/examples.md."""
    rows = re.findall(r"^\| `([A-Z_]+)` \| (.+?) \| (.+?) \| .+ \|$", EXAMPLES_DOC.read_text(), re.MULTILINE)
    return {name: (default.strip("`"), read_by) for name, default, read_by in rows}


def _short(path: Path) -> str:
    return path.stem.removeprefix("secure_mail_")


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_every_setting_is_read_one_way_and_named_in_the_docstring(path: Path) -> None:
    source = path.read_text()
    assert "os.environ[" not in source and "os.getenv" not in source, "read settings as os.environ.get(NAME, DEFAULT)"
    assert "/tmp" not in source, "local defaults live under $AIRFLOW_HOME/secure-mail/, not /tmp"
    docstring = ast.get_docstring(ast.parse(source)) or ""
    missing = [name for name in _settings(path) if not re.search(rf"^\s+{name}\s", docstring, re.MULTILINE)]
    assert missing == [], f"{path.name}: name these settings in the module docstring"


def test_docs_table_lists_every_setting_with_its_default_and_readers() -> None:
    table = _doc_table()
    read: dict[str, set[str]] = {}
    for path in DAG_FILES:
        for name, default in _settings(path).items():
            assert table.get(name, ("?",))[0] == default, f"docs/examples.md: {name} defaults to {default}"
            read.setdefault(name, set()).add(_short(path))
    assert sorted(table) == sorted(read), "docs/examples.md's table and the DAG files name different settings"
    for name, readers in read.items():
        assert set(table[name][1].split(", ")) == readers, f"docs/examples.md: {name} is read by {sorted(readers)}"


def test_archive_writers_and_readers_share_one_location_and_transit_key() -> None:
    archive_users = [p for p in DAG_FILES if "SECURE_MAIL_ARCHIVE" in p.read_text()]
    assert {_short(p) for p in archive_users} == {"encrypted_report", "backup_restore", "deadline", "security_report"}
    defaults = {(s["SECURE_MAIL_ARCHIVE"], s["SECURE_MAIL_ARCHIVE_KEY"]) for s in map(_settings, archive_users)}
    assert defaults == {(f"{LOCAL}/archive", "mail-archive")}
    for path in archive_users:  # "" must turn sealing off, not name a key called ""
        assert 'os.environ.get("SECURE_MAIL_ARCHIVE_KEY", "mail-archive") or None' in path.read_text()


def test_docs_give_the_setup_command_in_one_marked_block() -> None:
    text = EXAMPLES_DOC.read_text()
    block = re.search(r"<!-- setup-command -->\s*```bash\n(.*?)\n\s*```", text, re.DOTALL)
    assert block is not None
    assert block.group(1).strip() == "airflow-secure-mail setup --example-keys board@example.com"


def test_multi_machine_settings_set_every_location_and_its_connection() -> None:
    """The block the deployment suite applies names every shared location (and its connection), nothing else."""
    text = EXAMPLES_DOC.read_text()
    block = re.search(r"<!-- multi-machine-settings -->\s*```bash\n(.*?)\n```", text, re.DOTALL)
    assert block is not None
    names = [line.removeprefix("export ").split("=", 1)[0] for line in block.group(1).splitlines()]
    table = _doc_table()
    local = {name for name, (default, _) in table.items() if default.startswith(LOCAL) or default == "none"}
    assert sorted(names) == sorted(local)
