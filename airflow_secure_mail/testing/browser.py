"""Debian's headless Chromium for rendering tests: the flags that keep it off the network, and one render call."""

from __future__ import annotations

import subprocess
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Without the background-networking flags Chromium keeps dialling out of a closed network at every start."""


def render(page: Path, screenshot: Path, *, width: int, height: int, profile: Path) -> str:
    """The DOM of ``page`` after Chromium rendered it, with a PNG screenshot kept at ``screenshot``."""
    result = subprocess.run(
        [
            "chromium",
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile}",
            f"--screenshot={screenshot}",
            f"--window-size={width},{height}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stdout
