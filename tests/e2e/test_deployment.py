"""A user's deployment, checked from the outside: REST API, the UI in Chromium, the SMTP server, S3, Vault, logs.

Every test runs once per deployment (LocalExecutor, then CeleryExecutor with two workers), in file order.
"""

from __future__ import annotations

import base64
import email.policy
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from typing import Any

import pytest

from tests.e2e._forms import provider_connection_type, ui_add_body, ui_test_body, vault_path_field
from tests.e2e.conftest import ARTIFACTS, BUSY, E2E_DAGS, EXAMPLE_DAGS, SETUP_OUTPUTS, Deployed

OURS = provider_connection_type()


def _message_id(data: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(data)["Message-ID"] or "").strip()


def _received(smtp: Any) -> list[tuple[str, str, bytes]]:
    """(Message-ID, recipient, bytes) for every envelope recipient of every accepted transaction."""
    return [(_message_id(m.data), rcpt, m.data) for m in list(smtp.messages) for rcpt in m.rcpt_tos]


# -- the provider and its connections ---------------------------------------------------------------------


def test_provider_loads_without_warning(deployment: Deployed) -> None:
    output = deployment.airflow.component_output()
    assert "shall not contain" not in output, "Airflow warned about our connection type name"
    assert OURS["connection-type"] in deployment.hook_meta


def test_providers_page_links_to_our_documentation(deployment: Deployed) -> None:
    """Issue 21, item 17: the Providers page's link comes from the wheel's Project-URL "Documentation"."""
    providers = deployment.rest.get("/providers")["providers"]
    ours = next(p for p in providers if p["package_name"] == "airflow-secure-mail")
    assert ours["documentation_url"] == "https://pypi.org/project/airflow-secure-mail/"


def test_connections_created_with_the_ui_payload_read_back_unmasked(deployment: Deployed) -> None:
    body = deployment.connection_bodies["secure_smtp_default"]
    stored = deployment.rest.connection("secure_smtp_default")
    assert stored["conn_type"] == OURS["connection-type"]
    assert None in json.loads(body["extra"]).values(), "the UI payload carries nulls for empty fields"
    extra = json.loads(stored["extra"])
    assert extra[vault_path_field()] == json.loads(body["extra"])[vault_path_field()]


def test_rest_connection_test_passes_with_the_ui_payload(deployment: Deployed) -> None:
    """The test endpoint gets what the Add form saved (nulls included), as a REST client would resend it."""
    body = dict(deployment.connection_bodies["secure_smtp_default"])
    verdict = deployment.rest.test_connection(body)
    assert verdict["status"] is True, verdict["message"]


def test_rest_connection_test_passes_with_the_list_payload(deployment: Deployed) -> None:
    """The list's Test button resends the connection as read back from the API (masked values included)."""
    stored = deployment.rest.connection("secure_smtp_default")
    verdict = deployment.rest.test_connection(ui_test_body(stored))
    assert verdict["status"] is True, verdict["message"]


def test_ui_add_connection_and_test_shows_success(deployment: Deployed, smtp: Any, vault: Any) -> None:
    if deployment.name != "local":
        pytest.skip("the UI is driven once, on the LocalExecutor deployment")
    from tests.e2e._ui import add_connection, browser_page, log_in, test_connection_in_list

    conn_id = "smtp_from_ui"
    standard = {"host": "localhost", "port": str(smtp.starttls_port)}
    extra = {vault_path_field(): vault.smtp_path}
    with browser_page() as page:
        log_in(page, deployment.airflow.api_url, "admin", deployment.airflow.admin_password)
        posted = add_connection(
            page,
            conn_id,
            OURS["hook-name"],
            standard={"Host": standard["host"], "Port": standard["port"]},
            extra=extra,
            screenshot=ARTIFACTS / "ui-add-secure-smtp-connection.png",
        )
        expected = ui_add_body(
            deployment.hook_meta[OURS["connection-type"]],
            conn_id,
            standard={"host": "localhost", "port": smtp.starttls_port},
            extra=extra,
        )
        assert posted == expected, "the REST checks must send what the browser sends"
        verdict, toast = test_connection_in_list(page, conn_id, ARTIFACTS / "ui-test-secure-smtp-connection.png")
    assert verdict["status"] is True, verdict["message"]
    assert "Test Connection Successful" in toast


def test_ui_test_of_a_connection_with_a_stored_password_names_no_random_id(deployment: Deployed, smtp: Any) -> None:
    """Issue 21, item 14: Airflow tests a copy under a random id; the toast must say what to fix, not that id."""
    if deployment.name != "local":
        pytest.skip("the UI is driven once, on the LocalExecutor deployment")
    from tests.e2e._ui import browser_page, log_in, open_connections, test_connection_in_list

    conn_id = "smtp_with_password"
    body = ui_add_body(
        deployment.hook_meta[OURS["connection-type"]],
        conn_id,
        standard={"host": "localhost", "port": smtp.starttls_port},
        extra={vault_path_field(): "smtp/airflow"},
    )
    deployment.rest.create_connection({**body, "login": "airflow", "password": "stored-" + secrets.token_hex(8)})
    with browser_page() as page:
        log_in(page, deployment.airflow.api_url, "admin", deployment.airflow.admin_password)
        open_connections(page, deployment.airflow.api_url)
        verdict, toast = test_connection_in_list(page, conn_id, ARTIFACTS / "ui-test-stored-password.png")
    expected = (
        "this connection stores a login or password: remove them and put the credentials in Vault "
        "(extra vault_path, fields username and password)."
    )
    assert verdict["status"] is False
    assert expected in verdict["message"], verdict["message"]
    assert expected in toast, toast


# -- the documented setup command ------------------------------------------------------------------------


def _setup_items(output: str) -> dict[str, str]:
    """Item → status from the setup command's ``  STATUS  what  detail`` lines."""
    items = {}
    for line in output.splitlines():
        status, _, rest = line.strip().partition(" ")
        if status in ("OK", "CREATED", "TODO", "FAIL"):
            items[rest.strip().split("  ")[0]] = status
    return items


def test_documented_setup_command_creates_what_the_examples_need_once(deployment: Deployed, vault: Any) -> None:
    """The Vault starts without Transit or keys; the first run creates them, a later run finds them all OK."""
    output = deployment.notes["setup"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"setup-{deployment.name}.txt").write_text(output)
    assert vault.server.root_token not in output and vault.token not in output
    items = _setup_items(output)
    expected = ["Transit engine at transit/", "Transit key mail-archive", "SMTP credentials", "freeze switch"]
    assert list(items)[:5] == [*expected, "signing keys"] and "recipient key board@example.com" in items, output
    assert items["SMTP credentials"] == "OK", output  # the team stored it; setup never invents one
    assert items["freeze switch"] == "OK", output  # the incident kill switch is readable, nothing frozen
    created = {what for what, status in items.items() if status == "CREATED"}
    if output is SETUP_OUTPUTS[0]:
        assert created == set(items) - {"SMTP credentials", "freeze switch"}, output
        assert "TEST KEYS" in output
    else:
        assert set(items.values()) == {"OK"}, output  # idempotent: the second deployment changes nothing
    key = vault.server.client().secrets.transit.read_key(name="mail-archive")["data"]
    assert key["type"] == "aes256-gcm96"


# -- DAG runs ---------------------------------------------------------------------------------------------
EXPECTED_STATE = {
    "secure_mail_failure_alert": "failed",
    "e2e_legacy_email": "failed",
    "secure_mail_alert_storm": "failed",
}


@pytest.mark.parametrize(
    "dag_id",
    EXAMPLE_DAGS + E2E_DAGS,
)
def test_dag_triggered_without_logical_date_finishes_as_expected(finished_runs: Deployed, dag_id: str) -> None:
    run = finished_runs.rest.run(dag_id, finished_runs.runs[dag_id])
    assert run["logical_date"] is None
    expected = EXPECTED_STATE.get(dag_id, "success")
    if run["state"] != expected:
        failed = [
            (ti["task_id"], ti["map_index"], ti["state"])
            for ti in finished_runs.rest.task_instances(dag_id, run["dag_run_id"])
            if ti["state"] != "success"
        ]
        log = _first_failed_log(finished_runs, dag_id, run["dag_run_id"])
        raise AssertionError(f"{dag_id}: {run['state']} (expected {expected}); tasks {failed}\n{log[-3000:]}")


def _first_failed_log(d: Deployed, dag_id: str, run_id: str) -> str:
    for ti in d.rest.task_instances(dag_id, run_id):
        if ti["state"] not in ("success", "skipped"):
            return d.rest.task_log(dag_id, run_id, ti["task_id"], max(ti["try_number"], 1), ti["map_index"])
    return ""


def test_scheduler_creates_a_scheduled_backup_run_that_succeeds(finished_runs: Deployed) -> None:
    scheduled = [r for r in finished_runs.rest.runs("secure_mail_backup_restore") if r["run_type"] == "scheduled"]
    assert scheduled, "the scheduler created no scheduled backup run"
    states = {r["dag_run_id"]: r["state"] for r in scheduled}
    if any(s != "success" for s in states.values()):
        run_id = next(k for k, v in states.items() if v != "success")
        log = _first_failed_log(finished_runs, "secure_mail_backup_restore", run_id)
        raise AssertionError(f"scheduled backup runs {states}\n{log[-3000:]}")


def test_backup_after_sending_restores_the_bytes_that_were_sent(finished_runs: Deployed, smtp: Any, s3: Any) -> None:
    """A manual run with no conf takes everything since the newest bundle: the mail archived meanwhile."""
    rest = finished_runs.rest
    run_id = rest.trigger("secure_mail_backup_restore")
    run = rest.wait_for_run("secure_mail_backup_restore", run_id)
    assert run["state"] == "success", _first_failed_log(finished_runs, "secure_mail_backup_restore", run_id)[-3000:]
    restored = _objects(s3, finished_runs.bucket, "restored/", ".eml")  # SECURE_MAIL_RESTORE_TO: shared storage
    assert len(restored) >= 4 + 3, "the mapped and per-recipient sends were not restored"
    sent = {m.data for m in smtp.messages}
    for key, data in restored.items():
        assert data in sent, f"{key} differs from every message the SMTP server received"


def _objects(s3: Any, bucket: str, prefix: str, suffix: str) -> dict[str, bytes]:
    client = s3.client()
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
        if obj["Key"].endswith(suffix)
    ]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_every_mail_delivered_exactly_once(finished_runs: Deployed, smtp: Any) -> None:
    received = _received(smtp)
    pairs = [(mid, rcpt) for mid, rcpt, _ in received]
    duplicates = {p for p in pairs if pairs.count(p) > 1}
    assert not duplicates, f"delivered more than once: {sorted(duplicates)}"
    assert all(mid for mid, _ in pairs), "a message without Message-ID"
    seen = {mid for mid, _ in pairs}
    rest = finished_runs.rest
    for dag_id in EXAMPLE_DAGS + E2E_DAGS:
        for run in rest.runs(dag_id):
            for ti in rest.task_instances(dag_id, run["dag_run_id"]):
                if ti["state"] != "success" or ti["operator"] != "SecureEmailOperator":
                    continue
                sent = rest.xcom(dag_id, run["dag_run_id"], ti["task_id"], ti["map_index"])
                missing = set(sent["message_ids"]) - seen
                assert not missing, f"{dag_id}/{ti['task_id']}[{ti['map_index']}] reported unsent {missing}"


def test_mapped_tasks_archive_every_copy_sealed_with_transit(finished_runs: Deployed, smtp: Any, s3: Any, vault: Any):
    run_id = finished_runs.runs["e2e_mapped_archive"]
    records = _archive_records(s3, finished_runs.bucket, "e2e_mapped_archive", run_id)
    assert sorted(r["envelope"]["recipients"][0] for r in records) == [f"mapped{n}@example.com" for n in range(4)]
    by_id = {mid: data for mid, _, data in _received(smtp)}
    client = s3.client()
    for record in records:
        assert record["status"] == "sent"
        assert record["encryption"]["transit_key"] == "mail-archive"
        prefix = record["_prefix"]
        stored = client.get_object(Bucket=finished_runs.bucket, Key=f"archive/{prefix}.eml")["Body"].read()
        assert b"Mapped report" not in stored, "archived copy is not sealed"
        assert _unseal(vault, stored, record) == by_id[record["message_id"]], "archive differs from what was sent"


def _archive_records(s3: Any, bucket: str, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    client = s3.client()
    out = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="archive/messages/")
    for page in pages:
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if not key.endswith(".json") or key.endswith(".pending.json") or ".failed-" in key:
                continue
            meta = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            origin = meta.get("airflow") or {}
            if origin.get("dag_id") == dag_id and origin.get("run_id") == run_id:
                meta["_prefix"] = key.removeprefix("archive/").removesuffix(".json")
                out.append(meta)
    return out


def _unseal(vault: Any, stored: bytes, record: dict[str, Any]) -> bytes:
    """Open a sealed record independently: Transit unwraps the data key, AES-256-GCM with the key as AAD."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    magic = b"ASM-AESGCM-1\n"
    assert stored.startswith(magic)
    plain = vault.server.client().secrets.transit.decrypt_data(
        name="mail-archive", ciphertext=record["encryption"]["wrapped_key"]
    )["data"]["plaintext"]
    nonce, body = stored[len(magic) : len(magic) + 12], stored[len(magic) + 12 :]
    return AESGCM(base64.b64decode(plain)).decrypt(nonce, body, record["key"].encode())


def test_retry_after_partial_refusal_sends_only_what_was_missing(finished_runs: Deployed, smtp: Any) -> None:
    run_id = finished_runs.runs["e2e_partial_refusal"]
    (ti,) = finished_runs.rest.task_instances("e2e_partial_refusal", run_id)
    assert ti["state"] == "success"
    assert ti["try_number"] == 2, "the refusal should have failed the first try and Airflow retried it"
    subject = f"Per-recipient notice {run_id}".encode()
    copies = [rcpt for m in smtp.messages if subject in m.data for rcpt in m.rcpt_tos]
    assert sorted(copies) == sorted(["keep1@example.com", BUSY, "keep2@example.com"])
    first = finished_runs.rest.task_log("e2e_partial_refusal", run_id, "send_each", 1)
    second = finished_runs.rest.task_log("e2e_partial_refusal", run_id, "send_each", 2)
    assert "not sent:" in first, first[-2000:]
    assert second.count("already sent by an earlier try") == 2, second[-2000:]
    assert "1 message(s) sent, 2 already sent earlier" in second, second[-2000:]


def test_failure_alert_arrives_from_a_worker(finished_runs: Deployed, smtp: Any) -> None:
    run_id = finished_runs.runs["secure_mail_failure_alert"]
    alerts = [m for m in smtp.messages if "oncall@example.com" in m.rcpt_tos and run_id.encode() in m.data]
    assert len(alerts) == 1, f"{len(alerts)} alerts for {run_id}"
    assert b"load_warehouse" in alerts[0].data
    if finished_runs.name == "celery":
        workers = "".join(
            finished_runs.airflow.component_log(f"celery-worker-{n}").read_text(errors="replace") for n in (1, 2)
        )
        assert "secure_mail_failure_alert" in workers, "the failing task did not run on a Celery worker"


def test_alert_storm_through_the_scheduler_sends_exactly_one_digest(finished_runs: Deployed, smtp: Any) -> None:
    """20 mapped tasks fail (each after a retry) on the deployment's workers: one digest, however they race."""
    rest = finished_runs.rest
    storm = rest.run("secure_mail_alert_storm", finished_runs.runs["secure_mail_alert_storm"])
    assert storm["state"] == "failed"
    ended = datetime.fromisoformat(storm["end_date"].replace("Z", "+00:00"))
    time.sleep(max(0.0, (ended + timedelta(seconds=21) - datetime.now(UTC)).total_seconds()))  # past group_wait
    flush = rest.trigger("secure_mail_alert_digest_flush")  # what the every-5-minutes flush run does
    assert rest.wait_for_run("secure_mail_alert_digest_flush", flush)["state"] == "success"
    unfolded = BytesHeaderParser(policy=email.policy.default)  # policy.SMTP folds a long Subject onto its own line
    subjects = [(m, str(unfolded.parsebytes(m.data)["Subject"]).strip()) for m in list(smtp.messages)]
    digests = [m for m, subject in subjects if subject.startswith("[Airflow]") and "secure_mail_alert_storm" in subject]
    assert len(digests) == 1, f"{len(digests)} digest mails for the storm; subjects seen: {[s for _, s in subjects]}"
    assert digests[0].rcpt_tos == ["oncall@example.com"]
    assert b"load_partition" in digests[0].data


def test_legacy_email_backend_delivers_email_on_failure(finished_runs: Deployed, smtp: Any) -> None:
    legacy = [m for m in smtp.messages if "legacy-alerts@example.com" in m.rcpt_tos]
    assert len(legacy) == 1, f"{len(legacy)} legacy alert mails"
    assert legacy[0].tls_version in ("TLSv1.2", "TLSv1.3")
    assert b"nightly_export" in legacy[0].data


def test_clearing_a_mapped_task_sends_nothing_again(finished_runs: Deployed, smtp: Any) -> None:
    rest = finished_runs.rest
    run_id = finished_runs.runs["e2e_mapped_archive"]
    before = len(smtp.messages)
    cleared = rest.clear("e2e_mapped_archive", run_id, ["send_mapped"])
    assert len(cleared) == 4
    run = rest.wait_for_run("e2e_mapped_archive", run_id)
    assert run["state"] == "success"
    tis = rest.task_instances("e2e_mapped_archive", run_id)
    assert all(ti["try_number"] == 2 for ti in tis), [(ti["map_index"], ti["try_number"]) for ti in tis]
    assert len(smtp.messages) == before, "a cleared mapped task sent its message again"
    for ti in tis:
        result = rest.xcom("e2e_mapped_archive", run_id, "send_mapped", ti["map_index"])
        assert result["already_sent"] == 1
    log = rest.task_log("e2e_mapped_archive", run_id, "send_mapped", 2, map_index=0)
    assert "nothing sent" in log and "message(s) sent" not in log, log[-2000:]


def _attachments(smtp: Any, subject: str) -> dict[str, Any]:
    from email import message_from_bytes, policy

    sent = [m for m in smtp.messages if subject.encode() in m.data]
    assert len(sent) == 1, f"{len(sent)} messages with subject {subject!r}"
    message = message_from_bytes(sent[0].data, policy=policy.default)
    return {part.get_filename(): part.get_content() for part in message.iter_attachments()}


def test_attachment_path_ending_in_txt_is_sent_as_a_file(finished_runs: Deployed, smtp: Any) -> None:
    files = _attachments(smtp, f"Report {finished_runs.runs['e2e_attachments']}")
    assert list(files) == ["report.txt"]
    assert "{{ not a template }}" in files["report.txt"], "the attachment was rendered as a template"


def test_attachment_path_ending_in_html_is_sent_as_a_file(finished_runs: Deployed, smtp: Any) -> None:
    files = _attachments(smtp, f"Summary {finished_runs.runs['e2e_html_attachment']}")
    assert list(files) == ["summary.html"]
    assert "<p>3 rows</p>" in files["summary.html"]


# -- operations -------------------------------------------------------------------------------------------


def test_doctor_passes_against_a_database_connection(deployment: Deployed) -> None:
    done = deployment.airflow.run(
        str(deployment.airflow.venv / "bin" / "airflow-secure-mail"),
        "doctor",
        "--conn-id",
        "secure_smtp_default",
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "PASS" in output and "TLS negotiated" in output
    assert "FAIL" not in done.stdout


def test_no_secret_in_logs_or_metadata_database(deployment: Deployed, smtp: Any, vault: Any, s3: Any, postgres):
    secrets = {
        "SMTP password": smtp.users["airflow"],
        "Vault token": vault.token,
        "Vault root token": vault.server.root_token,
        "AppRole secret id": vault.secret_id,
        "S3 secret key": s3.secret_key,
    }
    logs = deployment.airflow.logs
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert any("e2e_mapped_archive" in str(p) for p in files), "no task logs were written"
    for path in files:
        text = path.read_text(errors="replace")
        leaked = [what for what, value in secrets.items() if value in text]
        assert not leaked, f"{leaked} in {path}"
    dump = postgres.dump(f"airflow_{deployment.name}")
    assert "e2e_mapped_archive" in dump
    leaked = [what for what, value in secrets.items() if value in dump]
    assert not leaked, f"{leaked} in pg_dump of the metadata database"
