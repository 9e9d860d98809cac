"""A real Airflow deployment for the suite: the built wheel in a fresh venv, PostgreSQL, separate components.

Everything a user would run is a separate process started from the fresh venv's ``airflow`` script:
api-server, scheduler, dag-processor, triggerer and, for CeleryExecutor, two ``airflow celery worker``s.
Configuration is environment variables only (``AIRFLOW__SECTION__KEY``), the way containers are set up.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_secure_mail.testing._ports import free_port

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".tools" / "bin" / "uv"
LOCK = ROOT / "constraints" / "lock.txt"
# What a user adds next to the wheel for this deployment; versions come from constraints/lock.txt.
DEPLOY_PACKAGES = ("apache-airflow==3.3.2", "apache-airflow-providers-celery", "psycopg2-binary", "asyncpg")


def build_user_venv(work: Path) -> Path:
    """Build the wheel from this checkout and install it, as a user would, into a new venv under ``work``."""
    dist = work / "dist"
    venv = work / "venv"
    shutil.rmtree(dist, ignore_errors=True)
    shutil.rmtree(venv, ignore_errors=True)
    uv = str(UV) if UV.exists() else shutil.which("uv") or "uv"
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("airflow_secure_mail-*.whl"))
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    subprocess.run(
        [uv, "pip", "install", "--quiet", "-c", str(LOCK), f"{wheel}[s3]", *DEPLOY_PACKAGES],
        check=True,
        capture_output=True,
        env=dict(os.environ, VIRTUAL_ENV=str(venv)),
    )
    return venv


@dataclass
class AirflowDeployment:
    """One Airflow installation: its home, database, executor and running component processes."""

    venv: Path
    home: Path
    dags_folder: Path
    db_url: str
    executor: str  # "LocalExecutor" or "CeleryExecutor"
    extra_env: dict[str, str] = field(default_factory=dict)
    broker_url: str = ""
    celery_workers: int = 2
    # What docs/deploy.md tells a team to set; the first-hour test starts without them and lets the guide add them.
    test_connection: bool = True  # [core] test_connection = Enabled (Airflow ships the Test button disabled)
    email_backend: bool = True  # [email] email_backend/email_conn_id/from_email: our backend for email_on_failure
    admin_password: str = field(default_factory=lambda: "adm-" + secrets.token_urlsafe(16))
    api_port: int = field(default_factory=free_port)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def env(self, **more: str) -> dict[str, str]:
        """The process environment of every component (and of the CLI run against this deployment)."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHON"))}
        env = {
            **keep,
            "PATH": f"{self.venv / 'bin'}:{keep.get('PATH', '/usr/bin:/bin')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            **self._generated_secrets(),
        }
        if self.test_connection:
            env["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
        if self.email_backend:
            env["AIRFLOW__EMAIL__EMAIL_BACKEND"] = "airflow_secure_mail.email_backend.send_email"
            env["AIRFLOW__EMAIL__EMAIL_CONN_ID"] = "secure_smtp_default"
            env["AIRFLOW__EMAIL__FROM_EMAIL"] = "airflow@example.com"
        env.update(self.extra_env)
        if self.executor == "CeleryExecutor":
            env["AIRFLOW__CELERY__BROKER_URL"] = self.broker_url
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + self.db_url
            env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = "4"
        env.update(more)
        return env

    def _generated_secrets(self) -> dict[str, str]:
        """Keys every component must share (JWT, Fernet); made once per deployment and kept in its home."""
        path = self.home / "generated-keys.json"
        if not path.exists():
            from cryptography.fernet import Fernet

            path.write_text(
                json.dumps(
                    {
                        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                    }
                )
            )
            path.chmod(0o600)
        return dict(json.loads(path.read_text()))

    def airflow(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the fresh venv's ``airflow`` CLI against this deployment."""
        return self.run(str(self.venv / "bin" / "airflow"), *args, check=check, timeout=timeout)

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command with the components' environment (plus ``env``), as an operator's shell would."""
        done = subprocess.run(
            list(cmd),
            env=self.env(**(env or {})),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed ({done.returncode}): {done.stderr[-3000:]}")
        return done

    def start(self) -> AirflowDeployment:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.logs / "components").mkdir(parents=True, exist_ok=True)
        pw = self.home / "passwords.json"
        pw.write_text(json.dumps({"admin": self.admin_password}))
        pw.chmod(0o600)
        self.airflow("db", "migrate", timeout=600)
        self._spawn("api-server", "api-server")
        self._spawn("scheduler", "scheduler")
        self._spawn("dag-processor", "dag-processor")
        self._spawn("triggerer", "triggerer")
        if self.executor == "CeleryExecutor":
            for n in range(1, self.celery_workers + 1):
                self._spawn(
                    f"celery-worker-{n}",
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"worker{n}@%h",
                    "--concurrency",
                    "4",
                    env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
                )
        self.wait_healthy()
        return self

    def restart(self, *names: str, **settings: str) -> None:
        """Stop the named components, add ``settings`` to every component's environment, start them again and
        wait until the deployment is healthy (what a team does after changing a setting)."""
        self.extra_env.update(settings)
        for name in names:
            proc = self._procs.pop(name)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for name in names:
            self._spawn(name, name)  # api-server, scheduler, dag-processor, triggerer (not the Celery workers)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Airflow ({self.executor}) not healthy after {timeout:.0f}s; see {self.logs}")
            time.sleep(1)

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = open(self.logs / "components" / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self._procs[name] = subprocess.Popen(
            [str(self.venv / "bin" / "airflow"), *args],
            env=self.env(**(env or {})),
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and every child it forked
        )

    def _healthy(self) -> bool:
        """True once every component heartbeats; raises at once if one of them has exited."""
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                tail = self.component_log(name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"airflow {name} exited ({proc.returncode}):\n{tail}")
        import requests

        try:
            health = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
        except (requests.ConnectionError, requests.Timeout, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def component_log(self, name: str) -> Path:
        return self.logs / "components" / f"{name}.log"

    def parked(self, dag_id: str, run_id: str, task_id: str) -> bool:
        """The scheduler has handled the executor's report on the task's process (its log says "TaskInstance
        Finished" for it): a task parked awaiting input may be answered now (see AirflowRest.answer_if_asked)."""
        line = f"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={run_id},"
        return line in self.component_log("scheduler").read_text(errors="replace")

    def component_output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.logs / "components").glob("*.log")))

    def stop(self) -> None:
        """SIGTERM each component's process group, then SIGKILL what is left after a grace period."""
        for proc in self._procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # children a component forked may outlive it
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._procs.clear()

    def pids(self) -> dict[str, Any]:
        return {name: proc.pid for name, proc in self._procs.items()}
