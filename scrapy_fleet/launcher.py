"""``scrapy fleet``: run N crawler processes on one shared Redis frontier, to the end.

The launcher never crawls itself and never forks while it holds a Redis connection or a
reactor: every worker is a fresh ``python -m scrapy crawl SPIDER`` child (fork + exec),
which opens its own reactor and its own Redis connection. The launcher only

* starts the embedded redis-server (when ``REDIS_URL`` is unset) before any child, so the
  children find it running;
* wipes the previous crawl once (``--fresh``, or a crawl that is already done), never in
  the workers (they always get ``FLEET_FRESH=0``);
* lets exactly one worker run ``spider.start()`` into the frontier (``FLEET_SEED=1``);
  the others, restarted ones, and every ``--join`` worker get ``FLEET_SEED=0``;
* polls the crawl's status in Redis for the progress line, restarts a worker that dies,
  forwards Ctrl-C / SIGTERM in two stages, and prints a summary.

A worker's own log goes to ``<FLEET_DATA_DIR>/logs/<spider>/<launcher pid>-worker-K.log``
so that the terminal keeps one progress line.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from scrapy_fleet.config import FleetConfig, split_secret_settings, worker_environment
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.errors import EXIT_FATAL, EXIT_REDIS_UNAVAILABLE
from scrapy_fleet.frontier.queue import FrontierFault, RedisFrontier
from scrapy_fleet.redis_server import RedisUnavailable, connect, redact, resolve_url

# exit statuses of ``scrapy fleet``
EXIT_FINISHED = 0
EXIT_NOT_FINISHED = 1  # workers stopped (gave up, Redis lost, closed early) before the end
EXIT_USAGE = 2  # bad arguments, nothing to join, Redis unreachable at start
# interrupted: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)

DEFAULT_PROGRESS_INTERVAL = 5.0  # s between plain progress lines when stdout is no terminal
DEFAULT_MAX_RESTARTS = 3  # restarts of one worker slot before the launcher gives up on it
_POLL = 0.2  # s between looks at the children
_STATUS_EVERY = 1.0  # s between reads of the crawl status in Redis
_RATE_WINDOW = 10.0  # s over which pages/s is measured
_CLOSED_RE = re.compile(r"Spider closed \(([^)]*)\)")
_PAGES_RE = re.compile(r"'response_received_count': (\d+)")


def signal_name(returncode: int) -> str:
    """``exit status 3`` or ``signal 9 (SIGKILL)`` for a child's return code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"signal {-returncode} ({name})"
    return f"exit status {returncode}"


@dataclass
class LaunchOptions:
    spider: str
    workers: int
    spider_args: list[str] = field(default_factory=list)  # "NAME=VALUE" for -a
    setting_args: list[str] = field(default_factory=list)  # "NAME=VALUE" for -s
    join: bool = False
    fresh: bool = False
    log_dir: str | None = None
    max_restarts: int = DEFAULT_MAX_RESTARTS
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    output: str | None = None  # FLEET_OUTPUT of the project, for the summary
    spider_class: str = ""  # module.Class of the spider: who made the crawl
    item_pipelines: bool = True  # whether the project writes items anywhere


@dataclass
class Worker:
    slot: int  # 1..N, stable across restarts
    seed: bool
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    restarts: int = 0
    started: float = 0.0
    exit_code: int | None = None
    reason: str | None = None  # Scrapy's finish reason, read from the worker's log
    pages: int = 0  # pages this slot fetched, over all its runs (from the logs' stats)
    gave_up: bool = False
    error: str | None = None  # the fault it stopped on, from its log

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None


class Launcher:
    def __init__(
        self,
        options: LaunchOptions,
        config: FleetConfig,
        *,
        out: IO[str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.options = options
        self.config = config
        self.out = out or sys.stdout
        self.python = python
        self.keys = CrawlKeys(config.key_prefix, options.spider)
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.url: str | None = None
        self.workers: list[Worker] = []
        self.signals: list[int] = []  # signals received, handled in the main loop
        self.interrupted: int | None = None  # the first signal
        self.started = time.monotonic()
        self.last_status: dict[str, Any] | None = None
        self.status_error: str | None = None
        self.saw_done = False
        self.crawl_started_at: str | None = None
        self._rates: deque[tuple[float, int]] = deque()
        self._last_line = 0.0
        self._line_len = 0
        self._frontier: RedisFrontier | None = None
        self._kill_at: float | None = None
        self._done_since: float | None = None

    # --- output ---------------------------------------------------------------------

    def say(self, message: str) -> None:
        """A message on its own line (the progress line, if any, is redrawn after it)."""
        if self.tty and self._line_len:
            self.out.write("\r" + " " * self._line_len + "\r")
            self._line_len = 0
        self.out.write(message + "\n")
        self.out.flush()

    # --- Redis ----------------------------------------------------------------------

    def _open_frontier(self) -> RedisFrontier:
        assert self.url is not None
        return RedisFrontier(
            connect(self.url),
            self.keys,
            f"{socket.gethostname()}:{os.getpid()}:launcher",
            url=self.url,
            lease_timeout=self.config.lease_timeout,
            retry_timeout=min(2.0, self.config.redis_retry_timeout),
        )

    def read_status(self) -> dict[str, Any] | None:
        if self._frontier is None:
            self._frontier = self._open_frontier()
        try:
            status = self._frontier.status()
        except RedisUnavailable as exc:
            self.status_error = str(exc)
            return None
        self.status_error = None
        self.last_status = status
        return status

    def prepare(self) -> int | None:
        """Before any child: start/find Redis, wipe or check the crawl. An exit code ends it."""
        try:
            self.url = resolve_url(self.config.redis_url, self.config.data_dir)
            frontier = self._open_frontier()
        except RedisUnavailable as exc:
            self.say(f"scrapy fleet: {exc}")
            return EXIT_USAGE
        try:
            state = frontier.status()["state"]
            name = self.options.spider
            where = redact(self.url)
            if self.options.join:
                if not state:
                    self.say(f"scrapy fleet: no crawl of {name!r} on {where} to join; "
                             f"start one with `scrapy fleet {name}`")
                    return EXIT_USAGE
                if state.get("status") == "done":
                    self.say(f"The crawl of {name!r} on {where} is already finished; nothing to join.")
                    return EXIT_FINISHED
                self.say(f"Joining the running crawl of {name!r} on {where} "
                         f"with {_plural(self.options.workers, 'worker')}")
            elif self.options.fresh and state:
                frontier.wipe()
                self.say(f"--fresh: discarded the previous crawl of {name!r} on {where}")
                state = {}
            elif state.get("status") == "done":
                frontier.wipe()  # once, here: N workers opening a done crawl would race
                self.say(f"The previous crawl of {name!r} had finished; starting a new one on {where}")
                state = {}
            elif state:
                self.say(f"Resuming the unfinished crawl of {name!r} on {where} "
                         f"(started {_when(state.get('started_at'))}); --fresh starts over")
            else:
                self.say(f"Starting a new crawl of {name!r} on {where} "
                         f"with {_plural(self.options.workers, 'worker')}")
            seeded = state.get("seeded") == "1"
            if state.get("status") == "failed":
                self.say(f"The last run failed ({state.get('error') or 'no reason recorded'}); "
                         "retrying it")
            if not self.options.join:
                # the crawl exists before any worker starts: a worker that does not seed
                # and finds no crawl knows its data was lost (it never creates one)
                frontier.create(self.options.spider_class)
            for warning in frontier.durability_warnings():
                self.say(f"warning: {warning}")
        except (RedisUnavailable, FrontierFault) as exc:
            self.say(f"scrapy fleet: {exc}")
            return EXIT_USAGE
        finally:
            frontier.client.close()  # no connection is held while the children start
        for slot in range(1, self.options.workers + 1):
            # one seeder, unless joining or the start requests are all in already
            seed = slot == 1 and not self.options.join and not seeded
            self.workers.append(Worker(slot=slot, seed=seed))
        return None

    # --- children -------------------------------------------------------------------

    def log_dir(self) -> Path:
        if self.options.log_dir:
            return Path(self.options.log_dir)
        return Path(self.config.data_dir) / "logs" / self.options.spider

    def command(self, worker: Worker) -> list[str]:
        cmd = [self.python, "-m", "scrapy", "crawl", self.options.spider]
        for arg in self.options.spider_args:
            cmd += ["-a", arg]
        public, _ = split_secret_settings(self.options.setting_args)  # the rest: environment
        for arg in public:
            cmd += ["-s", arg]
        # last, so they win over the user's -s: the launcher alone seeds and wipes
        cmd += ["-s", f"FLEET_SEED={1 if worker.seed else 0}", "-s", "FLEET_FRESH=0"]
        return cmd

    def start_worker(self, worker: Worker) -> None:
        directory = self.log_dir()
        directory.mkdir(parents=True, exist_ok=True)
        worker.log_path = directory / f"{os.getpid()}-worker-{worker.slot}.log"  # per launcher
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if worker.restarts else os.O_TRUNC)
        # 0600: a worker's log is its own user's business (URLs, errors, settings)
        with open(os.open(worker.log_path, flags, 0o600), "wb") as log:
            stamp = datetime.now().isoformat(timespec="seconds")
            log.write(f"--- scrapy fleet: worker {worker.slot} started {stamp} "
                      f"(seed={int(worker.seed)}) ---\n".encode())
            log.flush()
            # its own session: a terminal's Ctrl-C reaches the launcher only, which
            # forwards it once (two SIGINTs would force-stop Scrapy at the first Ctrl-C)
            worker.proc = subprocess.Popen(
                self.command(worker), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                # the secret -s settings go by environment, not on the command line
                env=worker_environment(self.options.setting_args),
            )
        worker.exit_code = None
        worker.reason = None
        worker.started = time.monotonic()

    def _read_log_end(self, worker: Worker) -> None:
        """The finish reason and page count of the worker's last run, from its log."""
        if worker.log_path is None:
            return
        try:
            with open(worker.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return
        run = tail.rsplit("--- scrapy fleet: worker", 1)[-1]
        reasons = _CLOSED_RE.findall(run)
        worker.reason = reasons[-1] if reasons else None
        pages = _PAGES_RE.findall(run)
        if pages:
            worker.pages += int(pages[-1])

    def worker_error(self, worker: Worker) -> str | None:
        """The fault a worker stopped on, as it logged it (the last scrapy-fleet error)."""
        try:
            text = worker.log_path.read_text("utf-8", "replace") if worker.log_path else ""
        except OSError:
            return None
        run = text.rsplit("--- scrapy fleet: worker", 1)[-1]
        found = re.findall(r"scrapy-fleet: this worker stopped: (.*)", run) or \
            re.findall(r"scrapy-fleet: (.*)", run)
        return found[-1].strip() if found else None

    def stop_all(self, why: str) -> None:
        """Stop the other workers gracefully (they hand back what they hold)."""
        if self.interrupted is None and any(w.running for w in self.workers):
            self.say(f"{why}: stopping the other workers")
            for w in self.workers:
                if w.running:
                    _send(w.proc, signal.SIGINT)

    def log_tail(self, worker: Worker, lines: int = 5) -> str:
        try:
            text = worker.log_path.read_text("utf-8", "replace") if worker.log_path else ""
        except OSError:
            return ""
        last = [line for line in text.splitlines() if line.strip()][-lines:]
        return "\n".join("    | " + line[:200] for line in last)

    def on_exit(self, worker: Worker, code: int) -> None:
        assert worker.proc is not None
        worker.exit_code = code
        self._read_log_end(worker)
        pid = worker.proc.pid
        if self.interrupted is not None:
            return
        if code == 0:
            if worker.reason not in (None, "finished"):
                self.say(f"worker {worker.slot} (pid {pid}) stopped: {worker.reason}")
            return
        status = self.read_status()
        done = bool(status and status["state"].get("status") == "done")
        if done:
            self.saw_done = True
        what = f"worker {worker.slot} (pid {pid}) died with {signal_name(code)}"
        if code in (EXIT_FATAL, EXIT_REDIS_UNAVAILABLE) and not done:
            # it stopped on a fault it reported (Redis gone or full, output not
            # writable, the crawl lost or failed): a restart would only meet it again
            worker.gave_up = True
            worker.error = self.worker_error(worker) or signal_name(code)
            self.say(f"worker {worker.slot} (pid {pid}) stopped on an error: {worker.error}")
            self.stop_all("a worker stopped on an error")
            return
        if done or worker.restarts >= self.options.max_restarts:
            worker.gave_up = not done
            self.say(f"{what}; not restarted ("
                     + ("the crawl is finished" if done else
                        f"{worker.restarts}/{self.options.max_restarts} restarts used") + ")")
            if not done:
                tail = self.log_tail(worker)
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
        self.start_worker(worker)
        self.say(f"worker {worker.slot} restarted as pid {worker.proc.pid}")

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
                    _send(w.proc, signal.SIGINT)
            elif self._kill_at is None:
                self.say("stopping now: killing the workers (their leased requests return "
                         f"to the queue after {self.config.lease_timeout:g} s)")
                for w in running:
                    _send(w.proc, signal.SIGINT)  # Scrapy's forced stop ...
                self._kill_at = time.monotonic() + 3  # ... then SIGKILL if it hangs
            else:
                for w in running:
                    _send(w.proc, signal.SIGKILL)

    # --- progress -------------------------------------------------------------------

    def rate(self, now: float, done: int) -> float:
        self._rates.append((now, done))
        while len(self._rates) > 2 and now - self._rates[0][0] > _RATE_WINDOW:
            self._rates.popleft()
        t0, d0 = self._rates[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0

    def progress(self, status: dict[str, Any] | None, now: float) -> None:
        elapsed = _duration(now - self.started)
        local = sum(1 for w in self.workers if w.running)
        if status is None:
            line = f"[{self.options.spider}] {elapsed}  Redis unreachable ({self.status_error}); " \
                   f"{local} local workers running"
        else:
            s = status["stats"]
            alive = sum(1 for w in status["workers"] if w["alive"])
            # pages/s from requests completed (acked, live); the pages counter itself
            # reaches Redis with each worker heartbeat, so it moves in steps
            per_s = self.rate(now, s.get("acked", 0) + s.get("invalid", 0))
            line = (
                f"[{self.options.spider}] {elapsed}  pages {s.get('pages', 0)}  "
                f"items {s.get('items', 0)}  errors {s.get('errors', 0)}  "
                f"{per_s:.1f} pages/s  pending {s.get('pending', 0)}  "
                f"leased {s.get('leased', 0)}  workers {alive} alive ({local} here)"
            )
        if self.tty:
            pad = max(0, self._line_len - len(line))
            self.out.write("\r" + line + " " * pad)
            self.out.flush()
            self._line_len = len(line)
        elif now - self._last_line >= self.options.progress_interval:
            self._last_line = now
            self.say(line)

    # --- the main loop --------------------------------------------------------------

    def run(self) -> int:
        early = self.prepare()
        if early is not None:
            return early
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for worker in self.workers:
                self.start_worker(worker)
            pids = ", ".join(f"{w.slot}: pid {w.proc.pid}" for w in self.workers if w.proc)
            self.say(f"{_plural(len(self.workers), 'worker')} started ({pids}); logs in {self.log_dir()}")
            self.loop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for w in self.workers:  # never leave children behind (e.g. on an exception)
                if w.running and w.proc.poll() is None:
                    _send(w.proc, signal.SIGKILL)
                    w.proc.wait()
        return self.finish()

    def loop(self) -> None:
        next_status = 0.0
        grace = max(30.0, 2 * self.config.lease_timeout)
        while any(w.running for w in self.workers):
            self.handle_signals()
            for worker in self.workers:
                if worker.running and (code := worker.proc.poll()) is not None:
                    self.on_exit(worker, code)
            now = time.monotonic()
            if self._kill_at is not None and now >= self._kill_at:
                for w in self.workers:
                    if w.running:
                        _send(w.proc, signal.SIGKILL)
                self._kill_at = float("inf")
            if now >= next_status:
                next_status = now + _STATUS_EVERY
                status = self.read_status()
                if status is not None:
                    self._watch_state(status["state"], now)
                self.progress(status, now)
            if self._done_since is not None and now - self._done_since > grace:
                # the crawl is done but a worker has not closed: it is stuck
                for w in self.workers:
                    if w.running:
                        self.say(f"worker {w.slot} (pid {w.proc.pid}) still running "
                                 f"{grace:.0f} s after the crawl finished; stopping it")
                        _send(w.proc, signal.SIGINT)
                self._done_since = float("inf")
            time.sleep(_POLL)
        if self.tty and self._line_len:
            self.out.write("\n")
            self._line_len = 0

    def _watch_state(self, state: dict[str, str], now: float) -> None:
        if self.crawl_started_at is None:
            self.crawl_started_at = state.get("started_at")
        if state.get("status") == "done":
            self.saw_done = True
            if self._done_since is None:
                self._done_since = now
            return
        started_at = state.get("started_at")
        if self.saw_done and started_at != self.crawl_started_at and self.interrupted is None:
            # the crawl finished and one of our late (re)started workers opened a new,
            # never-seeded one: it would wait forever; stop it
            self.say("the crawl finished before all workers had joined; stopping them")
            self.interrupted = -1
            for w in self.workers:
                if w.running:
                    _send(w.proc, signal.SIGINT)

    # --- the end --------------------------------------------------------------------

    def finish(self) -> int:
        status = self.read_status()
        if self._frontier is not None:
            self._frontier.client.close()
            self._frontier = None
        state = (status or {}).get("state", {})
        done = self.saw_done or state.get("status") == "done"
        if self.interrupted == -1:
            self.interrupted = None
        failed = [w for w in self.workers if w.exit_code not in (0, None)]
        gave_up = [w for w in self.workers if w.gave_up]
        early = [w for w in self.workers if w.exit_code == 0 and w.reason not in (None, "finished")]
        if self.interrupted is not None:
            name = signal.Signals(self.interrupted).name
            why = f"interrupted ({name}): resume with the same command"
            code = 128 + self.interrupted
        elif done and not gave_up and not failed:
            why = "finished: the frontier is empty and no worker holds work"
            code = EXIT_FINISHED
        elif done and not gave_up:
            why = "the crawl is finished, but " + ", ".join(
                f"worker {w.slot} ended with {signal_name(w.exit_code or 0)}" for w in failed)
            code = EXIT_NOT_FINISHED
        elif any(w.error for w in gave_up):
            why = "stopped on an error: " + "; ".join(
                f"worker {w.slot}: {w.error}" for w in gave_up if w.error)
            code = EXIT_NOT_FINISHED
        elif gave_up:
            why = "workers kept dying: " + ", ".join(
                f"worker {w.slot} ({signal_name(w.exit_code or 0)})" for w in gave_up)
            why += "; the crawl is kept, resume with the same command"
            code = EXIT_NOT_FINISHED
        else:
            reasons = sorted({w.reason or signal_name(w.exit_code or 0) for w in early + failed})
            why = "the workers stopped before the crawl was finished (" + \
                  (", ".join(reasons) or "unknown reason") + "); resume with the same command"
            code = EXIT_NOT_FINISHED
        self.say(self.summary(status, why))
        return code

    def summary(self, status: dict[str, Any] | None, why: str) -> str:
        elapsed = time.monotonic() - self.started
        lines = [f"--- scrapy fleet {self.options.spider}: {why}"]
        if status is not None:
            s = status["stats"]
            pages = s.get("pages", 0)
            lines.append(
                f"totals: pages {pages}  items {s.get('items', 0)}  errors {s.get('errors', 0)}  "
                f"download errors {s.get('download_errors', 0)}  requests {s.get('enqueued', 0)} "
                f"(+{s.get('duplicate', 0)} duplicates dropped)  reclaimed {s.get('reclaimed', 0)}  "
                f"requeued {s.get('requeued', 0)}  pending {s.get('pending', 0)}  "
                f"leased {s.get('leased', 0)}"
            )
            state = status["state"]
            crawl_time = ""
            started, finished = _number(state.get("started_at")), _number(state.get("finished_at"))
            if started and finished:
                # finished_at is in ms (server time), started_at in s
                span = finished / 1000 - started
                if span > 0:
                    crawl_time = f"; whole crawl {_duration(span)}"
            lines.append(f"duration: {_duration(elapsed)} ({pages / elapsed:.1f} pages/s "
                         f"over this run's time{crawl_time})" if elapsed > 0 else "")
        else:
            lines.append(f"duration: {_duration(elapsed)}; Redis unreachable: {self.status_error}")
        for w in self.workers:
            pid = w.proc.pid if w.proc else "-"
            ended = signal_name(w.exit_code) if w.exit_code is not None else "not started"
            restarts = f", {_plural(w.restarts, 'restart')}" if w.restarts else ""
            lines.append(f"worker {w.slot} (pid {pid}): {ended}, {w.reason or 'no close reason'}, "
                         f"{w.pages} pages{restarts}; log {w.log_path}")
        if self.options.item_pipelines and self.options.output:
            out = self.options.output % {"name": self.options.spider}
            lines.append(f"output: {os.path.abspath(out)}")
        return "\n".join(line for line in lines if line)


def _send(proc: subprocess.Popen[bytes] | None, signum: int) -> None:
    if proc is not None and proc.poll() is None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _number(text: str | None) -> float:
    """A number from the crawl's state in Redis; 0 for anything else (junk included)."""
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def _when(stamp: str | None) -> str:
    try:
        return datetime.fromtimestamp(float(stamp or "")).isoformat(sep=" ", timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return "at an unknown time"


# --- scrapy fleet SPIDER --status ----------------------------------------------------

def format_status(spider: str, url: str, status: dict[str, Any]) -> str:
    state, stats = status["state"], status["stats"]
    if not state and not stats and not status["workers"]:
        return f"No crawl of {spider!r} on {redact(url)}."
    lines = [f"Crawl of {spider!r} on {redact(url)}: {state.get('status', 'unknown')}"]
    lines.append(f"  started   {_when(state.get('started_at'))}")
    if _number(state.get("finished_at")):
        lines.append(f"  finished  {_when(str(_number(state['finished_at']) / 1000))}")
    lines.append(f"  seeded    {'yes' if state.get('seeded') == '1' else 'not yet (start requests still being fed)'}")
    lines.append(f"  pending {stats.get('pending', 0)}  leased {stats.get('leased', 0)}  "
                 f"seen {status['seen']}")
    names = ["pages", "items", "errors", "download_errors", "enqueued", "duplicate", "popped",
             "acked", "reclaimed", "requeued", "invalid"]
    lines.append("  totals  " + "  ".join(f"{n} {stats.get(n, 0)}" for n in names))
    workers = status["workers"]
    alive = sum(1 for w in workers if w["alive"])
    lines.append(f"  workers {len(workers)} ({alive} alive)")
    for w in sorted(workers, key=lambda w: w["id"]):
        flags = ("alive" if w["alive"] else "dead (its leases are reclaimed)") + \
                (", seeding" if w["seeding"] else "")
        lines.append(f"    {w['id']:<40} last heartbeat {w['last_heartbeat_s']:.1f} s ago, {flags}")
    return "\n".join(lines)


def print_status(spider: str, config: FleetConfig, *, as_json: bool = False,
                 out: IO[str] | None = None) -> int:
    """Print a crawl's status without joining it; 0, or 1 when Redis cannot be reached."""
    out = out or sys.stdout
    url = config.redis_url
    if url is None:
        from scrapy_fleet.redis_server import answers, embedded_url, socket_path

        if not answers(socket_path(config.data_dir)):
            out.write(f"No crawl: the embedded Redis of {os.path.abspath(config.data_dir)} "
                      "is not running (set REDIS_URL for a shared one).\n")
            return EXIT_NOT_FINISHED
        url = embedded_url(config.data_dir)
    try:
        frontier = RedisFrontier(connect(url), CrawlKeys(config.key_prefix, spider), "status",
                                 url=url, lease_timeout=config.lease_timeout, retry_timeout=2.0)
        try:
            status = frontier.status()
        finally:
            frontier.client.close()
    except RedisUnavailable as exc:
        out.write(f"scrapy fleet: {exc}\n")
        return EXIT_NOT_FINISHED
    if as_json:
        import json

        out.write(json.dumps({"spider": spider, "redis": redact(url), **status}, indent=2) + "\n")
    else:
        out.write(format_status(spider, url, status) + "\n")
    return 0

