"""A plain spider whose requests fail in every way a request can fail, each once: a 404,
a 500 retried to the end, a refused connection retried to the end, a callback that
raises, an errback that raises on a 410; and two that do not fail (a page, and a 404 the
spider asked to handle). The test knows exactly which errors the crawl must count."""

import scrapy


class FaultySpider(scrapy.Spider):
    name = "faulty"
    custom_settings = {
        "ADDONS": {"scrapy_fleet.addon.FleetAddon": 0},
        "ITEM_PIPELINES": {},
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "INFO",
        "RETRY_TIMES": 2,
    }

    def __init__(self, site: str = "", dead: str = "", **kwargs):
        super().__init__(**kwargs)
        self.site, self.dead = site, dead

    async def start(self):
        yield scrapy.Request(f"{self.site}/page/0", callback=self.parse)
        yield scrapy.Request(f"{self.site}/status/404?handled", callback=self.parse,
                             meta={"handle_httpstatus_list": [404]})
        yield scrapy.Request(f"{self.site}/status/404", callback=self.parse)
        yield scrapy.Request(f"{self.site}/status/500", callback=self.parse)
        yield scrapy.Request(f"{self.dead}/refused", callback=self.parse)
        yield scrapy.Request(f"{self.site}/page/1", callback=self.explode)
        yield scrapy.Request(f"{self.site}/status/410", callback=self.parse, errback=self.failed)

    def parse(self, response):
        yield {"url": response.url, "status": response.status}

    def explode(self, response):
        raise ValueError("the callback could not read this page")

    def failed(self, failure):
        raise RuntimeError("the errback raised too")
