"""A scrapy-redis style spider, unchanged but for its import: start URLs come from Redis.
``FOLLOW=1`` follows every link (a crawl that keeps workers busy). With ``KILL_ONCE_FILE``
the first worker to meet an entry containing "kill" SIGKILLs itself while making its
request: after taking the batch, before storing it."""

import os
import signal

from scrapy_fleet.pipelines import JsonLinesPipeline
from scrapy_fleet.spiders import RedisSpider


class FeedSpider(RedisSpider):
    name = "redisfeed"
    # no redis_key: tests give each crawl its own with REDIS_START_URLS_KEY
    custom_settings = {
        "ADDONS": {"scrapy_fleet.addon.FleetAddon": 0},
        "ITEM_PIPELINES": {JsonLinesPipeline: 800},
        "TELNETCONSOLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "LOG_LEVEL": "INFO",
    }

    def make_request_from_data(self, data):
        marker = self.settings.get("KILL_ONCE_FILE")
        if marker and b"kill" in data:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass  # killed once already: a normal entry now
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().make_request_from_data(data)

    def parse(self, response):
        yield {"url": response.url, "title": response.css("title::text").get(),
               "job": response.meta.get("job"), "method": response.request.method}
        if self.settings.getbool("FOLLOW"):
            for href in response.css("a::attr(href)").getall():
                yield response.follow(href, callback=self.parse)
