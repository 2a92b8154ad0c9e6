"""Kept for scrapy_fleet/frontier/start.py until it imports Scrapy's helper itself:
``scrapy.utils.asyncio.sleep`` (Scrapy 2.18+) waits on either reactor, asyncio or not."""

from scrapy.utils.asyncio import sleep as sleep  # noqa: PLC0414 (a re-export)
