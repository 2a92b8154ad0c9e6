"""``scrapy fleet``: N workers crawl a local site through one frontier, to the end.

Real Redis, a real local HTTP site that counts fetches, real ``scrapy crawl`` workers. No
timing asserts: we wait on events (pages fetched, workers registered) and check fetch
counts and exit codes.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from conftest import Fleet, Output, fleet_args, frontier, make_project, wait_for
from local_site import LinkedSite

pytestmark = pytest.mark.slow  # real worker processes


@pytest.fixture
def site_factory():
    sites: list[LinkedSite] = []

    def make(pages: int, delay: float = 0.0) -> LinkedSite:
        site = LinkedSite(pages, delay).start()
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.stop()


@pytest.fixture
def settings(fleet_settings: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **fleet_settings,
        "FLEET_DATA_DIR": str(tmp_path / ".fleet"),
        "FLEET_LEASE_TIMEOUT": "3",
        "FLEET_PROGRESS_INTERVAL": "1",
    }


def test_three_workers_fetch_every_page_once(site_factory, settings, tmp_path, redis_url, key_prefix):
    site = site_factory(300)
    fleet = Fleet(make_project(tmp_path), fleet_args(site.url, settings, "-n", "3"))
    assert fleet.wait() == 0, fleet.text
    fetches = site.page_fetches()
    assert len(fetches) == 300
    assert set(fetches.values()) == {1}, "a page was fetched more than once"
    text = fleet.text
    assert "Starting a new crawl of 'links'" in text
    assert "3 workers started" in text
    assert "finished: the frontier is empty and no worker holds work" in text
    assert "totals: pages 300  items 300" in text
    assert len(re.findall(r"worker \d \(pid \d+\): exit status 0, finished", text)) == 3
    assert re.search(r"\[links\] \d:\d\d:\d\d  pages \d+  items \d+  errors 0  [\d.]+ pages/s  "
                     r"pending \d+  leased \d+  workers \d+ alive \(\d here\)", text), text
    status = frontier(redis_url, key_prefix).status()
    assert status["state"]["status"] == "done"
    assert status["stats"]["pages"] == 300


def test_a_joining_launcher_shares_the_work(site_factory, settings, tmp_path, redis_url, key_prefix):
    site = site_factory(300, delay=0.05)
    project = make_project(tmp_path)
    slow = {**settings, "CONCURRENT_REQUESTS": "2"}
    main = Fleet(project, fleet_args(site.url, slow, "-n", "1"), "main")
    wait_for(lambda: len(site.page_fetches()) >= 10, what="the first launcher to crawl")
    joined = Fleet(project, fleet_args(site.url, slow, "-n", "1", "--join"), "join")
    assert joined.wait() == 0, joined.text
    assert main.wait() == 0, main.text
    assert "Joining the running crawl of 'links'" in joined.text
    fetches = site.page_fetches()
    assert len(fetches) == 300 and set(fetches.values()) == {1}
    # each launcher's worker fetched part of the site; together, all of it once
    counts = [int(re.search(r"worker 1 \(pid \d+\): exit status 0, finished, (\d+) pages", f.text)[1])
              for f in (main, joined)]
    assert all(counts), counts
    assert sum(counts) == 300
    assert "Starting a new crawl" not in joined.text  # it did not seed or wipe


def test_a_killed_worker_is_reported_restarted_and_nothing_is_lost(
    site_factory, settings, tmp_path, redis_url, key_prefix
):
    site = site_factory(300, delay=0.1)
    fleet = Fleet(make_project(tmp_path),
                  fleet_args(site.url, {**settings, "CONCURRENT_REQUESTS": "2"}, "-n", "2"))
    watch = frontier(redis_url, key_prefix)
    wait_for(lambda: len(site.page_fetches()) >= 30, what="30 pages fetched")
    alive = wait_for(lambda: [w for w in watch.status()["workers"] if w["alive"]],
                     what="a worker to register")
    victim = int(alive[0]["id"].split(":")[1])
    os.kill(victim, signal.SIGKILL)
    assert fleet.wait() == 0, fleet.text
    text = fleet.text
    assert re.search(rf"worker \d \(pid {victim}\) died with signal 9 \(SIGKILL\); restarting \(1/3\)", text), text
    assert "restarted as pid" in text
    fetches = site.page_fetches()
    assert len(fetches) == 300, "a page was lost"
    # only what the killed worker held can be fetched twice
    assert sum(fetches.values()) - 300 <= 2 + 16, fetches.most_common(5)
    status = watch.status()
    assert status["state"]["status"] == "done"
    assert status["stats"]["reclaimed"] >= 1


def interrupted_fleet(site_factory, settings, tmp_path, pages: int, after: int):
    """A 2-worker fleet on a slow site of ``pages``, sent SIGINT once ``after`` are fetched."""
    site = site_factory(pages, delay=0.1)
    project = make_project(tmp_path)
    args = fleet_args(site.url, {**settings, "CONCURRENT_REQUESTS": "2"}, "-n", "2")
    first = Fleet(project, args, "first")
    wait_for(lambda: len(site.page_fetches()) >= after, what=f"{after} pages fetched")
    first.proc.send_signal(signal.SIGINT)
    return site, project, args, first


def test_sigint_keeps_the_crawl_and_the_same_command_resumes_it(
    site_factory, settings, tmp_path, redis_url, key_prefix
):
    site, project, args, first = interrupted_fleet(site_factory, settings, tmp_path, 300, 30)
    assert first.wait() == 130, first.text
    assert "interrupted (SIGINT): resume with the same command" in first.text
    status = frontier(redis_url, key_prefix).status()
    assert status["state"]["status"] == "running"
    assert status["stats"]["leased"] == 0, "a graceful stop hands back every lease"
    assert status["stats"]["pending"] > 0
    before = sum(site.page_fetches().values())
    assert before < 300

    second = Fleet(project, args, "second")
    assert second.wait() == 0, second.text
    assert "Resuming the unfinished crawl of 'links'" in second.text
    fetches = site.page_fetches()
    assert len(fetches) == 300
    # nothing fetched twice except what was in flight at the interrupt (2 workers x 2)
    assert sum(fetches.values()) - 300 <= 4, fetches.most_common(5)


def test_sigint_twice_stops_now_and_still_nothing_is_lost(
    site_factory, settings, tmp_path, redis_url, key_prefix
):
    site, project, args, first = interrupted_fleet(site_factory, settings, tmp_path, 200, 20)
    wait_for(lambda: "stopping the workers gracefully" in first.text, what="the first stage")
    first.proc.send_signal(signal.SIGINT)
    assert first.wait() == 130, first.text
    assert "stopping now" in first.text

    second = Fleet(project, args, "second")
    assert second.wait() == 0, second.text
    assert len(site.page_fetches()) == 200


def test_a_keep_alive_crawl_outlives_a_process_that_finishes_and_ends_by_its_idle_timeout(
    site_factory, settings, tmp_path, redis_url, key_prefix
):
    """`--keep-alive`: the queue running empty ends nothing. A plain `scrapy crawl`-style
    process (not keep-alive) that joins the crawl and runs out of work does not end it
    for everyone: it follows the crawl's mode. Only the idle timeout ends it."""
    site = site_factory(40)
    project = make_project(tmp_path)
    keep = {**settings, "FLEET_IDLE_TIMEOUT": "6", "FLEET_POLL_INTERVAL": "0.05"}
    fleet = Fleet(project, fleet_args(site.url, keep, "-n", "1", "--keep-alive"))
    watch = frontier(redis_url, key_prefix)
    wait_for(lambda: len(site.page_fetches()) == 40, what="every page fetched")
    # `scrapy crawl`, no keep-alive of its own
    joiner = Output(project, ["crawl", *fleet_args(site.url, settings)], "crawl")
    joiner.wait_for(r"The crawl is keep-alive")
    assert fleet.wait() == 0, fleet.text
    assert joiner.finish() == 0, joiner.text
    state = watch.status()["state"]
    assert state["status"] == "done" and state.get("ended_by") == "idle_timeout", state
    assert set(site.page_fetches().values()) == {1}
