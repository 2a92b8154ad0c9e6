"""The supervisor with real child processes on a real Redis: how runs end, and the verdict.

The children are tests/fake_worker.py, whose end is scripted (a fault it records, one it
can only log, a stuck worker, a late joiner...), so each branch of the exit policy is
reached the way a crawl reaches it, in a few seconds.
"""

from __future__ import annotations

import io
import json
import stat
import sys
import threading
from pathlib import Path

import pytest

from conftest import TESTS, scrapy_env, wait_for
from fake_worker import ready_key
from scrapy_fleet.config import FleetConfig
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.launcher.options import LaunchOptions
from scrapy_fleet.launcher.policy import FINISHED, Verdict, decide
from scrapy_fleet.launcher.progress import Progress
from scrapy_fleet.launcher.supervisor import Supervisor
from scrapy_fleet.launcher.watch import CrawlWatch, launcher_frontier
from scrapy_fleet.launcher.workers import Worker

pytestmark = pytest.mark.slow  # real worker processes


class Run:
    def __init__(self, tmp_path: Path, redis_url: str, key_prefix: str, monkeypatch,
                 seed: str, other: str, *, wait: int = 0, done: bool = False) -> None:
        python = tmp_path / "fake-python"
        python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TESTS / "fake_worker.py"}" "$@"\n')
        python.chmod(python.stat().st_mode | stat.S_IXUSR)
        for name, value in {"FAKE_WORKER_PLAN": json.dumps({"seed": seed, "other": other,
                                                          "wait": wait}),
                            "FAKE_REDIS_URL": redis_url, "FAKE_KEY_PREFIX": key_prefix,
                            "PYTHONPATH": scrapy_env()["PYTHONPATH"]}.items():
            monkeypatch.setenv(name, value)
        self.config = FleetConfig(redis_url=redis_url, key_prefix=key_prefix, lease_timeout=3)
        self.keys = CrawlKeys(key_prefix, "links")
        self.frontier = launcher_frontier(redis_url, self.keys, self.config)
        self.frontier.create()
        if done:
            self.frontier.client.hset(self.keys.state, "status", "done")
        self.out = io.StringIO()
        self.workers = [Worker(slot=1, seed=True), Worker(slot=2, seed=False)]
        self.supervisor = Supervisor(
            LaunchOptions(spider="links", workers=2, max_restarts=1), self.config,
            CrawlWatch(redis_url, self.keys, self.config), Progress(self.out, "links", 60),
            self.workers, tmp_path / "logs", python=str(python))

    def ready(self) -> int:
        """How many workers are ready for a signal."""
        return self.frontier.client.llen(ready_key(self.keys))

    def verdict(self) -> Verdict:
        try:
            return decide(self.supervisor.run())
        finally:
            self.supervisor.watch.close()
            self.frontier.client.close()

    @property
    def text(self) -> str:
        return self.out.getvalue()


@pytest.fixture
def run(tmp_path, redis_url, key_prefix, monkeypatch):
    return lambda seed, other, **kw: Run(tmp_path, redis_url, key_prefix, monkeypatch, seed,
                                         other, **kw)


def test_a_finished_crawl_takes_reason_and_pages_from_redis(run):
    r = run("finish", "finish")
    assert r.verdict() == Verdict(0, FINISHED)
    assert [(w.exit_code, w.reason, w.pages) for w in r.workers] == [(0, "finished", 7)] * 2


def test_a_recorded_fault_is_not_restarted_and_stops_the_others(run):
    # it exits 0 (Scrapy's crawl command would): the fault it recorded is what counts
    r = run("fault", "graceful", wait=1)
    assert r.verdict() == Verdict(1, "stopped on an error: worker 1: output not writable")
    assert "worker 1 (pid" in r.text and "stopped on an error: output not writable" in r.text
    assert "a worker stopped on an error: stopping the other workers" in r.text
    assert [w.restarts for w in r.workers] == [0, 0]
    assert r.workers[1].reason == "shutdown"


def test_a_fault_it_could_not_record_is_read_from_its_log(run):
    r = run("unrecorded-fault", "graceful", wait=1)
    assert r.verdict() == Verdict(1, "stopped on an error: worker 1: Redis went away")
    assert r.workers[0].exit_code == 3 and r.workers[0].reason is None


def test_a_worker_dying_of_the_stop_after_a_fault_is_not_restarted(run):
    r = run("fault", "dies-on-sigint", wait=1)
    assert r.verdict().status == 1
    assert r.workers[1].exit_code not in (0, None) and r.workers[1].restarts == 0
    assert "restarting" not in r.text


def test_a_stuck_worker_after_the_end_is_stopped_then_killed(run):
    r = run("hangs-after-the-end", "finish", wait=1)
    r.supervisor.stuck_grace = 0.5
    assert r.verdict() == Verdict(
        1, "the crawl is finished, but worker 1 was still running long after the end and "
           "was stopped")
    assert "worker 1 (pid" in r.text and "after the crawl finished; stopping it" in r.text
    assert "did not stop; killing it" in r.text
    assert r.workers[0].exit_code == -9 and r.workers[1].exit_code == 0


def test_late_joiners_of_a_finished_crawl_are_stopped(run):
    r = run("graceful", "graceful", done=True)

    def a_late_worker_opens_a_new_crawl() -> None:
        wait_for(lambda: r.supervisor.saw_done and r.ready() == 2,
                 what="the supervisor to see the end, the workers to be ready")
        r.frontier.client.hset(r.keys.state, mapping={"status": "running", "started_at": "1"})

    thread = threading.Thread(target=a_late_worker_opens_a_new_crawl)
    thread.start()
    verdict = r.verdict()
    thread.join()
    assert verdict == Verdict(0, f"{FINISHED}; workers that started after the end were stopped")
    assert "the crawl finished before all workers had joined; stopping them" in r.text
    assert [w.reason for w in r.workers] == ["shutdown", "shutdown"]
