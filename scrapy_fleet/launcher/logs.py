"""What the launcher still reads from a worker's log, which is written for humans.

Its last lines, shown when the launcher gives up on a worker; and the fault it stopped
on, only when it could not record that in Redis (scrapy_fleet.launcher.outcomes).
"""

from __future__ import annotations

import re
from pathlib import Path

from scrapy_fleet.launcher.workers import RUN_MARK


def _last_run(path: Path | None) -> str:
    """The part of a slot's log written by its last run ("" if there is none)."""
    try:
        text = path.read_text("utf-8", "replace") if path else ""
    except OSError:
        return ""
    return text.rsplit(RUN_MARK, 1)[-1]


def logged_fault(path: Path | None) -> str | None:
    """The fault the worker's last run stopped on, as it logged it (the last scrapy-fleet error)."""
    run = _last_run(path)
    found = re.findall(r"scrapy-fleet: this worker stopped: (.*)", run) or \
        re.findall(r"scrapy-fleet: (.*)", run)
    return found[-1].strip() if found else None


def log_tail(path: Path | None, lines: int = 5) -> str:
    """The last non-blank lines of a log, indented for the terminal."""
    try:
        text = path.read_text("utf-8", "replace") if path else ""
    except OSError:
        return ""
    last = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("    | " + line[:200] for line in last)

