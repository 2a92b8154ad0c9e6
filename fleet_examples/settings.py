"""Settings of the example project (``scrapy.cfg`` names them): what a user project adds.

Only the ADDONS line is needed to put any Scrapy project on the shared Redis frontier;
ITEM_PIPELINES adds the fleet's JSON-lines output.
"""

BOT_NAME = "fleet_examples"
SPIDER_MODULES = ["fleet_examples.spiders"]
NEWSPIDER_MODULE = "fleet_examples.spiders"

# The fleet frontier: requests, seen-set, leases and stats live in Redis. The add-on sets
# SCHEDULER, DUPEFILTER_CLASS and the start middleware (scrapy_fleet/addon.py).
ADDONS = {"scrapy_fleet.addon.FleetAddon": 0}

# REDIS_URL unset (here and in the environment) starts the embedded server under .fleet/.
# REDIS_URL = "redis://localhost:6379/0"

ITEM_PIPELINES = {
    "scrapy_fleet.pipelines.JsonLinesPipeline": 800,
}

ROBOTSTXT_OBEY = True
DOWNLOAD_TIMEOUT = 10
RETRY_TIMES = 2
FEED_EXPORT_ENCODING = "utf-8"
TELNETCONSOLE_ENABLED = False
LOG_LEVEL = "INFO"
