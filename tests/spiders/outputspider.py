"""A plain spider on the fleet whose items (two plain dicts per page, no key of their own)
go through the JSON-lines pipeline; ``KILL_AFTER_ITEMS`` SIGKILLs it after that many items
are written, before their request is acknowledged."""

import os
import signal

from linkspider import LinkSpider  # runspider imports this file from its directory

from scrapy_fleet.pipelines import JsonLinesPipeline


class KillAfterPipeline:
    """Runs after JsonLinesPipeline: the item is in the file, its request not yet acked."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.seen = 0

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler.settings.getint("KILL_AFTER_ITEMS"))

    def process_item(self, item):
        self.seen += 1
        if self.after and self.seen >= self.after:
            os.kill(os.getpid(), signal.SIGKILL)
        return item


class OutputSpider(LinkSpider):
    name = "output"
    custom_settings = {
        **LinkSpider.custom_settings,
        "ITEM_PIPELINES": {JsonLinesPipeline: 800, KillAfterPipeline: 900},
    }

    def parse(self, response):
        yield {"url": response.url, "part": 1}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse)
        yield {"url": response.url, "part": 2}
