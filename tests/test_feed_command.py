"""``scrapy fleet feed``: entries into a spider's crawl, running or not, counted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from conftest import Fleet, frontier, make_project, read_items, scrapy, scrapy_args, wait_for
from local_site import LinkedSite
from test_redis_spider import redis_cli


@pytest.fixture
def settings(fleet_settings: dict[str, str], tmp_path: Path) -> dict[str, str]:
    prefix = fleet_settings["FLEET_KEY_PREFIX"]
    return {**fleet_settings, "FLEET_DATA_DIR": str(tmp_path / ".fleet"),
            "REDIS_START_URLS_KEY": f"{prefix}:%(name)s:start_urls",
            "FLEET_OUTPUT": str(tmp_path / "out" / "%(name)s.jsonl")}


def test_feed_counts_accepted_duplicates_and_bad_entries(tmp_path: Path, settings, redis_url,
                                                         key_prefix) -> None:
    project = make_project(tmp_path)
    (tmp_path / "urls.txt").write_text(
        "http://a.example/1\nhttp://a.example/1\n\n"
        '{"url": "http://b.example/x", "meta": {"job": "7"}}\nnot a url\n{"nourl": 1}\n')
    result = scrapy(project, "fleet", "feed", "links", "http://a.example/0", "-f", "urls.txt",
                    *scrapy_args(settings))
    assert result.returncode == 1, result.stdout + result.stderr  # some were bad
    assert ("Fed 6 entries into a new crawl of 'links'" in result.stdout
            and "3 accepted, 1 duplicate, 2 bad" in result.stdout), result.stdout
    assert "bad entry 5: BadEntry" in result.stdout and "bad entry 6: BadEntry" in result.stdout
    again = subprocess_stdin(project, settings, "http://a.example/0\nhttp://c.example/\n")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "into the crawl of 'links'" in again.stdout and "1 accepted, 1 duplicate, 0 bad" in again.stdout
    status = frontier(redis_url, key_prefix).status()
    assert status["stats"]["pending"] == 4 and status["workers"] == []  # a producer, not a worker


def subprocess_stdin(project: Path, settings: dict[str, str], text: str):
    import subprocess

    from conftest import SCRAPY, scrapy_env

    return subprocess.run([*SCRAPY, "fleet", "feed", "links", "-f", "-", *scrapy_args(settings)],
                          cwd=project, env=scrapy_env(), input=text, capture_output=True,
                          text=True, timeout=120)


def test_feed_when_redis_is_unreachable_says_so(tmp_path: Path, settings) -> None:
    unreachable = {**settings, "REDIS_URL": "redis://127.0.0.1:1/0", "FLEET_REDIS_RETRY_TIMEOUT": "0.5"}
    result = scrapy(make_project(tmp_path), "fleet", "feed", "links", "http://a.example/",
                    *scrapy_args(unreachable))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "scrapy fleet feed: Redis at redis://127.0.0.1:1/0 unreachable" in result.stdout


@pytest.mark.slow
def test_feed_a_running_fleet_and_a_worker_killed_mid_feed_loses_nothing(
        tmp_path: Path, settings, redis_url, key_prefix, serve) -> None:
    """Entries fed with `scrapy fleet feed` and pushed with redis-cli into a running
    RedisSpider fleet are all crawled; the worker that takes the batch holding the "kill"
    entry dies (SIGKILL) after taking it and before storing it: the batch goes back into
    the key when its lease runs out, and another worker crawls it."""
    site = serve(LinkedSite(60))
    project = make_project(tmp_path)
    run = {**settings, "FLEET_IDLE_TIMEOUT": "8", "FLEET_LEASE_TIMEOUT": "2",
           "FLEET_POLL_INTERVAL": "0.05", "FLEET_PROGRESS_INTERVAL": "1",
           "REDIS_START_URLS_BATCH_SIZE": "8", "KILL_ONCE_FILE": str(tmp_path / "killed")}
    fleet = Fleet(project, ["redisfeed", "-n", "2", *scrapy_args(run)])
    watch = frontier(redis_url, key_prefix, "redisfeed")
    wait_for(lambda: len([w for w in watch.status()["workers"] if w["alive"]]) == 2,
             what="two workers")
    fed = scrapy(project, "fleet", "feed", "redisfeed",
                 *[f"{site.url}/page/{n}" for n in range(30)], *scrapy_args(run))
    assert fed.returncode == 0 and "30 accepted, 0 duplicates, 0 bad" in fed.stdout, fed.stdout
    key = f"{key_prefix}:redisfeed:start_urls"
    entries = [f"{site.url}/page/{n}" for n in range(30, 60) if n != 45]
    entries.insert(7, json.dumps({"url": f"{site.url}/page/45", "meta": {"kill": 1}}))
    entries.insert(3, "not a url")
    redis_cli(redis_url, "RPUSH", key, *entries)
    assert fleet.wait() == 0, fleet.text  # ended by its idle timeout
    assert re.search(r"worker \d \(pid \d+\) died with signal 9 \(SIGKILL\); restarting", fleet.text), fleet.text
    assert (tmp_path / "killed").exists()
    assert "bad start entries 1 (see the worker logs)" in fleet.text, fleet.text
    assert set(site.page_fetches()) == {f"/page/{n}" for n in range(60)}, "an entry was lost"
    items = read_items(tmp_path / "out" / "%(name)s.jsonl", "redisfeed")
    assert sorted(i["url"] for i in items) == sorted(f"{site.url}/page/{n}" for n in range(60))
    client = redis.Redis.from_url(redis_url)
    assert client.llen(key) == 0
    assert client.exists(f"{key_prefix}:feeding:{{{key}}}") == 0
    assert watch.status()["state"].get("ended_by") == "idle_timeout"
