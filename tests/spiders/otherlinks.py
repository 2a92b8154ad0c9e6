"""Another project's spider with the same name as linkspider.py (a different class)."""

import scrapy


class LinkSpider(scrapy.Spider):
    name = "links"
    custom_settings = {
        "ADDONS": {"scrapy_fleet.addon.FleetAddon": 0},
        "ITEM_PIPELINES": {},
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "INFO",
    }

    def __init__(self, start_url: str = "", **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [start_url]

    def parse(self, response):
        yield {"url": response.url, "title": response.css("title::text").get()}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse)
