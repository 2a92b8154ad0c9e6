"""The example spiders: ``alexa`` (a top-sites list), ``maoyan`` (the Maoyan TOP100 board),
and scrapy-redis's example spiders ``myspider_redis`` and ``mycrawler_redis``, moved to the
fleet by their import line (docs/migrating.md)."""
