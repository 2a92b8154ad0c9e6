"""A spider whose first page yields a request with a large meta blob (-a meta_bytes=N)."""

import scrapy

from spiders.linkspider import LinkSpider


class BigMetaSpider(scrapy.Spider):
    name = "bigmeta"
    custom_settings = LinkSpider.custom_settings

    def __init__(self, start_url: str = "", meta_bytes: str = "0", **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [start_url]
        self.meta_bytes = int(meta_bytes)

    def parse(self, response):
        yield {"url": response.url}
        yield response.follow("/page/1", meta={"blob": b"x" * self.meta_bytes}, callback=self.parse_leaf)
        yield response.follow("/page/2", callback=self.parse_leaf)

    def parse_leaf(self, response):
        yield {"url": response.url}
