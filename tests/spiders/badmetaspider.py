"""A spider whose callback yields a request the frontier cannot store (a set in meta)."""

from spiders.linkspider import LinkSpider


class BadMetaSpider(LinkSpider):
    name = "badmeta"

    def parse(self, response):
        yield {"url": response.url}
        yield response.follow("/page/1", meta={"tags": {"a", "b"}}, callback=self.parse)
        yield response.follow("/page/2", callback=self.parse_leaf)

    def parse_leaf(self, response):
        yield {"url": response.url}
