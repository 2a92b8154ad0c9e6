"""Keeps N workers running to the end of the crawl.

It starts them, restarts one that dies (up to ``max_restarts``), gives up on one that
stopped on a fault a restart would only meet again, forwards SIGINT/SIGTERM in two
stages, stops workers still running long after the crawl finished, and stops late
workers that opened a new crawl after the end. What happened is handed back as a
:class:`~scrapy_fleet.launcher.policy.RunEnd` for the exit policy.

It runs no reactor: it looks at its children every ``POLL`` seconds.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.launcher.formatting import plural, signal_name
from scrapy_fleet.launcher.logs import log_tail, logged_fault
from scrapy_fleet.launcher.options import LaunchOptions
from scrapy_fleet.launcher.outcomes import Outcome, find_outcome
from scrapy_fleet.launcher.policy import RunEnd
from scrapy_fleet.launcher.progress import Progress
from scrapy_fleet.launcher.watch import CrawlWatch
from scrapy_fleet.launcher.workers import Worker, send, start_worker

POLL = 0.2  # s between looks at the children
STATUS_EVERY = 1.0  # s between reads of the crawl status in Redis
KILL_AFTER = 3.0  # s from the second signal's forced stop to SIGKILL


class Supervisor:
    def __init__(self, options: LaunchOptions, config: FleetConfig, watch: CrawlWatch,
                 progress: Progress, workers: list[Worker], log_dir: Path,
                 *, python: str = sys.executable) -> None:
        self.options = options
        self.config = config
        self.watch = watch
        self.progress = progress
        self.say = progress.say
        self.workers = workers
        self.log_dir = log_dir
        self.python = python
        self.signals: list[int] = []  # signals received, handled in the main loop
        self.interrupted: int | None = None  # the first signal
        self.stopped_on_error = False  # a worker stopped on a fault: the others were stopped
        self.late_joiners = False
        self.saw_done = False
        self.crawl_started_at: str | None = None
        self.final_status: dict[str, Any] | None = None  # read once every worker has exited
        self.pages_before: int | None = None  # the crawl's pages at this run's first reading
        # a crawl that is done must not keep workers: past this, they are stuck (stopped
        # gracefully, then killed after as long again)
        self.stuck_grace = max(30.0, 2 * config.lease_timeout)
        self._kill_at: float | None = None
        self._done_since: float | None = None

    @property
    def stopping(self) -> bool:
        """The launcher stops the workers itself: none is restarted any more."""
        return self.interrupted is not None or self.stopped_on_error or self.late_joiners

    # --- the run --------------------------------------------------------------------

    def run(self) -> RunEnd:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for worker in self.workers:
                self._start(worker)
            pids = ", ".join(f"{w.slot}: pid {w.proc.pid}" for w in self.workers if w.proc)
            self.say(f"{plural(len(self.workers), 'worker')} started ({pids}); logs in {self.log_dir}")
            self.loop()
            self.final_status = self.read_status()  # it may have finished as the last closed
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for w in self.workers:  # never leave children behind (e.g. on an exception)
                if w.running and w.proc.poll() is None:
                    send(w.proc, signal.SIGKILL)
                    w.proc.wait()
        return RunEnd(workers=tuple(w.end() for w in self.workers), signal=self.interrupted,
                      done=self.saw_done, late_joiners=self.late_joiners)

    def loop(self) -> None:
        next_status = 0.0
        while any(w.running for w in self.workers):
            self.handle_signals()
            for worker in self.workers:
                if worker.running and (code := worker.proc.poll()) is not None:
                    self.on_exit(worker, code)
            now = time.monotonic()
            if self._kill_at is not None and now >= self._kill_at:
                for w in self.workers:
                    if w.running:
                        send(w.proc, signal.SIGKILL)
                self._kill_at = float("inf")
            if now >= next_status:
                next_status = now + STATUS_EVERY
                status = self.read_status()
                if status is not None:
                    self._watch_state(status["state"], now)
                self.progress.show(status, self.watch.error,
                                   sum(1 for w in self.workers if w.running), now)
            if self._done_since is not None and now - self._done_since > self.stuck_grace:
                self._stop_stuck(now)
            time.sleep(POLL)
        self.progress.end()

    def read_status(self) -> dict[str, Any] | None:
        status = self.watch.status()
        if status is not None and self.pages_before is None:
            self.pages_before = status["stats"].get("pages", 0)
        if status is not None and status["state"].get("status") == "done":
            self.saw_done = True
        return status

    # --- children -------------------------------------------------------------------

    def _start(self, worker: Worker) -> None:
        if worker.restarts:
            # what is recorded now is older than this run, even under a reused pid
            known = self.watch.outcomes()
            if known is not None:
                worker.older_outcomes = frozenset(known)
        start_worker(worker, self.options, self.python, self.log_dir)

    def _outcome(self, worker: Worker) -> Outcome | None:
        """What the worker that has just exited recorded in Redis as it closed, if anything."""
        assert worker.proc is not None
        outcomes = self.watch.outcomes()
        if not outcomes:
            return None
        found = find_outcome(outcomes, worker.proc.pid, ignore=worker.older_outcomes)
        if found is None:
            return None
        worker.older_outcomes |= {found[0]}  # the slot's next run must not take it again
        return found[1]

    def on_exit(self, worker: Worker, code: int) -> None:
        assert worker.proc is not None
        outcome = self._outcome(worker)
        worker.ended(code, outcome)
        if worker.faulted and worker.error is None:
            # it could record nothing (Redis unreachable, its crawl lost): its log says
            # which fault it stopped on
            worker.error = (logged_fault(worker.log_path) if outcome is None else None) \
                or signal_name(worker.fault_status or code)
        pid = worker.proc.pid
        if self.stopping:
            return
        if code == 0 and not worker.faulted:
            if worker.reason not in (None, "finished"):
                self.say(f"worker {worker.slot} (pid {pid}) stopped: {worker.reason}")
            return
        status = self.read_status()
        done = bool(status and status["state"].get("status") == "done")
        what = f"worker {worker.slot} (pid {pid}) died with {signal_name(code)}"
        if worker.faulted and not done:
            worker.gave_up = True
            self.say(f"worker {worker.slot} (pid {pid}) stopped on an error: {worker.error}")
            self.stop_all("a worker stopped on an error")
            return
        if code == 0:  # a fault, but after the end: there is nothing left to restart for
            self.say(f"worker {worker.slot} (pid {pid}) stopped on an error after the crawl "
                     f"finished: {worker.error}")
            return
        if done or worker.restarts >= self.options.max_restarts:
            worker.gave_up = not done
            self.say(f"{what}; not restarted ("
                     + ("the crawl is finished" if done else
                        f"{worker.restarts}/{self.options.max_restarts} restarts used") + ")")
            if not done:
                tail = log_tail(worker.log_path)
                if tail:
                    self.say(f"  last lines of {worker.log_path}:\n{tail}")
            return
        worker.restarts += 1
        # a restarted worker seeds again only if it was the seeder and seeding never
        # completed (the frontier drops the start requests already in); else it only works
        seeded = bool(status and status["state"].get("seeded") == "1")
        worker.seed = worker.seed and not seeded
        self.say(f"{what}; restarting ({worker.restarts}/{self.options.max_restarts}); "
                 f"its leased requests return to the queue within "
                 f"{self.config.lease_timeout:g} s")
        self._start(worker)
        self.say(f"worker {worker.slot} restarted as pid {worker.proc.pid}")

    def stop_all(self, why: str) -> None:
        """Stop the other workers gracefully (they hand back what they hold)."""
        if not self.stopping and any(w.running for w in self.workers):
            self.say(f"{why}: stopping the other workers")
            for w in self.workers:
                if w.running:
                    send(w.proc, signal.SIGINT)
        # none is restarted any more: one dying of this stop would only meet the fault
        self.stopped_on_error = True

    # --- signals --------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            running = [w for w in self.workers if w.running]
            if self.interrupted is None:
                self.interrupted = signum
                self.say(f"{signal.Signals(signum).name}: stopping the workers gracefully "
                         "(they hand back what they hold); again to stop now")
                for w in running:
                    send(w.proc, signal.SIGINT)
            elif self._kill_at is None:
                self.say("stopping now: killing the workers (their leased requests return "
                         f"to the queue after {self.config.lease_timeout:g} s)")
                for w in running:
                    send(w.proc, signal.SIGINT)  # Scrapy's forced stop ...
                self._kill_at = time.monotonic() + KILL_AFTER  # ... then SIGKILL if it hangs
            else:
                for w in running:
                    send(w.proc, signal.SIGKILL)

    # --- the end of the crawl -------------------------------------------------------

    def _watch_state(self, state: dict[str, str], now: float) -> None:
        if self.crawl_started_at is None:
            self.crawl_started_at = state.get("started_at")
        if state.get("status") == "done":
            if self._done_since is None:
                self._done_since = now
            return
        started_at = state.get("started_at")
        if self.saw_done and started_at != self.crawl_started_at and not self.stopping:
            # the crawl finished and one of our late (re)started workers opened a new,
            # never-seeded one: it would wait forever; stop it
            self.say("the crawl finished before all workers had joined; stopping them")
            self.late_joiners = True
            for w in self.workers:
                if w.running:
                    send(w.proc, signal.SIGINT)

    def _stop_stuck(self, now: float) -> None:
        # the crawl is done but a worker has not closed: it is stuck
        for w in self.workers:
            if w.running and not w.stuck:
                w.stuck = True
                self.say(f"worker {w.slot} (pid {w.proc.pid}) still running "
                         f"{self.stuck_grace:.0f} s after the crawl finished; stopping it")
                send(w.proc, signal.SIGINT)
            elif w.running:
                self.say(f"worker {w.slot} (pid {w.proc.pid}) did not stop; killing it")
                send(w.proc, signal.SIGKILL)
        self._done_since = now  # the next step, if one is needed, after as long again
