"""Airflow's plugins manager finds the listener through our ``airflow.plugins`` entry point, in a fresh process.

The venv's installed metadata may predate the entry point (an editable install reads ``pyproject.toml`` when it
is installed), so the test writes a distribution's metadata from this checkout's ``pyproject.toml`` table onto
the path: what the plugins manager then loads is exactly what the package declares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

from tests.conftest import ROOT

PROBE = """
import json
from airflow import settings
from airflow.configuration import conf
from airflow.listeners.listener import get_listener_manager
from airflow.sdk.listener import get_listener_manager as task_runner_listener_manager

def ours(manager):
    return sorted(type(p).__module__ + "." + type(p).__name__ for p in manager.pm.get_plugins()
                  if type(p).__module__.startswith("airflow_secure_mail"))

print(json.dumps({
    "lazy": settings.LAZY_LOAD_PROVIDERS,
    "lazy_conf": conf.getboolean("core", "lazy_discover_providers"),
    "core": ours(get_listener_manager()),
    "task_runner": ours(task_runner_listener_manager()),
}))
"""


def _entry_points_txt() -> str:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["airflow.plugins"]
    return "[airflow.plugins]\n" + "".join(f"{name} = {target}\n" for name, target in table.items())


def test_the_plugins_manager_registers_our_listener_with_lazy_provider_discovery(tmp_path):
    dist = tmp_path / "airflow_secure_mail_entry_points-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: airflow-secure-mail-entry-points\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(_entry_points_txt())
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found == {
        "lazy": True,
        "lazy_conf": True,
        "core": ["airflow_secure_mail.listeners.plugin.SecureMailListener"],
        "task_runner": ["airflow_secure_mail.listeners.plugin.SecureMailListener"],
    }
