"""A spider whose callback yields a request the frontier cannot store (a set in meta)."""

import scrapy


class BadMetaSpider(scrapy.Spider):
    name = "badmeta"
    custom_settings = {
        "ADDONS": {"scrapy_fleet.addon.FleetAddon": 0},
        "ITEM_PIPELINES": {},
        "TELNETCONSOLE_ENABLED": False,
    }

    def __init__(self, start_url: str = "", **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [start_url]

    def parse(self, response):
        yield {"url": response.url}
        yield response.follow("/page/1", meta={"tags": {"a", "b"}}, callback=self.parse)
        yield response.follow("/page/2", callback=self.parse_leaf)

    def parse_leaf(self, response):
        yield {"url": response.url}
