"""The dashboard (scrapy_fleet/observe/static/) in a real headless Chromium, during a real
`scrapy fleet --web` crawl: it must show the crawl's live numbers, then it is
photographed (``FLEET_SCREENSHOT=docs/dashboard.png`` keeps the picture for the README).

Debian's ``chromium`` package is the browser; .ci/run installs it where it is missing.
Where it cannot be installed this test is skipped, saying so."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Fleet, fleet_args, free_port, make_project, wait_for
from local_site import LinkedSite
from scrapy_fleet.observe.server import StatusServer

WINDOW = "1280,900"


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium to open the dashboard in: install Debian's chromium package "
                "(.ci/run does, with apt-get, where it can)")


def browse(browser: str, profile: Path, url: str, *extra: str) -> str:
    """Load ``url`` headless, let its scripts run (3 s of virtual time), then ``extra``
    (--dump-dom prints the page as its scripts left it)."""
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
         f"--window-size={WINDOW}", "--virtual-time-budget=3000", *extra, url],
        capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def shown(dom: str) -> dict[str, object]:
    """What the page shows: the chart's points, the worker rows' pages, the counters."""
    points = re.search(r'id="rate-chart"[^>]*data-points="(\d+)"', dom)
    return {
        "points": int(points.group(1)) if points else 0,
        "worker_pages": [int(p) for p in re.findall(r'<tr[^>]*data-pages="(\d+)"', dom)],
        "pages": re.search(r'id="pages">([^<]*)<', dom).group(1),
        "state": re.search(r'id="state"[^>]*>([^<]*)<', dom).group(1),
    }


@pytest.mark.slow
def test_the_dashboard_shows_a_live_crawl_in_a_real_browser(tmp_path: Path, serve, fleet_settings):
    browser = chromium()
    # slow enough to be watched: 2 requests at a time, 0.3 s each; every 7th page has a
    # broken link, so the error chart has something to show
    site = serve(LinkedSite(150, delay=0.3, dead_links_every=7))
    port = free_port()
    project = make_project(tmp_path / "project")
    crawl = Fleet(project, fleet_args(site.url, fleet_settings, "-n", "2", "--web",
                                      f"127.0.0.1:{port}", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=2",
                                      "-s", "DOWNLOAD_DELAY=0.1"))
    crawl.wait_for(r"Serving the crawl of 'links'")
    url = f"http://127.0.0.1:{port}/"
    profile = tmp_path / "chromium"

    def live() -> dict[str, object] | None:
        page = shown(browse(browser, profile, url, "--dump-dom"))
        workers = page["worker_pages"]
        # a few points, so the chart has a shape for the picture
        if page["points"] >= 6 and len(workers) == 2 and sum(workers) > 0:
            return page
        return None

    page = wait_for(live, what="the dashboard's chart and worker table to show the crawl")
    assert page["state"] == "running" and int(str(page["pages"]).replace(",", "")) > 0
    picture = tmp_path / "dashboard.png"
    browse(browser, profile, url, f"--screenshot={picture}")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
    if os.environ.get("FLEET_SCREENSHOT"):
        shutil.copyfile(picture, os.environ["FLEET_SCREENSHOT"])
    assert crawl.wait() == 0, crawl.text


@pytest.mark.slow
def test_the_dashboard_shows_text_from_redis_as_text_and_says_when_redis_is_away(tmp_path: Path):
    browser = chromium()
    evil = '<img src=x onerror="document.title=\'owned\'">'
    status = {
        "stats": {"pages": 3, "acked": 3}, "state": {"status": "running"}, "seen": 3, "now": 1.0,
        "workers": [{"id": evil, "alive": True, "last_heartbeat_s": 0.5, "seeding": False,
                     "host": evil, "state": "idle", "why": evil, "pages": 3}],
        "errors_by_kind": {evil: 1},
        "hosts": {"busiest": [{"host": evil, "queued": 1, "in_flight": 0, "errors": 1,
                               "delay_s": 0.0, "backoff_s": 0.0, "backoffs": 0}],
                  "slowest": [], "most_errors": []},
    }
    reachable = [True]

    def read() -> dict:
        if not reachable[0]:
            raise ConnectionError("Redis at redis://10.9.9.9:6379/0 refused the connection")
        return status

    server = StatusServer("links", read, sample_every=0.05)
    url = server.start()
    try:
        dom = browse(browser, tmp_path / "chromium", url, "--dump-dom")
        assert "<img" not in dom.split("<body", 1)[1]  # shown as text, never as markup
        assert "&lt;img src=x" in dom
        assert re.search(r"<title>links: running", dom)  # the onerror never ran
        reachable[0] = False
        dom = browse(browser, tmp_path / "chromium", url, "--dump-dom")
        problem = re.search(r'<p id="problem"([^>]*)>([^<]*)<', dom)
        assert problem and "hidden" not in problem.group(1)
        assert "refused the connection" in problem.group(2)
    finally:
        server.stop()
