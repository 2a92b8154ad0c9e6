"""What ``scrapy fleet`` was asked to do, as the command parsed it."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PROGRESS_INTERVAL = 5.0  # s between plain progress lines when stdout is no terminal
DEFAULT_MAX_RESTARTS = 3  # restarts of one worker slot before the launcher gives up on it


@dataclass
class LaunchOptions:
    spider: str
    workers: int
    spider_args: list[str] = field(default_factory=list)  # "NAME=VALUE" for -a
    setting_args: list[str] = field(default_factory=list)  # "NAME=VALUE" for -s
    join: bool = False
    fresh: bool = False
    log_dir: str | None = None
    max_restarts: int = DEFAULT_MAX_RESTARTS
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    output: str | None = None  # FLEET_OUTPUT of the project, for the summary
    spider_class: str = ""  # module.Class of the spider: who made the crawl
    item_pipelines: bool = True  # whether the project writes items anywhere
