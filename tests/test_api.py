"""scrapy_fleet.api: what a spider may ask of the plugin, asked from a real crawl's start()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import runspider_args, scrapy

pytestmark = pytest.mark.slow  # a real `scrapy runspider`

PROBE = '''
import scrapy

from scrapy_fleet.api import on_fleet_frontier


class ProbeSpider(scrapy.Spider):
    name = "probe"

    async def start(self):
        self.logger.info("on_fleet_frontier in start(): %s", on_fleet_frontier(self.crawler))
        return
        yield
'''


def probe(tmp_path: Path, settings: dict[str, str]) -> str:
    spider = tmp_path / "probe.py"
    spider.write_text(PROBE)
    result = scrapy(tmp_path, *runspider_args(spider, {"TELNETCONSOLE_ENABLED": "0", **settings}))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.mark.parametrize("on_fleet", [True, False], ids=["add-on", "plain"])
def test_on_fleet_frontier_tells_start_which_scheduler_it_feeds(
        tmp_path: Path, fleet_settings: dict[str, str], on_fleet: bool) -> None:
    addon = {"ADDONS": json.dumps({"scrapy_fleet.addon.FleetAddon": 0})} if on_fleet else {}
    log = probe(tmp_path, {**fleet_settings, **addon})
    assert f"on_fleet_frontier in start(): {on_fleet}" in log
