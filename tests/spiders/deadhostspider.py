"""A plain spider whose pages may be unreachable: each failure's error type is counted in
the stats (``test/errors/<type>``), as a spider's errback would see it."""

import scrapy


class DeadHostSpider(scrapy.Spider):
    name = "deadhosts"
    custom_settings = {
        "ADDONS": {"scrapy_fleet.addon.FleetAddon": 0},
        "ITEM_PIPELINES": {},
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "INFO",
    }

    def __init__(self, urls: str = "", **kwargs):
        super().__init__(**kwargs)
        self.urls = urls.split(",")

    async def start(self):
        for url in self.urls:
            yield scrapy.Request(url, errback=self.failed)

    def failed(self, failure):
        self.crawler.stats.inc_value(f"test/errors/{type(failure.value).__name__}")
