"""Base classes for spiders on the fleet frontier: scrapy-redis's ``RedisSpider`` and
``RedisCrawlSpider`` (:mod:`.redis`, docs/migrating.md).

It holds no spiders: a project's spiders live in that project (the examples of this
checkout in ``fleet_examples/spiders/``), so installing the plugin never adds spiders to
another project's ``scrapy list``.
"""

from scrapy_fleet.spiders.redis import RedisCrawlSpider, RedisMixin, RedisSpider

__all__ = ["RedisCrawlSpider", "RedisMixin", "RedisSpider"]
