"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def window(hours: float = 1) -> tuple[datetime, datetime]:
    """An archive interval ``[now - hours, now + hours)``: it holds everything a test archives now."""
    now = datetime.now(UTC)
    return now - timedelta(hours=hours), now + timedelta(hours=hours)
