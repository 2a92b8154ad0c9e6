"""The launcher's terminal: one progress line for the whole crawl, messages above it.

On a terminal the line is redrawn in place (and cleared before each message); otherwise a
plain line is printed every ``interval`` seconds, so a log file does not fill up.
"""

from __future__ import annotations

import time
from collections import deque
from typing import IO, Any

from scrapy_fleet.launcher.formatting import duration, number

RATE_WINDOW = 10.0  # s over which pages/s is measured


class Progress:
    def __init__(self, out: IO[str], spider: str, interval: float) -> None:
        self.out = out
        self.spider = spider
        self.interval = interval
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._rates: deque[tuple[float, int]] = deque()
        self._last_line = 0.0
        self._line_len = 0  # what is drawn on the terminal's last line now

    def say(self, message: str) -> None:
        """A message on its own line (the progress line, if any, is redrawn after it)."""
        self._clear()
        self.out.write(message + "\n")
        self.out.flush()

    def end(self) -> None:
        """Leave the last progress line on screen; what follows starts on a new line."""
        if self.tty and self._line_len:
            self.out.write("\n")
            self._line_len = 0

    def rate(self, now: float, done: int) -> float:
        self._rates.append((now, done))
        while len(self._rates) > 2 and now - self._rates[0][0] > RATE_WINDOW:
            self._rates.popleft()
        t0, d0 = self._rates[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0

    def line(self, status: dict[str, Any] | None, status_error: str | None, local: int,
             now: float) -> str:
        """The progress line for a status read from Redis (None: it could not be read)."""
        elapsed = duration(now - self.started)
        if status is None:
            return f"[{self.spider}] {elapsed}  Redis unreachable ({status_error}); " \
                   f"{local} local workers running"
        s = status["stats"]
        alive = sum(1 for w in status["workers"] if w["alive"])
        # the crawl's own pages counter: the workers report it every second
        per_s = self.rate(now, s.get("pages", 0))
        line = (
            f"[{self.spider}] {elapsed}  pages {s.get('pages', 0)}  "
            f"items {s.get('items', 0)}  errors {s.get('errors', 0)}  "
            f"{per_s:.1f} pages/s  pending {s.get('pending', 0)}  "
            f"leased {s.get('leased', 0)}  workers {alive} alive ({local} here)"
        )
        waiting = status.get("waiting")
        if waiting:
            # workers idle while work is queued: say it is politeness, not a hang
            reasons = []
            if waiting["capped_hosts"]:
                hosts = "host" if waiting["capped_hosts"] == 1 else "hosts"
                reasons.append(f"{waiting['capped_hosts']} {hosts} at the per-host limit of "
                               f"{waiting['cap']} (CONCURRENT_REQUESTS_PER_DOMAIN)")
            if waiting["delayed_hosts"]:
                hosts = "host" if waiting["delayed_hosts"] == 1 else "hosts"
                reasons.append(f"{waiting['delayed_hosts']} {hosts} in their download delay")
            if reasons:
                line += "  pending work waits: " + ", ".join(reasons)
        state = status.get("state", {})
        if state.get("keep_alive") == "1" and not s.get("pending") and not s.get("leased"):
            # an empty queue ends nothing here: say what the workers wait for
            line += "  keep-alive: waiting for new entries"
            timeout = number(state.get("idle_timeout"))
            if timeout > 0:
                line += f" (ends after {timeout:g} s idle)"
        return line

    def show(self, status: dict[str, Any] | None, status_error: str | None, local: int,
             now: float) -> None:
        line = self.line(status, status_error, local, now)
        if self.tty:
            pad = max(0, self._line_len - len(line))
            self.out.write("\r" + line + " " * pad)
            self.out.flush()
            self._line_len = len(line)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            self.say(line)

    def _clear(self) -> None:
        if self.tty and self._line_len:
            self.out.write("\r" + " " * self._line_len + "\r")
            self._line_len = 0
