"""Small builders shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from types import SimpleNamespace
from typing import Any


def window(hours: float = 1) -> tuple[datetime, datetime]:
    """An archive interval ``[now - hours, now + hours)``: it holds everything a test archives now."""
    now = datetime.now(UTC)
    return now - timedelta(hours=hours), now + timedelta(hours=hours)


def plain_message(*to: str, subject: str = "test", body: str = "body") -> EmailMessage:
    """A one-part text message from airflow@example.com (to ops@example.com when no recipient is given)."""
    msg = EmailMessage()
    msg["From"] = "airflow@example.com"
    msg["To"] = ", ".join(to or ("ops@example.com",))
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def alert_context(exception: BaseException | None = None, **ti_fields: Any) -> dict[str, Any]:
    """The Airflow context a notifier gets for a failed task ``sales.load`` (``ti_fields`` override the task)."""
    fields: dict[str, Any] = {
        "dag_id": "sales",
        "task_id": "load",
        "run_id": "manual__1",
        "map_index": -1,
        "try_number": 1,
        "max_tries": 0,
        "state": "failed",
        "log_url": None,
        **ti_fields,
    }
    ti = SimpleNamespace(**fields)
    return {"ti": ti, "dag": SimpleNamespace(dag_id=ti.dag_id), "run_id": ti.run_id, "exception": exception}


def audit_paths(bao: Any, since: int, operation: str | None = None) -> list[str]:
    """The request paths OpenBao's audit log shows after entry ``since``, in order (only ``operation`` if given)."""
    return [
        r["request"]["path"]
        for r in bao.audit_requests()[since:]
        if operation is None or r["request"]["operation"] == operation
    ]


def modules_loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter loads running ``code`` after ``import airflow.sdk`` (what a DAG file pays)."""
    probe = f"import sys, json; import airflow.sdk; before = set(sys.modules)\n{code}\n"
    probe += "print(json.dumps(sorted(set(sys.modules) - before)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def create_transit_key(bao: Any, name: str) -> str:
    """Create the Transit key ``name`` in OpenBao and drop every cached data key (a fresh start for sealing)."""
    from airflow_secure_mail.archive.crypto import TransitSealer

    bao.client().secrets.transit.create_key(name=name)
    TransitSealer.forget_keys()
    return name


def numbered_request(n: int = 0, **fields: Any) -> Any:
    """A request to ``r<n>@example.com`` whose Message-ID seed stands for one task instance (a retry reuses it)."""
    from airflow_secure_mail.mail.compose import MailRequest

    values: dict[str, Any] = {
        "sender": "airflow@example.com",
        "to": (f"r{n}@example.com",),
        "subject": f"report {n}",
        "text": "Quarterly numbers attached.\n",
        "id_seed": f"dag|task|run|{n}",
    }
    return MailRequest(**(values | fields))


def numbered_outgoing(n: int, tag: str = "m") -> list[Any]:
    """``n`` small wire-ready copies, each to its own ``ops+<tag><i>@example.com`` with its own Message-ID."""
    from airflow_secure_mail.mail.outgoing import Outgoing

    return [
        Outgoing(
            sender="airflow@example.com",
            recipients=(f"ops+{tag}{i}@example.com",),
            data=f"Message-ID: <{tag}{i}@test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n".encode(),
            message_id=f"<{tag}{i}@test>",
        )
        for i in range(n)
    ]
