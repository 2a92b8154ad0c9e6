"""Looking at a crawl from outside: Prometheus metrics, a JSON status and a web page,
served from the crawl's state in Redis (``scrapy fleet web``, ``scrapy fleet --web``)."""
