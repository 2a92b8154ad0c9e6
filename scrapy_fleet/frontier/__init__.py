"""The fleet frontier: Scrapy scheduler and dupefilter whose state lives in Redis."""
