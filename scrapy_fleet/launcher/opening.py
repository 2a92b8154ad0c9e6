"""Before any worker starts: find Redis, then start, resume, wipe or join the crawl.

Done once, here, and never by the workers (they all run with ``FLEET_FRESH=0``): N workers
deciding at once whether to wipe a finished crawl would race.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import FrontierFault
from scrapy_fleet.launcher.formatting import plural, when
from scrapy_fleet.launcher.options import LaunchOptions
from scrapy_fleet.launcher.policy import EXIT_FINISHED, EXIT_USAGE
from scrapy_fleet.launcher.watch import launcher_frontier
from scrapy_fleet.redis_server import RedisUnavailable, redact, resolve_url


@dataclass(frozen=True)
class OpenedCrawl:
    url: str  # the Redis the workers are to use (the embedded one is running by now)
    seeded: bool  # every start request is in the frontier already: nobody seeds
    outcome_ids: frozenset[str]  # outcomes recorded before this launch (not its workers')


def open_crawl(options: LaunchOptions, config: FleetConfig, keys: CrawlKeys,
               say: Callable[[str], None]) -> OpenedCrawl | int:
    """Get the crawl ready for the workers; an int is the exit status to end with."""
    try:
        url = resolve_url(config.redis_url, config.data_dir)
        frontier = launcher_frontier(url, keys, config)
    except RedisUnavailable as exc:
        say(f"scrapy fleet: {exc}")
        return EXIT_USAGE
    try:
        state = frontier.status()["state"]
        name = options.spider
        where = redact(url)
        if options.join:
            if not state:
                say(f"scrapy fleet: no crawl of {name!r} on {where} to join; "
                    f"start one with `scrapy fleet {name}`")
                return EXIT_USAGE
            if state.get("status") == "done":
                say(f"The crawl of {name!r} on {where} is already finished; nothing to join.")
                return EXIT_FINISHED
            say(f"Joining the running crawl of {name!r} on {where} "
                f"with {plural(options.workers, 'worker')}")
        elif options.fresh and state:
            frontier.wipe()
            say(f"--fresh: discarded the previous crawl of {name!r} on {where}")
            state = {}
        elif state.get("status") == "done":
            frontier.wipe()
            say(f"The previous crawl of {name!r} had finished; starting a new one on {where}")
            state = {}
        elif state:
            say(f"Resuming the unfinished crawl of {name!r} on {where} "
                f"(started {when(state.get('started_at'))}); --fresh starts over")
        else:
            say(f"Starting a new crawl of {name!r} on {where} "
                f"with {plural(options.workers, 'worker')}")
        if state.get("status") == "failed":
            say(f"The last run failed ({state.get('error') or 'no reason recorded'}); retrying it")
        if not options.join:
            # the crawl exists before any worker starts: a worker that does not seed
            # and finds no crawl knows its data was lost (it never creates one)
            frontier.create(options.spider_class)
        for warning in frontier.durability_warnings():
            say(f"warning: {warning}")
        outcome_ids = frozenset(frontier.outcomes())
    except (RedisUnavailable, FrontierFault) as exc:
        say(f"scrapy fleet: {exc}")
        return EXIT_USAGE
    finally:
        frontier.client.close()  # no connection is held while the children start
    return OpenedCrawl(url=url, seeded=state.get("seeded") == "1", outcome_ids=outcome_ids)
