"""A throwaway AIRFLOW_HOME with SQLite, migrated once, so DAGs run with ``dag.test()``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def airflow_env(
    home: str | os.PathLike[str], dags_folder: str | None = None, *, log_level: str = "INFO"
) -> dict[str, str]:
    """Environment variables that point Airflow at ``home`` (call before importing airflow)."""
    home = str(home)
    env = {
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": log_level,
    }
    if dags_folder:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = dags_folder
    return env


def prepare_airflow_home(
    home: str | os.PathLike[str], dags_folder: str | None = None, *, log_level: str = "INFO"
) -> dict[str, str]:
    """Set the environment for ``home`` in this process and migrate its SQLite database once."""
    Path(home).mkdir(parents=True, exist_ok=True)
    env = airflow_env(home, dags_folder, log_level=log_level)
    os.environ.update(env)
    if not Path(home, "airflow.db").exists() or not Path(home, ".migrated").exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        Path(home, ".migrated").touch()
    return env
