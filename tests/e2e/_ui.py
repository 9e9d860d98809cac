"""Drive Airflow's real UI in Debian's headless Chromium with Playwright (no browser download, ever)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow_secure_mail.testing.browser import CHROMIUM, CHROMIUM_ARGS


@contextmanager
def browser_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def log_in(page: Any, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/", wait_until="networkidle")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")


def add_connection(
    page: Any, conn_id: str, hook_name: str, *, standard: dict[str, str], extra: dict[str, str], screenshot: Path
) -> dict[str, Any]:
    """Admin → Connections → Add; fill the given fields only; Save. Returns the body the browser posted."""
    page.get_by_role("button", name="Admin").click()
    page.get_by_role("menuitem", name="Connections").click()
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill(conn_id)
    dialog.get_by_role("combobox").fill(hook_name)
    page.keyboard.press("Enter")
    for label, value in standard.items():
        dialog.get_by_label(label).fill(value)
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for name, value in extra.items():
        # The form's labels are not tied to their inputs (for= differs from id): address inputs by field name.
        dialog.locator(f"input[name='element_{name}']").fill(value)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    dialog.screenshot(path=str(screenshot))
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/v2/connections")) as resp:
        dialog.get_by_role("button", name="Save").click()
    if resp.value.status != 201:
        raise AssertionError(f"Save failed: {resp.value.status} {resp.value.text()}")
    return dict(json.loads(resp.value.request.post_data or "{}"))


def test_connection_in_list(page: Any, conn_id: str, screenshot: Path) -> tuple[dict[str, Any], str]:
    """Press Test on the connection's row; returns the API's verdict and the toast the user sees."""
    row = page.get_by_role("row").filter(has_text=conn_id)
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as resp:
        row.get_by_role("button", name="Test Connection").click()
    toast = page.get_by_role("status").filter(has_text="Test Connection").first
    toast.wait_for()
    text = toast.inner_text()
    page.screenshot(path=str(screenshot))
    return dict(resp.value.json()), text


def open_connections(page: Any, base_url: str) -> None:
    """Admin → Connections (by address: the list reloads with the current settings)."""
    page.goto(f"{base_url}/connections", wait_until="networkidle")


def connection_test_button(page: Any, conn_id: str) -> Any:
    """The Test Connection button on the connection's row of the list."""
    return page.get_by_role("row").filter(has_text=conn_id).get_by_role("button", name="Test Connection")


def trigger_dag(page: Any, base_url: str, dag_id: str, screenshot: Path | None = None) -> dict[str, Any]:
    """The DAG's page → Trigger → (Unpause on trigger stays ticked) → Trigger, as a user does it.

    Returns the body the browser posted (``request``) and the run the API created (``run``). The 3.3 dialog
    pre-fills *Logical Date* with the current time, so the run has a logical date.
    """
    page.goto(f"{base_url}/dags/{dag_id}", wait_until="networkidle")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    button = dialog.get_by_role("button", name="Trigger", exact=True)
    button.wait_for()
    unpause = dialog.get_by_role("checkbox")
    if unpause.count() and not unpause.first.is_checked():
        raise AssertionError(f"{dag_id}: 'Unpause on trigger' is not ticked by default")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        dialog.screenshot(path=str(screenshot))
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/api/v2/dags/{dag_id}/dagRuns")
    ) as resp:
        button.click()
    if resp.value.status not in (200, 201):
        raise AssertionError(f"Trigger of {dag_id} failed: {resp.value.status} {resp.value.text()}")
    return {"request": json.loads(resp.value.request.post_data or "{}"), "run": resp.value.json()}
