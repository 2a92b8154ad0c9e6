"""The ``scrapy fleet`` command: registration, arguments, --status, --fresh, resuming."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import SCRAPY, scrapy_args, scrapy_env
from fleet_helpers import Fleet, fleet_args, frontier, make_project
from linked_site import LinkedSite


@pytest.fixture
def site():
    s = LinkedSite(40).start()
    yield s
    s.stop()


@pytest.fixture
def settings(fleet_settings: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**fleet_settings, "FLEET_DATA_DIR": str(tmp_path / ".fleet"), "FLEET_LEASE_TIMEOUT": "3"}


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SCRAPY, *args], cwd=cwd, env=scrapy_env(), capture_output=True,
                          text=True, timeout=120)


def test_the_command_is_registered_through_the_entry_point(tmp_path):
    result = run(make_project(tmp_path), "-h")
    assert result.returncode == 0
    assert "fleet" in result.stdout
    assert "N processes sharing one Redis frontier" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuchspider"], "Spider not found: nosuchspider"),
        (["links", "-n", "0"], "-n must be at least 1"),
        (["links", "--join", "--fresh"], "--join and --fresh exclude each other"),
        (["links", "-a", "novalue"], "Invalid -a value"),
        ([], "give exactly one spider name"),
        (["links", "-s", "FLEET_LEASE_TIMEOUT=abc"], "FLEET_LEASE_TIMEOUT must be a number"),
        (["links", "-s", "FLEET_BACKOFF_BASE=-1"], "FLEET_BACKOFF_BASE must be at least 0.001"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    result = run(make_project(tmp_path), "fleet", *args)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr


def test_join_without_a_crawl_exits_2(tmp_path, settings):
    result = run(make_project(tmp_path), "fleet", "links", "--join", "-n", "1", *scrapy_args(settings))
    assert result.returncode == 2
    assert "no crawl of 'links'" in result.stdout and "to join" in result.stdout


def test_status_of_no_crawl_then_of_a_finished_one(tmp_path, site, settings, redis_url, key_prefix):
    project = make_project(tmp_path)
    result = run(project, "fleet", "links", "--status", *scrapy_args(settings))
    assert result.returncode == 0
    assert "No crawl of 'links'" in result.stdout

    fleet = Fleet(project, fleet_args(site.url, settings, "-n", "2"))
    assert fleet.wait() == 0, fleet.text
    result = run(project, "fleet", "links", "--status", *scrapy_args(settings))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Crawl of 'links' on" in out and ": done" in out
    assert "pending 0  leased 0  seen 40" in out
    assert "pages 40" in out

    as_json = run(project, "fleet", "links", "--status", "--json", *scrapy_args(settings))
    import json

    data = json.loads(as_json.stdout)
    assert data["state"]["status"] == "done" and data["stats"]["pages"] == 40 and data["seen"] == 40

    # joining a finished crawl does nothing (and does not restart it)
    joined = run(project, "fleet", "links", "--join", "-n", "1", *scrapy_args(settings))
    assert joined.returncode == 0 and "already finished" in joined.stdout
    assert frontier(redis_url, key_prefix).status()["state"]["status"] == "done"


def test_status_lists_live_workers(tmp_path, settings, redis_url, key_prefix):
    watch = frontier(redis_url, key_prefix)
    watch.open(fresh=False)  # a worker "test" that has just sent a heartbeat
    result = run(make_project(tmp_path), "fleet", "links", "--status", *scrapy_args(settings))
    assert "workers 1 (1 alive)" in result.stdout
    assert "test" in result.stdout and "last heartbeat" in result.stdout
    assert "seeded    not yet" in result.stdout


def test_a_finished_crawl_is_started_afresh_by_the_next_launch(tmp_path, site, settings):
    project = make_project(tmp_path)
    assert Fleet(project, fleet_args(site.url, settings, "-n", "1")).wait() == 0
    again = Fleet(project, fleet_args(site.url, settings, "-n", "2"))
    assert again.wait() == 0, again.text
    assert "previous crawl of 'links' had finished; starting a new one" in again.text
    assert set(site.page_fetches().values()) == {2}  # every page once per crawl


def test_resume_does_not_seed_again_and_fresh_starts_over(tmp_path, site, settings, redis_url, key_prefix):
    # an unfinished crawl whose start requests were all fed and whose queue is empty
    watch = frontier(redis_url, key_prefix)
    watch.open(fresh=False)
    watch.set_seeding(False)
    watch.leave()
    project = make_project(tmp_path)

    resumed = Fleet(project, fleet_args(site.url, settings, "-n", "2"))
    assert resumed.wait() == 0, resumed.text
    assert "Resuming the unfinished crawl" in resumed.text
    assert site.page_fetches() == {}, "a resumed crawl must not be seeded again"

    watch.client.hset(watch.keys.state, mapping={"status": "running"})  # unfinished again
    fresh = Fleet(project, fleet_args(site.url, settings, "-n", "2", "--fresh"))
    assert fresh.wait() == 0, fresh.text
    assert "--fresh: discarded the previous crawl" in fresh.text
    fetches = site.page_fetches()
    assert len(fetches) == 40 and set(fetches.values()) == {1}


def test_a_worker_that_cannot_start_is_given_up_on(tmp_path, settings):
    # a setting only the workers read, with a value they reject: each one fails at start-up
    project = make_project(tmp_path)
    bad = {**settings, "CONCURRENT_REQUESTS": "many"}
    fleet = Fleet(project, ["links", "-n", "1", "--max-restarts", "1", *scrapy_args(bad)])
    assert fleet.wait() == 1, fleet.text
    text = fleet.text
    assert "died with exit status 1; restarting (1/1)" in text, text
    assert "died with exit status 1; not restarted (1/1 restarts used)" in text, text
    assert "ValueError" in text  # the end of the worker's log is shown
    assert "workers kept dying: worker 1 (exit status 1)" in text
