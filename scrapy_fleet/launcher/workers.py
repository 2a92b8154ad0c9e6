"""The worker processes: what each slot runs, how it is started, and how it ended.

Every worker is a fresh ``python -m scrapy crawl SPIDER`` child (fork + exec) with its own
reactor and Redis connection, in its own session, its output in its own log file.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scrapy_fleet.config import split_secret_settings, worker_environment
from scrapy_fleet.observe.worker import LAUNCH_SLOT_ENV
from scrapy_fleet.errors import EXIT_FATAL, EXIT_REDIS_UNAVAILABLE
from scrapy_fleet.launcher.options import LaunchOptions
from scrapy_fleet.launcher.outcomes import Outcome
from scrapy_fleet.launcher.policy import WorkerEnd

RUN_MARK = "--- scrapy fleet: worker"  # starts each run's part of a slot's log
# exit statuses of a worker that stopped on a fault it reported (Redis gone or full, output
# not writable, the crawl lost or failed): a restart would only meet it again
FAULTS = (EXIT_REDIS_UNAVAILABLE, EXIT_FATAL)


@dataclass
class Worker:
    slot: int  # 1..N, stable across restarts
    seed: bool
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    restarts: int = 0
    started: float = 0.0
    # outcome ids in Redis from before this run started: not this run's, whatever their pid
    older_outcomes: frozenset[str] = frozenset()
    exit_code: int | None = None
    reason: str | None = None  # Scrapy's close reason of the last run
    pages: int = 0  # pages this slot fetched, over all its runs
    fault_status: int | None = None  # 3 or 4 if the last run stopped on a fault
    error: str | None = None  # the fault it stopped on
    gave_up: bool = False
    stuck: bool = False  # still running long after the crawl was done: stopped by us

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None

    @property
    def faulted(self) -> bool:
        return self.fault_status is not None

    def ended(self, code: int, outcome: Outcome | None) -> None:
        """Take in how the last run ended: its exit code and what it recorded, if anything."""
        self.exit_code = code
        self.reason = outcome.reason if outcome else None
        self.pages += outcome.pages if outcome else 0
        self.error = outcome.error if outcome else None
        # Scrapy's own crawl command exits 0 whatever happened: the recorded status counts
        recorded = outcome.exit_status if outcome else 0
        self.fault_status = next((s for s in (code, recorded) if s in FAULTS), None)
        if self.error is not None and self.fault_status is None:
            self.fault_status = EXIT_FATAL

    def end(self) -> WorkerEnd:
        return WorkerEnd(slot=self.slot, exit_code=self.exit_code, reason=self.reason,
                         error=self.error, gave_up=self.gave_up, stuck=self.stuck)


def worker_command(options: LaunchOptions, python: str, seed: bool) -> list[str]:
    cmd = [python, "-m", "scrapy", "crawl", options.spider]
    for arg in options.spider_args:
        cmd += ["-a", arg]
    public, _ = split_secret_settings(options.setting_args)  # the rest: environment
    for arg in public:
        cmd += ["-s", arg]
    # last, so they win over the user's -s: the launcher alone seeds and wipes
    cmd += ["-s", f"FLEET_SEED={1 if seed else 0}", "-s", "FLEET_FRESH=0"]
    return cmd


def start_worker(worker: Worker, options: LaunchOptions, python: str, log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    worker.log_path = log_dir / f"{os.getpid()}-worker-{worker.slot}.log"  # per launcher
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if worker.restarts else os.O_TRUNC)
    # 0600: a worker's log is its own user's business (URLs, errors, settings)
    with open(os.open(worker.log_path, flags, 0o600), "wb") as log:
        stamp = datetime.now().isoformat(timespec="seconds")
        log.write(f"{RUN_MARK} {worker.slot} started {stamp} (seed={int(worker.seed)}) ---\n"
                  .encode())
        log.flush()
        # its own session: a terminal's Ctrl-C reaches the launcher only, which
        # forwards it once (two SIGINTs would force-stop Scrapy at the first Ctrl-C)
        worker.proc = subprocess.Popen(
            worker_command(options, python, worker.seed), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # the secret -s settings go by environment, not on the command line
            env={**worker_environment(options.setting_args),
                 # its row in the dashboard's worker table names its slot and restarts
                 LAUNCH_SLOT_ENV: f"{worker.slot} {worker.restarts}"},
        )
    worker.exit_code = worker.reason = worker.error = worker.fault_status = None
    worker.started = time.monotonic()


def send(proc: subprocess.Popen[bytes] | None, signum: int) -> None:
    """Signal a child that is still there (one that has just exited is not an error)."""
    if proc is not None and proc.poll() is None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass
