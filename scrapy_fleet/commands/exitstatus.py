"""Scrapy's ``crawl`` and ``runspider``, exiting non-zero when the fleet stopped on a fault.

Registered under the ``scrapy.commands`` entry point with Scrapy's own names: they are
Scrapy's commands unchanged (same options, same output) except that a worker that stopped
on a fault the fleet reported (Redis gone, out of memory, the crawl's data lost, the
output not writable...) exits with that fault's status (3 or 4, scrapy_fleet.errors)
instead of 0. Without the fleet nothing is recorded and they behave exactly as Scrapy's.
"""

from __future__ import annotations

import argparse

from scrapy.commands.crawl import Command as ScrapyCrawl
from scrapy.commands.runspider import Command as ScrapyRunSpider

from scrapy_fleet.errors import exit_status


class _ExitStatus:
    exitcode: int

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        super().run(args, opts)  # type: ignore[misc]
        self.exitcode = self.exitcode or exit_status()


class CrawlCommand(_ExitStatus, ScrapyCrawl):
    pass


class RunSpiderCommand(_ExitStatus, ScrapyRunSpider):
    pass
