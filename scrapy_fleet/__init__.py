"""scrapy-fleet: a Scrapy frontier kept in Redis, shared by many crawler processes."""

__version__ = "0.1.0"
