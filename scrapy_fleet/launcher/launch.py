"""``scrapy fleet SPIDER``: open the crawl, supervise the workers, decide, report."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.launcher.opening import open_crawl
from scrapy_fleet.launcher.options import LaunchOptions
from scrapy_fleet.launcher.policy import decide
from scrapy_fleet.launcher.progress import Progress
from scrapy_fleet.launcher.report import summary
from scrapy_fleet.launcher.supervisor import Supervisor
from scrapy_fleet.launcher.watch import CrawlWatch
from scrapy_fleet.launcher.workers import Worker


class Launcher:
    def __init__(self, options: LaunchOptions, config: FleetConfig, *,
                 out: IO[str] | None = None, python: str = sys.executable) -> None:
        self.options = options
        self.config = config
        self.python = python
        self.keys = CrawlKeys(config.key_prefix, options.spider)
        self.progress = Progress(out or sys.stdout, options.spider, options.progress_interval)

    def log_dir(self) -> Path:
        if self.options.log_dir:
            return Path(self.options.log_dir)
        return Path(self.config.data_dir) / "logs" / self.options.spider

    def run(self) -> int:
        """Crawl to the end (or until stopped); the exit status of ``scrapy fleet``."""
        opened = open_crawl(self.options, self.config, self.keys, self.progress.say)
        if isinstance(opened, int):
            return opened
        # one seeder, unless joining or the start requests are all in already
        seeder = not self.options.join and not opened.seeded
        workers = [Worker(slot=slot, seed=seeder and slot == 1, older_outcomes=opened.outcome_ids)
                   for slot in range(1, self.options.workers + 1)]
        watch = CrawlWatch(opened.url, self.keys, self.config)
        supervisor = Supervisor(self.options, self.config, watch, self.progress, workers,
                                self.log_dir(), python=self.python)
        try:
            verdict = decide(supervisor.run())
        finally:
            watch.close()
        output = self.options.output if self.options.item_pipelines else None
        elapsed = time.monotonic() - self.progress.started
        self.progress.say(summary(self.options.spider, verdict.why, supervisor.final_status,
                                  watch.error, elapsed, workers, output,
                                  pages_before=supervisor.pages_before or 0))
        return verdict.status
