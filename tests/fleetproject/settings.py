"""A minimal Scrapy project for the launcher tests: the link spider on the fleet frontier,
and a RedisSpider (feed) whose start URLs come from Redis."""

BOT_NAME = "fleetproject"
SPIDER_MODULES = ["spiders.linkspider", "spiders.feedspider", "spiders.faultyspider"]
ADDONS = {"scrapy_fleet.addon.FleetAddon": 0}
ITEM_PIPELINES = {}
ROBOTSTXT_OBEY = False
TELNETCONSOLE_ENABLED = False
LOG_LEVEL = "INFO"
