"""The JSON-lines output end to end: real `scrapy` processes on the fleet, a real Redis,
a local site, and real faults (a file size limit, SIGKILL between a write and its ack)."""

from __future__ import annotations

import json
import re
import resource
import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import Output, runspider
from local_site import LinkedSite
from scrapy_fleet.errors import EXIT_FATAL

pytestmark = pytest.mark.slow  # every test runs real `scrapy` workers

PAGES = 30
EVERY_ITEM = sorted((f"/page/{page}", part) for page in range(PAGES) for part in (1, 2))


@pytest.fixture
def site(serve) -> LinkedSite:
    return serve(LinkedSite(PAGES))


def crawl(cwd: Path, site: LinkedSite, settings: dict[str, str], file_size_limit: int | None = None) -> Output:
    """tests/spiders/outputspider.py in a subprocess, optionally under RLIMIT_FSIZE."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # kept across exec: EFBIG, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return runspider(cwd, "outputspider.py", settings, {"start_url": f"{site.url}/page/0"},
                     preexec_fn=limit if file_size_limit is not None else None)


def items_in(path: Path) -> list[tuple[str, int]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a torn last line"
    records = [json.loads(line) for line in data.split(b"\n")[:-1]]
    return sorted((urlsplit(r["url"]).path, r["part"]) for r in records)


def test_an_output_that_cannot_be_written_stops_the_worker_and_a_rerun_completes_it(
    tmp_path: Path, site: LinkedSite, fleet_settings: dict[str, str]
) -> None:
    out = tmp_path / "items.jsonl"
    settings = {**fleet_settings, "FLEET_OUTPUT": str(out), "CONCURRENT_REQUESTS": "4"}
    failing = crawl(tmp_path, site, settings, file_size_limit=1500)  # room for about 25 lines
    assert failing.finish() == EXIT_FATAL, failing.text[-3000:]
    # whichever of the output and its ledger reached the limit first, the output is named
    stopped = rf"an item could not be stored: cannot write to {out}(\.ledger \(the ledger of {out}\))?: EFBIG"
    assert re.search(stopped, failing.text), failing.text[-3000:]
    written = items_in(out)
    assert 0 < len(written) < len(EVERY_ITEM)
    assert len(set(written)) == len(written)

    rerun = crawl(tmp_path, site, settings)  # the fault is gone: the crawl resumes
    assert rerun.finish() == 0, rerun.text[-3000:]
    assert items_in(out) == EVERY_ITEM  # every missing item, and each exactly once


def test_a_worker_killed_between_a_write_and_its_ack_duplicates_nothing(
    tmp_path: Path, site: LinkedSite, fleet_settings: dict[str, str]
) -> None:
    out = tmp_path / "items.jsonl"
    settings = {**fleet_settings, "FLEET_OUTPUT": str(out), "CONCURRENT_REQUESTS": "4",
                "FLEET_LEASE_TIMEOUT": "1"}  # the killed worker's leases come back fast
    killed = crawl(tmp_path, site, {**settings, "KILL_AFTER_ITEMS": "15"})
    assert killed.finish() == -signal.SIGKILL
    assert len(items_in(out)) == 15

    resumed = crawl(tmp_path, site, settings)
    assert resumed.finish() == 0, resumed.text[-3000:]
    assert resumed.stat("fleet/output/duplicates_dropped") >= 1  # the killed request ran again
    assert items_in(out) == EVERY_ITEM

    # the crawl is finished: the next run is a new crawl, whose output replaces this one
    again = crawl(tmp_path, site, settings)
    assert again.finish() == 0, again.text[-3000:]
    assert again.stat("fleet/output/new_crawl_truncated") == 1
    assert items_in(out) == EVERY_ITEM
