"""``scrapy fleet SPIDER -n N``: crawl with N processes sharing one Redis frontier.

Shipped through the ``scrapy.commands`` entry point, so it works in any Scrapy project that
installs scrapy-fleet (the project needs ``ADDONS = {"scrapy_fleet.addon.FleetAddon": 0}``,
in its settings or in the spider's ``custom_settings``). See docs/launcher.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.settings import BaseSettings
from scrapy.spiderloader import get_spider_loader
from scrapy.utils.conf import arglist_to_dict, build_component_list
from scrapy.utils.misc import load_object

from scrapy_fleet.addon import check_settings
from scrapy_fleet.commands.feed import entries_from, run_feed
from scrapy_fleet.config import ConfigError, FleetConfig
from scrapy_fleet.launcher import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_PROGRESS_INTERVAL,
    LaunchOptions,
    Launcher,
    print_status,
    status_reader,
)
from scrapy_fleet.observe.server import DEFAULT_WEB_PORT, StatusServer, parse_address, serve_until_stopped
from scrapy_fleet.pipelines import JsonLinesPipeline

logger = logging.getLogger(__name__)


def writes_json_lines(settings: BaseSettings) -> bool:
    """Whether the project's enabled ITEM_PIPELINES include the fleet's JSON-lines output.

    By class, not by name: a subclass counts, a pipeline of another name that merely
    contains "JsonLinesPipeline" does not.
    """
    for path in build_component_list(settings.getwithbase("ITEM_PIPELINES")):
        try:
            cls = load_object(path)
        except Exception as exc:  # noqa: BLE001 - whatever its import raises
            # the workers load it too and report the error; the launcher only loses the
            # output line of its summary
            logger.debug("Cannot load the item pipeline %r: %s", path, exc)
            continue
        if isinstance(cls, type) and issubclass(cls, JsonLinesPipeline):
            return True
    return False


class Command(ScrapyCommand):
    requires_project = True
    # the launcher runs no crawler and must hold no reactor: workers are child processes
    requires_crawler_process = False
    default_settings = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[options] <spider> | feed <spider> [URL ...] [-f FILE|-] | web <spider>"

    def short_desc(self) -> str:
        return "Run a spider in N processes sharing one Redis frontier (scrapy-fleet)"

    def long_desc(self) -> str:
        return (
            "Seed the spider's start requests into the shared Redis frontier once, run N "
            "`scrapy crawl` worker processes on it, show the progress of the whole crawl, "
            "restart workers that die and exit 0 when the crawl is finished. Ctrl-C once "
            "stops gracefully (resume with the same command), twice stops now. "
            "--status shows a crawl running anywhere on the same Redis. "
            "`scrapy fleet feed SPIDER URL...` (or -f FILE, -f - for stdin; a URL or a "
            "scrapy-redis JSON object per line) adds entries to the spider's crawl, "
            "running or not, without crawling. "
            "`scrapy fleet web SPIDER` serves the crawl's numbers (a page, /metrics for "
            "Prometheus, /api/status) without joining it; --web does it during a run."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("-n", "--workers", type=int, default=None, metavar="N",
                            help=f"worker processes (default the number of CPUs, {os.cpu_count()})")
        parser.add_argument("-a", dest="spargs", action="append", default=[], metavar="NAME=VALUE",
                            help="set a spider argument (may be repeated)")
        parser.add_argument("--join", action="store_true",
                            help="add workers to a crawl already running (here or on another "
                                 "machine sharing REDIS_URL), without seeding it")
        parser.add_argument("--fresh", action="store_true",
                            help="discard a previous unfinished crawl and start over")
        parser.add_argument("--status", action="store_true",
                            help="print the crawl's state, queue, workers and totals; do not crawl")
        parser.add_argument("--json", action="store_true", help="with --status: print JSON")
        parser.add_argument("--keep-alive", action="store_true",
                            help="never finish when the queue is empty: run until Ctrl-C/SIGTERM "
                                 "or FLEET_IDLE_TIMEOUT (FLEET_KEEP_ALIVE=1)")
        parser.add_argument("--web", metavar="[HOST:]PORT", default=None,
                            help="serve the crawl's numbers over HTTP while it runs: a page, "
                                 "/metrics (Prometheus) and /api/status (default host "
                                 f"127.0.0.1; with web, default port {DEFAULT_WEB_PORT})")
        parser.add_argument("-f", "--file", metavar="FILE", default=None,
                            help="with feed: read entries from FILE, one per line (- for stdin)")
        parser.add_argument("--logdir", metavar="DIR", default=None,
                            help="where worker logs go (default FLEET_DATA_DIR/logs/SPIDER)")
        parser.add_argument("--max-restarts", type=int, default=None, metavar="K",
                            help="restarts of a dying worker before giving up "
                                 f"(default FLEET_MAX_RESTARTS or {DEFAULT_MAX_RESTARTS})")

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        try:
            arglist_to_dict(opts.spargs)
        except ValueError:
            raise UsageError("Invalid -a value, use -a NAME=VALUE", print_help=False) from None
        if opts.workers is not None and opts.workers < 1:
            raise UsageError("-n must be at least 1", print_help=False)
        if opts.join and opts.fresh:
            raise UsageError("--join and --fresh exclude each other: --join adds workers to "
                             "a running crawl, --fresh throws it away", print_help=False)

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        web_only = bool(args) and args[0] == "web"
        if web_only:
            if len(args) != 2:
                raise UsageError("web: give one spider name: scrapy fleet web SPIDER", print_help=False)
            args = args[1:]
            opts.web = opts.web or str(DEFAULT_WEB_PORT)
        web = None
        if opts.web is not None:
            try:
                web = parse_address(opts.web)
            except ValueError as exc:
                raise UsageError(str(exc), print_help=False) from None
        feed = bool(args) and args[0] == "feed"
        urls: list[str] = []
        if feed and len(args) < 2:
            raise UsageError("feed: give a spider name: scrapy fleet feed SPIDER URL...",
                             print_help=False)
        if feed:
            args, urls = args[1:2], args[2:]
            if not urls and opts.file is None:
                raise UsageError("feed: give URLs, or -f FILE (- for stdin)", print_help=False)
            if opts.file not in (None, "-") and not os.path.isfile(opts.file):
                raise UsageError(f"feed: no file {opts.file!r}", print_help=False)
        elif len(args) != 1:
            raise UsageError("give exactly one spider name (or: feed SPIDER URL...)")
        elif opts.file is not None:
            raise UsageError("-f goes with feed: scrapy fleet feed SPIDER -f FILE", print_help=False)
        name = args[0]
        assert self.settings is not None
        settings = self.settings.copy()
        try:
            spidercls = get_spider_loader(settings).load(name)
        except KeyError:
            raise UsageError(f"Spider not found: {name}", print_help=False) from None
        spidercls.update_settings(settings)  # its custom_settings (REDIS_URL, prefix...)
        try:
            check_settings(settings)  # what every worker checks first, said once here
            config = FleetConfig.from_settings(settings)
        except ConfigError as exc:
            raise UsageError(str(exc), print_help=False) from None
        if opts.status:
            self.exitcode = print_status(name, config, as_json=opts.json)
            return
        server = None
        if web is not None:
            try:
                server = StatusServer(name, status_reader(name, config), *web)
            except OSError as exc:
                raise UsageError(f"--web {opts.web}: cannot listen there: {exc}", print_help=False) from None
            print(f"Serving the crawl of {name!r} on {server.start()} (/metrics, /api/status)", flush=True)
        try:
            if web_only:
                self.exitcode = serve_until_stopped()
                return
            self._run(name, spidercls, settings, config, opts, feed, urls)
        finally:
            if server is not None:
                server.stop()

    def _run(self, name: str, spidercls: Any, settings: BaseSettings, config: FleetConfig,
             opts: argparse.Namespace, feed: bool, urls: list[str]) -> None:
        if feed:
            self.exitcode = run_feed(spidercls, settings, config, arglist_to_dict(opts.spargs),
                                     entries_from(urls, opts.file), sys.stdout)
            return
        if opts.keep_alive:
            opts.set.append("FLEET_KEEP_ALIVE=1")
        if opts.loglevel:
            opts.set.append(f"LOG_LEVEL={opts.loglevel}")
        options = LaunchOptions(
            spider=name,
            workers=opts.workers or os.cpu_count() or 1,
            spider_args=list(opts.spargs),
            setting_args=list(opts.set),
            join=opts.join,
            fresh=opts.fresh or config.fresh,
            log_dir=opts.logdir,
            max_restarts=(opts.max_restarts if opts.max_restarts is not None
                          else settings.getint("FLEET_MAX_RESTARTS", DEFAULT_MAX_RESTARTS)),
            progress_interval=settings.getfloat("FLEET_PROGRESS_INTERVAL", DEFAULT_PROGRESS_INTERVAL),
            output=settings.get("FLEET_OUTPUT") or "output/%(name)s.jsonl",
            spider_class=f"{spidercls.__module__}.{spidercls.__qualname__}",
            item_pipelines=writes_json_lines(settings),
        )
        self.exitcode = Launcher(options, config, out=sys.stdout).run()
