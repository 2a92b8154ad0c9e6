"""Small text helpers shared by the launcher's messages, progress line and reports."""

from __future__ import annotations

import signal
from datetime import datetime


def signal_name(returncode: int) -> str:
    """``exit status 3`` or ``signal 9 (SIGKILL)`` for a child's return code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"signal {-returncode} ({name})"
    return f"exit status {returncode}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def number(text: str | None) -> float:
    """A number from the crawl's state in Redis; 0 for anything else (junk included)."""
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def when(stamp: str | None) -> str:
    """A Unix time (as Redis holds it) as local date and time, whatever junk it is."""
    try:
        return datetime.fromtimestamp(float(stamp or "")).isoformat(sep=" ", timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return "at an unknown time"
