"""A crawl's numbers in Prometheus' text format, read from ``RedisFrontier.status()``.

Every number is defined once here (``COUNTERS``, ``GAUGES``): its metric name, the field
of the crawl's ``stats`` hash it comes from, and what it counts (docs/observing.md shows
the same list). The values are the crawl's own totals in Redis, which the progress line,
the summary and ``--status`` print too. Labels: ``spider`` on every metric, ``worker`` on
the per-worker ones, ``kind`` on failed requests by kind, and ``host`` on the per-host ones
for the top hosts only (``RedisFrontier.hosts``) plus one ``host="other"`` for the rest:
the number of hosts has no bound, Prometheus' series must have one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


@dataclass(frozen=True)
class Number:
    metric: str  # without the ``_total`` that a counter's exposition adds
    field: str  # in the crawl's ``stats`` hash
    help: str


COUNTERS = (
    Number("fleet_pages", "pages", "HTTP responses the workers received (Scrapy's response_received_count)"),
    Number("fleet_items", "items", "items scraped (Scrapy's item_scraped_count)"),
    Number("fleet_errors", "errors",
           "failed requests, once each: a download that raised after its retries, an HTTP "
           "status >= 400 the spider did not ask for, or a callback that raised"),
    Number("fleet_download_errors", "download_errors",
           "download attempts that raised: DNS, refused, timeout (Scrapy's downloader/exception_count)"),
    Number("fleet_requests", "enqueued", "distinct requests stored in the frontier, after dedupe"),
    Number("fleet_requests_done", "acked", "requests the workers finished with (acknowledged)"),
    Number("fleet_duplicates", "duplicate", "requests dropped as already seen"),
    Number("fleet_requests_reclaimed", "reclaimed", "leased requests put back after their worker died"),
    Number("fleet_requests_requeued", "requeued", "leased requests handed back by a worker that stopped"),
    Number("fleet_requests_invalid", "invalid", "queue entries dropped unrun: not issued here, or undecodable"),
    Number("fleet_requests_lost", "lost", "queued or leased requests whose stored payload was gone"),
    Number("fleet_corrupt", "corrupt", "junk found in the crawl's keys and repaired"),
    Number("fleet_feed_bad", "feed_bad", "start entries that could not be made into requests"),
)
GAUGES = (
    Number("fleet_queue_pending", "pending", "requests queued, waiting for a worker"),
    Number("fleet_queue_leased", "leased", "requests leased by workers, not yet finished"),
)
STATES = ("running", "done", "failed")


class StatusCollector:
    """A prometheus_client collector of one status() reading."""

    def __init__(self, spider: str, status: Mapping[str, Any]) -> None:
        self.spider = spider
        self.status = status

    def collect(self) -> Iterator[Metric]:
        spider, status = self.spider, self.status
        stats = status.get("stats", {})
        for number in COUNTERS:
            family = CounterMetricFamily(number.metric, number.help, labels=["spider"])
            family.add_metric([spider], float(stats.get(number.field, 0)))
            yield family
        for number in GAUGES:
            family = GaugeMetricFamily(number.metric, number.help, labels=["spider"])
            family.add_metric([spider], float(stats.get(number.field, 0)))
            yield family
        seen = GaugeMetricFamily("fleet_seen", "fingerprints in the crawl's seen-set", labels=["spider"])
        seen.add_metric([spider], float(status.get("seen", 0)))
        yield seen
        bloom = status.get("seenset", {}).get("bloom")
        if bloom:
            rate = GaugeMetricFamily("fleet_seen_bloom_fp_rate",
                                     "the Bloom seen-set's estimated false-positive rate",
                                     labels=["spider"])
            rate.add_metric([spider], float(bloom["fp_rate"]))
            yield rate
        state = GaugeMetricFamily("fleet_crawl_state", "1 for the crawl's state",
                                  labels=["spider", "state"])
        current = status.get("state", {}).get("status", "")
        for name in STATES:
            state.add_metric([spider, name], 1.0 if current == name else 0.0)
        yield state
        yield from self._errors_and_hosts()
        yield from self._workers()

    def _errors_and_hosts(self) -> Iterator[Metric]:
        spider, status = self.spider, self.status
        stats = status.get("stats", {})
        kinds = CounterMetricFamily("fleet_errors_by_kind", "failed requests by why they failed",
                                    labels=["spider", "kind"])
        for kind, count in sorted(status.get("errors_by_kind", {}).items()):
            kinds.add_metric([spider, kind], float(count))
        yield kinds
        hosts = status.get("hosts")
        if not hosts:
            return  # not read (--status, tests): no per-host series rather than wrong ones
        queued = GaugeMetricFamily("fleet_host_queue_pending",
                                   "requests queued per host: the busiest hosts, and other",
                                   labels=["spider", "host"])
        for host, value in top_with_other(hosts["busiest"], "queued", stats.get("pending", 0)):
            queued.add_metric([spider, host], float(value))
        yield queued
        errors = CounterMetricFamily("fleet_host_errors",
                                     "failed requests per host: the most failing hosts, and other",
                                     labels=["spider", "host"])
        for host, value in top_with_other(hosts["most_errors"], "errors", stats.get("errors", 0)):
            errors.add_metric([spider, host], float(value))
        yield errors
        delay = GaugeMetricFamily("fleet_host_delay_seconds",
                                  "the slowest hosts' delay between requests, fleet-wide",
                                  labels=["spider", "host"])
        backoff = GaugeMetricFamily("fleet_host_backoff_seconds",
                                    "the slowest hosts' remaining pause after a 429/503",
                                    labels=["spider", "host"])
        for row in hosts["slowest"]:
            delay.add_metric([spider, row["host"]], float(row["delay_s"]))
            backoff.add_metric([spider, row["host"]], float(row["backoff_s"]))
        yield delay
        yield backoff

    def _workers(self) -> Iterator[Metric]:
        spider = self.spider
        workers = self.status.get("workers", [])
        count = GaugeMetricFamily("fleet_workers", "workers registered in the crawl",
                                  labels=["spider", "state"])
        alive = sum(1 for w in workers if w["alive"])
        count.add_metric([spider, "alive"], float(alive))
        count.add_metric([spider, "dead"], float(len(workers) - alive))
        yield count
        beat = GaugeMetricFamily("fleet_worker_heartbeat_age_seconds",
                                 "seconds since each worker's last heartbeat",
                                 labels=["spider", "worker"])
        up = GaugeMetricFamily("fleet_worker_up", "1 while a worker's heartbeat is fresh",
                               labels=["spider", "worker"])
        pages = CounterMetricFamily("fleet_worker_pages", "pages each worker received",
                                    labels=["spider", "worker"])
        for w in workers:
            beat.add_metric([spider, w["id"]], float(w["last_heartbeat_s"]))
            up.add_metric([spider, w["id"]], 1.0 if w["alive"] else 0.0)
            pages.add_metric([spider, w["id"]], float(w.get("pages", 0)))
        yield beat
        yield up
        yield pages


def top_with_other(rows: Iterable[Mapping[str, Any]], key: str,
                   total: int) -> list[tuple[str, int]]:
    """(host, value) of the hosts shown and ("other", the rest of ``total``)."""
    shown = [(str(r["host"]), int(r[key])) for r in rows]
    return [*shown, ("other", max(0, int(total) - sum(v for _, v in shown)))]


def render(spider: str, status: Mapping[str, Any]) -> bytes:
    """The exposition of one status() reading."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(spider, status))  # type: ignore[arg-type]
    return generate_latest(registry)
