"""Headless Chromium (Debian's ``chromium`` package) for looking at a report as a person would.

Each run gets a fresh profile directory and every flag that keeps Chromium off the network and
quiet: the report must open with no network at all.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_HINT = "chromium is missing: apt-get install -y chromium (Debian's package)"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--disable-extensions", "--mute-audio",
)
TIMEOUT_S = 90


def chromium() -> str:
    """The chromium binary; fails the test (never skips) with the install hint."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(INSTALL_HINT, pytrace=False)


def _run(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


def screenshot(page: Path, out: Path, profile: Path, width: int = 1280, height: int = 3000) -> Path:
    """Open ``page`` and save a ``width`` x ``height`` screenshot of it to ``out``."""
    _run(page, profile, f"--window-size={width},{height}", f"--screenshot={out}")
    assert out.is_file(), "chromium wrote no screenshot"
    return out


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after it loaded (scripts run), serialised."""
    return _run(page, profile, "--virtual-time-budget=5000", "--dump-dom").stdout
