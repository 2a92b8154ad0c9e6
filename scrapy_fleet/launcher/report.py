"""Reports on a crawl: the summary at the end of a run, and ``scrapy fleet --status``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.launcher.formatting import duration, number, plural, signal_name, when
from scrapy_fleet.launcher.policy import EXIT_NOT_FINISHED
from scrapy_fleet.launcher.watch import launcher_frontier
from scrapy_fleet.launcher.workers import Worker
from scrapy_fleet.redis_server import RedisUnavailable, redact


def summary(spider: str, why: str, status: dict[str, Any] | None, status_error: str | None,
            elapsed: float, workers: Sequence[Worker], output: str | None, *,
            pages_before: int = 0) -> str:
    """The end of a run: why, the crawl's totals, each worker, the output file.
    ``pages_before``: the crawl's pages when this run began (a resumed crawl's rate is
    this run's pages over this run's time)."""
    lines = [f"--- scrapy fleet {spider}: {why}"]
    if status is not None:
        s = status["stats"]
        pages = s.get("pages", 0)
        lines.append(
            f"totals: pages {pages}  items {s.get('items', 0)}  errors {s.get('errors', 0)}  "
            f"download errors {s.get('download_errors', 0)}  requests {s.get('enqueued', 0)} "
            f"(+{s.get('duplicate', 0)} duplicates dropped)  reclaimed {s.get('reclaimed', 0)}  "
            f"requeued {s.get('requeued', 0)}  pending {s.get('pending', 0)}  "
            f"leased {s.get('leased', 0)}"
            + (f"  bad start entries {s['feed_bad']} (see the worker logs)"
               if s.get("feed_bad") else "")
        )
        if status.get("errors_by_kind"):
            lines.append("failed requests: " + errors_by_kind(status["errors_by_kind"]))
        state = status["state"]
        crawl_time = ""
        started, finished = number(state.get("started_at")), number(state.get("finished_at"))
        if started and finished:
            span = finished - started  # both in s (finished_at of the server's clock)
            if span > 0:
                crawl_time = f"; whole crawl {duration(span)}"
        if elapsed > 0:
            here = max(0, pages - pages_before)
            lines.append(f"duration: {duration(elapsed)} ({here} pages in this run, "
                         f"{here / elapsed:.1f} pages/s{crawl_time})")
    else:
        lines.append(f"duration: {duration(elapsed)}; Redis unreachable: {status_error}")
    for w in workers:
        pid = w.proc.pid if w.proc else "-"
        ended = signal_name(w.exit_code) if w.exit_code is not None else "not started"
        restarts = f", {plural(w.restarts, 'restart')}" if w.restarts else ""
        lines.append(f"worker {w.slot} (pid {pid}): {ended}, {w.reason or 'no close reason'}, "
                     f"{w.pages} pages{restarts}; log {w.log_path}")
    if output:
        lines.append(f"output: {os.path.abspath(output % {'name': spider})}")
    return "\n".join(lines)


def errors_by_kind(kinds: dict[str, int], shown: int = 8) -> str:
    """"HTTP 404 12, DNSLookupError 3, ...": the most frequent kinds first."""
    ranked = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{kind} {count}" for kind, count in ranked[:shown])
    rest = sum(count for _, count in ranked[shown:])
    return text + (f", {len(ranked) - shown} more kinds {rest}" if rest else "")


def format_status(spider: str, url: str, status: dict[str, Any]) -> str:
    """``scrapy fleet SPIDER --status``: the crawl's state, queue, totals and workers."""
    state, stats = status["state"], status["stats"]
    if not state and not stats and not status["workers"]:
        return f"No crawl of {spider!r} on {redact(url)}."
    lines = [f"Crawl of {spider!r} on {redact(url)}: {state.get('status', 'unknown')}"]
    lines.append(f"  started   {when(state.get('started_at'))}")
    if number(state.get("finished_at")):
        lines.append(f"  finished  {when(state['finished_at'])}")
    lines.append(f"  seeded    {'yes' if state.get('seeded') == '1' else 'not yet (start requests still being fed)'}")
    lines.append(f"  pending {stats.get('pending', 0)}  leased {stats.get('leased', 0)}  "
                 f"seen {status['seen']}")
    bloom = status.get("seenset", {}).get("bloom")
    if bloom:
        lines.append(f"  seen-set Bloom: {bloom['layers']} layer(s) for {bloom['capacity']:,} URLs, "
                     f"{bloom['fill']:.0%} of {bloom['bytes']:,} bytes set, estimated "
                     f"false-positive rate {bloom['fp_rate']:.2g}")
    names = ["pages", "items", "errors", "download_errors", "enqueued", "duplicate", "popped",
             "acked", "reclaimed", "requeued", "invalid"]
    lines.append("  totals  " + "  ".join(f"{n} {stats.get(n, 0)}" for n in names))
    if status.get("errors_by_kind"):
        lines.append("  failed requests  " + errors_by_kind(status["errors_by_kind"]))
    workers = status["workers"]
    alive = sum(1 for w in workers if w["alive"])
    lines.append(f"  workers {len(workers)} ({alive} alive)")
    for w in sorted(workers, key=lambda w: w["id"]):
        flags = ("alive" if w["alive"] else "dead (its leases are reclaimed)") + \
                (", seeding" if w["seeding"] else "")
        lines.append(f"    {w['id']:<40} last heartbeat {w['last_heartbeat_s']:.1f} s ago, {flags}")
    return "\n".join(lines)


def crawl_url(config: FleetConfig) -> str:
    """The Redis of the crawl, to look at it without joining: REDIS_URL, or the embedded
    server if it is running. Raises RedisUnavailable when it is not: looking never starts
    one."""
    if config.redis_url is not None:
        return config.redis_url
    from scrapy_fleet.redis_server import answers, embedded_url, socket_path

    if not answers(socket_path(config.data_dir)):
        raise RedisUnavailable(f"the embedded Redis of {os.path.abspath(config.data_dir)} "
                               "is not running (set REDIS_URL for a shared one)")
    return embedded_url(config.data_dir)


def status_reader(spider: str, config: FleetConfig) -> Callable[[], dict[str, Any]]:
    """A function that reads the crawl's status (for ``scrapy fleet web``), connecting on
    its first call; RedisUnavailable names the cause when Redis cannot be reached."""
    frontier = None

    def read() -> dict[str, Any]:
        nonlocal frontier
        if frontier is None:
            frontier = launcher_frontier(crawl_url(config), CrawlKeys(config.key_prefix, spider), config)
        return {"redis": redact(frontier.url), **frontier.status(), "hosts": frontier.hosts()}

    return read


def print_status(spider: str, config: FleetConfig, *, as_json: bool = False,
                 out: IO[str] | None = None) -> int:
    """Print a crawl's status without joining it; 0, or 1 when Redis cannot be reached."""
    out = out or sys.stdout
    try:
        url = crawl_url(config)
    except RedisUnavailable as exc:
        out.write(f"No crawl: {exc}.\n")
        return EXIT_NOT_FINISHED
    try:
        frontier = launcher_frontier(url, CrawlKeys(config.key_prefix, spider), config)
        try:
            status = frontier.status()
            if as_json:
                status["hosts"] = frontier.hosts()  # as /api/status has them
        finally:
            frontier.client.close()
    except RedisUnavailable as exc:
        out.write(f"scrapy fleet: {exc}\n")
        return EXIT_NOT_FINISHED
    if as_json:
        out.write(json.dumps({"spider": spider, "redis": redact(url), **status}, indent=2) + "\n")
    else:
        out.write(format_status(spider, url, status) + "\n")
    return 0
