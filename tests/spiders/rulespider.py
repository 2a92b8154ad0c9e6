"""A CrawlSpider on the fleet frontier: its links carry CrawlSpider's own _callback/_errback."""

from scrapy.linkextractors import LinkExtractor
from scrapy.spiders import CrawlSpider, Rule

from spiders.linkspider import LinkSpider


class RuleSpider(CrawlSpider):
    name = "rules"
    custom_settings = LinkSpider.custom_settings
    rules = (Rule(LinkExtractor(allow=r"/page/"), callback="parse_page", errback="on_error",
                  follow=True),)

    def __init__(self, start_url: str = "", **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [start_url]

    def parse_page(self, response):
        yield {"url": response.url}

    def on_error(self, failure):
        self.logger.error("rule errback: %s", failure.request.url)
