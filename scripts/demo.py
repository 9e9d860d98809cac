"""`make demo`: start the embedded services, run the example DAGs for real, print what happened.

Exits non-zero on any failure. Every secret is generated here and lives only in the dev Vault.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import secrets
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"


def _line(label: str, value: object) -> None:
    print(f"  {label:<22} {value}")


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    home = tempfile.mkdtemp(prefix="asm-demo-airflow-")
    from airflow_secure_mail.testing.airflow_home import prepare_airflow_home

    print("== airflow-secure-mail demo ==")
    print("starting: OpenBao dev server, TLS SMTP catcher (throwaway CA), Airflow home (SQLite)")
    prepare_airflow_home(home, str(ROOT / "dags"), log_level="WARNING")

    from airflow_secure_mail.testing.openbao import OpenBaoDevServer
    from airflow_secure_mail.testing.smtp import SmtpCatcher

    password = secrets.token_urlsafe(24)
    bao = OpenBaoDevServer().start()
    smtp = SmtpCatcher(users={"airflow": password}).start()
    failures = 0
    try:
        bao.client().secrets.kv.v2.create_or_update_secret(
            path="smtp/airflow", secret={"username": "airflow", "password": password}
        )
        os.environ["AIRFLOW_CONN_VAULT_DEFAULT"] = json.dumps(bao.connection_uri())
        os.environ["AIRFLOW_CONN_SECURE_SMTP_DEFAULT"] = json.dumps(
            {
                "conn_type": "secure_smtp",
                "host": "localhost",
                "port": smtp.port(starttls=True),
                "extra": smtp.connection_extra(
                    starttls=True, vault_secret_path="smtp/airflow", from_email="airflow@example.com"
                ),
            }
        )
        _line("Vault", f"{bao.url} (dev, KV v2 secret/smtp/airflow)")
        _line("SMTP", f"localhost:{smtp.port(starttls=True)} STARTTLS, AUTH required, CA pinned")

        from airflow_secure_mail.hooks.smtp import SecureSmtpHook

        ok, detail = SecureSmtpHook().test_connection()
        print(f"\n-- connection test: {'OK' if ok else 'FAILED'}")
        _line("detail", detail)
        failures += 0 if ok else 1

        os.environ["SECURE_MAIL_REPORT_BASE"] = f"file://{WORK}/reports"
        for filename, dag_id, expect in [
            ("secure_mail_hello.py", "secure_mail_hello", "success"),
            ("secure_mail_weekly_report.py", "secure_mail_weekly_report", "success"),
            ("secure_mail_per_recipient.py", "secure_mail_per_recipient", "success"),
            ("secure_mail_failure_alert.py", "secure_mail_failure_alert", "failed"),
        ]:
            failures += _run_dag(filename, dag_id, smtp, expect)
    except Exception:
        traceback.print_exc()
        failures += 1
    finally:
        smtp.stop()
        bao.stop()
        shutil.rmtree(home, ignore_errors=True)
    print("\n== demo", "FAILED ==" if failures else "passed ==")
    return 1 if failures else 0


def _run_dag(filename: str, dag_id: str, smtp: object, expect: str = "success") -> int:
    import runpy

    from airflow_secure_mail.testing.smtp import SmtpCatcher

    assert isinstance(smtp, SmtpCatcher)
    before = len(smtp.messages)
    namespace = runpy.run_path(str(ROOT / "dags" / filename))
    dag = next(v for v in namespace.values() if getattr(v, "dag_id", None) == dag_id and hasattr(v, "test"))
    print(f"\n-- DAG {dag_id}: running with dag.test()")
    run = dag.test()
    state = str(run.state)
    _line("state", f"{state}" + (" (as intended: the alert below is the point)" if expect == "failed" else ""))
    for index, received in enumerate(smtp.messages[before:], start=1):
        stored = WORK / "received" / f"{dag_id}-{index}.eml"
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(received.data)
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        message_id, subject = parsed["Message-ID"], " ".join(str(parsed["Subject"]).split())
        _line("recipient(s)", ", ".join(received.rcpt_tos))
        _line("subject", subject)
        _line("TLS", f"{received.tls_version} {received.cipher}")
        _line("AUTH identity", received.auth_identity)
        _line("Message-ID", message_id)
        _line("received copy", stored.relative_to(ROOT))
    return 0 if state.endswith(expect) and len(smtp.messages) > before else 1


if __name__ == "__main__":
    sys.exit(main())
