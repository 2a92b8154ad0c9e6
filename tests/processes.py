"""A `scrapy` subprocess whose output is collected as it runs, for tests to wait on."""

from __future__ import annotations

import re
import subprocess
import threading
import time

WAIT = 120  # generous upper bound for any one crawl on a loaded 2-core machine


class Output:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = WAIT) -> None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(regex.search(line) for line in self.lines):
                left = deadline - time.monotonic()
                assert left > 0, f"no line matching {pattern!r} in:\n{self.text}"
                self._changed.wait(left)

    def finish(self, timeout: float = WAIT) -> int:
        """The exit status; a process still running after ``timeout`` is killed."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._thread.join(10)
        return code

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def stat(self, name: str) -> int:
        """A counter from the Scrapy stats the process dumped when it closed."""
        found = re.search(rf"'{re.escape(name)}': (\d+)", self.text)
        return int(found.group(1)) if found else 0


def wait_until(condition, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
