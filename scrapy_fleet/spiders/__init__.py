"""Base classes for spiders on the fleet frontier (none yet; a ``RedisSpider`` may come here).

It holds no spiders: a project's spiders live in that project (the examples of this
checkout in ``fleet_examples/spiders/``), so installing the plugin never adds spiders to
another project's ``scrapy list``.
"""
