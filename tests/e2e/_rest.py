"""A small client for Airflow's public REST API (/api/v2) with a JWT from the simple auth manager."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests


class AirflowRest:
    """Logs in with ``POST /auth/token`` and sends ``Authorization: Bearer`` on every call."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        reply = self.session.post(
            f"{self.base}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        reply.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def call(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        reply = self.session.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)
        if reply.status_code not in expect:
            raise AssertionError(f"{method} {path} -> {reply.status_code}: {reply.text[:2000]}")
        return reply.json() if reply.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params or None)

    def hook_meta(self) -> dict[str, dict[str, Any]]:
        """What the UI's connection form is built from (``/ui/connections/hook_meta``), by connection type."""
        reply = self.session.get(f"{self.base}/ui/connections/hook_meta", timeout=60)
        reply.raise_for_status()
        return {item["connection_type"]: item for item in reply.json() if item.get("connection_type")}

    # -- connections -------------------------------------------------------------------------------------
    def create_connection(self, body: dict[str, Any]) -> Any:
        return self.call("POST", "/connections", json=body)

    def test_connection(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "/connections/test", json=body))

    def connection(self, conn_id: str) -> dict[str, Any]:
        return dict(self.get(f"/connections/{conn_id}"))

    # -- DAGs and runs -----------------------------------------------------------------------------------
    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.get("/dags", limit=100)["dags"]}

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not dag_ids <= self.dag_ids():
            if time.monotonic() > deadline:
                errors = self.get("/importErrors")
                raise AssertionError(f"DAGs not parsed: {sorted(dag_ids - self.dag_ids())}; import errors: {errors}")
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """A manual run with no logical date, as the UI's and the CLI's trigger create it."""
        run = self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 420) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} {run_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(2)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        entry = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
            map_index=map_index,
            deserialize="true",
        )
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[dict[str, Any]]:
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "only_failed": False}
        return list(self.call("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)["task_instances"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """A task try's log as text (one line per structured event)."""
        reply = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            map_index=map_index,
            full_content="true",
        )
        content = reply.get("content")
        if isinstance(content, str):
            return content
        lines = []
        for item in content or []:
            if isinstance(item, dict):
                detail = item.get("error_detail")
                lines.append(f"{item.get('level', '')} {item.get('event', '')}" + (f" {detail}" if detail else ""))
            else:
                lines.append(str(item))
        return "\n".join(lines)

    # -- human-in-the-loop (Airflow 3.3: api_fastapi/core_api/routes/public/hitl.py) ---------------------
    def hitl_detail(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any] | None:
        """The task's HITL request (subject, options, response), or None while the task has made none."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
        found = self.call("GET", path, expect=(200, 404))
        return dict(found) if found and "subject" in found else None

    def respond(
        self, dag_id: str, run_id: str, task_id: str, options: list[str], map_index: int = -1
    ) -> dict[str, Any]:
        """Answer a HITL request as the logged-in user (what the UI's Required Actions page sends)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
        return dict(self.call("PATCH", path, json={"chosen_options": options}))

    def answer_if_asked(
        self, dag_id: str, run_id: str, task_id: str, options: list[str], parked: Callable[[], bool] | None = None
    ) -> bool:
        """Answer the request once the task waits for it; True when it is answered (now or before).

        ``parked``: True once the scheduler has handled the exit of the process that parked the task. Airflow
        3.3.2 fails a task answered before that: the answer re-queues it, then the parked process's "success"
        arrives for the same try and the scheduler marks it failed ("state changed externally").
        """
        detail = self.hitl_detail(dag_id, run_id, task_id)
        if detail is None:
            return False
        if detail.get("response_received"):
            return True
        state = (detail.get("task_instance") or {}).get("state")
        if state not in ("awaiting_input", "deferred") or (parked is not None and not parked()):
            return False
        self.respond(dag_id, run_id, task_id, options)
        return True

    def answer_when_asked(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        options: list[str],
        parked: Callable[[], bool] | None = None,
        timeout: float = 300,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not self.answer_if_asked(dag_id, run_id, task_id, options, parked):
            run = self.run(dag_id, run_id)
            if run["state"] in ("success", "failed") or time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} {run_id} ({run['state']}): {task_id} never asked for input")
            time.sleep(2)
