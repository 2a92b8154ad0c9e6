"""The ``scrapy fleet`` command: registration, arguments, --status, --fresh, resuming."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import Fleet, fleet_args, frontier, make_project, scrapy, scrapy_args, scrapy_env, wait_for
from local_site import LinkedSite


@pytest.fixture
def site():
    s = LinkedSite(40).start()
    yield s
    s.stop()


@pytest.fixture
def settings(fleet_settings: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**fleet_settings, "FLEET_DATA_DIR": str(tmp_path / ".fleet"), "FLEET_LEASE_TIMEOUT": "3"}


@pytest.mark.slow
def test_the_command_is_registered_through_the_entry_point(tmp_path):
    result = scrapy(make_project(tmp_path), "-h")
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
        (["feed"], "feed: give a spider name"),
        (["feed", "links"], "feed: give URLs, or -f FILE"),
        (["feed", "links", "-f", "missing.txt"], "feed: no file 'missing.txt'"),
        (["feed", "nosuchspider", "http://a.example/"], "Spider not found: nosuchspider"),
        (["links", "-f", "urls.txt"], "-f goes with feed"),
        (["links", "-s", "FLEET_IDLE_TIMEOUT=-1"], "FLEET_IDLE_TIMEOUT must be at least 0"),
        (["links", "-s", "SCHEDULER=scrapy_redis.scheduler.Scheduler"],
         "SCHEDULER = 'scrapy_redis.scheduler.Scheduler' is left from scrapy-redis"),
    ],
)
@pytest.mark.slow
def test_usage_errors_exit_2(tmp_path, args, message):
    result = scrapy(make_project(tmp_path), "fleet", *args)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr


@pytest.mark.slow
def test_join_without_a_crawl_exits_2(tmp_path, settings):
    result = scrapy(make_project(tmp_path), "fleet", "links", "--join", "-n", "1", *scrapy_args(settings))
    assert result.returncode == 2
    assert "no crawl of 'links'" in result.stdout and "to join" in result.stdout


@pytest.mark.slow
def test_status_of_no_crawl_then_of_a_finished_one(tmp_path, site, settings, redis_url, key_prefix):
    project = make_project(tmp_path)
    result = scrapy(project, "fleet", "links", "--status", *scrapy_args(settings))
    assert result.returncode == 0
    assert "No crawl of 'links'" in result.stdout

    fleet = Fleet(project, fleet_args(site.url, settings, "-n", "2"))
    assert fleet.wait() == 0, fleet.text
    result = scrapy(project, "fleet", "links", "--status", *scrapy_args(settings))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Crawl of 'links' on" in out and ": done" in out
    assert "pending 0  leased 0  seen 40" in out
    assert "pages 40" in out

    as_json = scrapy(project, "fleet", "links", "--status", "--json", *scrapy_args(settings))
    import json

    data = json.loads(as_json.stdout)
    assert data["state"]["status"] == "done" and data["stats"]["pages"] == 40 and data["seen"] == 40

    # joining a finished crawl does nothing (and does not restart it)
    joined = scrapy(project, "fleet", "links", "--join", "-n", "1", *scrapy_args(settings))
    assert joined.returncode == 0 and "already finished" in joined.stdout
    assert frontier(redis_url, key_prefix).status()["state"]["status"] == "done"


@pytest.mark.slow
def test_status_lists_live_workers(tmp_path, settings, redis_url, key_prefix):
    watch = frontier(redis_url, key_prefix)
    watch.open(fresh=False)  # a worker "test" that has just sent a heartbeat
    result = scrapy(make_project(tmp_path), "fleet", "links", "--status", *scrapy_args(settings))
    assert "workers 1 (1 alive)" in result.stdout
    assert "test" in result.stdout and "last heartbeat" in result.stdout
    assert "seeded    not yet" in result.stdout


@pytest.mark.slow
def test_a_finished_crawl_is_started_afresh_by_the_next_launch(tmp_path, site, settings):
    project = make_project(tmp_path)
    assert Fleet(project, fleet_args(site.url, settings, "-n", "1")).wait() == 0
    again = Fleet(project, fleet_args(site.url, settings, "-n", "2"))
    assert again.wait() == 0, again.text
    assert "previous crawl of 'links' had finished; starting a new one" in again.text
    assert set(site.page_fetches().values()) == {2}  # every page once per crawl


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.fixture
def password_redis(tmp_path):
    """A redis-server on 127.0.0.1 that wants a password; yields its URL with the password."""
    import socket

    import redis

    from scrapy_fleet.redis_server import connect, find_redis_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--requirepass", "s3cretpw", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://:s3cretpw@127.0.0.1:{port}/0"
    client = connect(url)
    wait_for(lambda: _pings(client, redis), what="the password-protected Redis")
    client.close()
    yield url
    server.terminate()
    server.wait(10)


def _pings(client, redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
def test_a_redis_password_given_with_s_never_reaches_a_worker_command_line(
    tmp_path, password_redis, key_prefix
):
    # the project's settings.py names another Redis: -s must still win, as it does for -s
    project = make_project(tmp_path)
    (project / "pwproject.py").write_text(
        "from fleetproject.settings import *\nREDIS_URL = 'redis://127.0.0.1:9/0'\n")
    (project / "scrapy.cfg").write_text("[settings]\ndefault = pwproject\n")
    site = LinkedSite(60, delay=0.05).start()
    settings = {"REDIS_URL": password_redis, "FLEET_KEY_PREFIX": key_prefix,
                "FLEET_DATA_DIR": str(tmp_path / ".fleet"), "CONCURRENT_REQUESTS": "2"}
    fleet = Fleet(project, fleet_args(site.url, settings, "-n", "2"))
    try:
        watch = frontier(password_redis, key_prefix)
        wait_for(lambda: sum(w["alive"] for w in watch.status()["workers"]) == 2,
                 what="both workers to register")
        workers = [int(w["id"].split(":")[1]) for w in watch.status()["workers"]]
        processes = _descendants(fleet.proc.pid)
        assert set(workers) <= set(processes)
        for pid in processes:
            assert b"s3cretpw" not in Path(f"/proc/{pid}/cmdline").read_bytes(), pid
        assert fleet.wait() == 0, fleet.text
    finally:
        if fleet.proc.poll() is None:  # a failed assert: stop what this test started
            stray = [fleet.proc.pid, *_descendants(fleet.proc.pid)]
            for pid in stray:
                os.kill(pid, signal.SIGKILL)
        site.stop()
    assert set(site.page_fetches().values()) == {1} and len(site.page_fetches()) == 60
    assert "s3cretpw" not in fleet.text
    for log in (tmp_path / ".fleet" / "logs" / "links").iterdir():
        text = log.read_text()
        assert "s3cretpw" not in text and "Spider closed (finished)" in text, log
        assert oct(log.stat().st_mode & 0o777) == oct(0o600)


class LookalikeJsonLinesPipeline:
    """Not the fleet's pipeline, whatever its name says."""


def test_the_json_lines_output_is_found_by_class_not_by_name():
    from scrapy.settings import Settings

    from scrapy_fleet.commands.fleet import writes_json_lines
    from scrapy_fleet.pipelines import JsonLinesPipeline

    class MyOutput(JsonLinesPipeline):
        pass

    def writes(pipelines: dict[object, int | None]) -> bool:
        return writes_json_lines(Settings({"ITEM_PIPELINES": pipelines}))

    assert writes({"scrapy_fleet.pipelines.JsonLinesPipeline": 800})
    assert writes({MyOutput: 800, "scrapy_fleet.itemkeys.ItemKeyMiddleware": 100})
    assert not writes({})
    assert not writes({LookalikeJsonLinesPipeline: 800})
    assert not writes({"scrapy_fleet.pipelines.JsonLinesPipeline": None})  # disabled
    # an entry that cannot be loaded is the workers' error to report, not the launcher's
    assert not writes({"no_such_module.JsonLinesPipeline": 800})
