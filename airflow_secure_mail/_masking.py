"""Register secrets with Airflow's masker so they never reach a task log, a rendered template or XCom."""

from __future__ import annotations

from typing import Any


def mask(value: Any, name: str | None = None) -> None:
    """Mask every non-trivial string in ``value`` (a string or a dict of them)."""
    if isinstance(value, dict):
        for key, item in value.items():
            mask(item, key)
        return
    if not isinstance(value, str | bytes) or len(value) < 5:
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow < 3.1
        from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]
    mask_secret(text, name)
    if "\n" in text:
        # PEM/armored keys: a log line may carry one line of the block, so each is a secret of its own
        for line in text.splitlines():
            line = line.strip()
            if len(line) >= 16 and not line.startswith("-----") and ": " not in line:
                mask_secret(line, name)
