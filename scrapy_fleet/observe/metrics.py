"""A crawl's numbers in Prometheus' text format, read from ``RedisFrontier.status()``.

Every number is defined once here (``COUNTERS``, ``GAUGES``): its metric name, the field
of the crawl's ``stats`` hash it comes from, and what it counts (docs/observing.md shows
the same list). The values are the crawl's own totals in Redis, which the progress line,
the summary and ``--status`` print too. Labels: ``spider`` on every metric, ``worker`` on
the per-worker ones; no per-host labels (their number has no bound).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
    Number("fleet_errors", "errors", "errors the workers logged (Scrapy's log_count/ERROR)"),
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
        workers = status.get("workers", [])
        count = GaugeMetricFamily("fleet_workers", "workers registered in the crawl",
                                  labels=["spider", "state"])
        alive = sum(1 for w in workers if w["alive"])
        count.add_metric([spider, "alive"], float(alive))
        count.add_metric([spider, "dead"], float(len(workers) - alive))
        yield count
        beat = GaugeMetricFamily("fleet_worker_heartbeat_age_seconds",
                                 "seconds since each worker's last heartbeat",
                                 labels=["spider", "worker"])
        for w in workers:
            beat.add_metric([spider, w["id"]], float(w["last_heartbeat_s"]))
        yield beat


def render(spider: str, status: Mapping[str, Any]) -> bytes:
    """The exposition of one status() reading."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(spider, status))  # type: ignore[arg-type]
    return generate_latest(registry)
