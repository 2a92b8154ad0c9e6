"""Every Redis key of one crawl, built in this one place.

All keys of a crawl share the prefix ``<FLEET_KEY_PREFIX>:{<spider>}:``. The braces are a
Redis Cluster hash tag: every key of a crawl lives in one slot, so each Lua script may
touch all of them (including the per-slot queues and per-worker leases it derives).
"""

from __future__ import annotations


class CrawlKeys:
    def __init__(self, prefix: str, spider: str) -> None:
        self.prefix = prefix
        self.spider = spider
        self.base = f"{prefix}:{{{spider}}}:"

    # the fixed keys; see README "Redis key schema" for what each holds
    @property
    def seq(self) -> str:
        return self.base + "seq"

    @property
    def seen(self) -> SeenKeys:
        """The seen-set's keys (scrapy_fleet/frontier/seenset.py)."""
        return SeenKeys(self.base)

    @property
    def payload(self) -> str:
        return self.base + "payload"

    @property
    def ready(self) -> str:
        return self.base + "ready"

    @property
    def delayed(self) -> str:
        return self.base + "delayed"

    @property
    def nextok(self) -> str:
        return self.base + "nextok"

    @property
    def slot_delay(self) -> str:
        return self.base + "slotdelay"

    @property
    def inflight(self) -> str:
        return self.base + "inflight"

    # politeness (scrapy_fleet/politeness): robots.txt per host, Crawl-delay, 429/503 backoff
    @property
    def robots(self) -> str:
        return self.base + "robots"

    @property
    def robots_lock_prefix(self) -> str:
        return self.base + "robotslock:"

    @property
    def crawl_delay(self) -> str:
        return self.base + "crawldelay"

    @property
    def backoff(self) -> str:
        return self.base + "backoff"

    @property
    def workers(self) -> str:
        return self.base + "workers"

    @property
    def seeding(self) -> str:
        return self.base + "seeding"

    @property
    def outcomes(self) -> str:
        return self.base + "outcomes"

    @property
    def stats(self) -> str:
        return self.base + "stats"

    @property
    def state(self) -> str:
        return self.base + "state"

    # what workers report (scrapy_fleet/observe/worker.py): failed requests by kind and
    # by download slot, each worker's row of the dashboard's worker table, and the number of
    # its last report taken
    @property
    def error_kinds(self) -> str:
        return self.base + "errorkinds"

    @property
    def host_errors(self) -> str:
        return self.base + "hosterrors"

    @property
    def worker_info(self) -> str:
        return self.base + "workerinfo"

    @property
    def report_seq(self) -> str:
        return self.base + "reportseq"

    # the derived keys: the scripts build these from ``queue_prefix`` / ``lease_prefix``
    @property
    def queue_prefix(self) -> str:
        return self.base + "q:"

    @property
    def lease_prefix(self) -> str:
        return self.base + "lease:"

    def queue(self, slot: str) -> str:
        return self.queue_prefix + slot

    def lease(self, worker: str) -> str:
        return self.lease_prefix + worker

    def feeding(self, start_key: str) -> str:
        """The HASH of entries workers have taken from ``start_key`` (a RedisSpider's
        ``redis_key``) but not yet stored in the frontier. It sits in the start key's
        Redis Cluster slot, so one script can move entries between the two, and it is
        not a key of this crawl: wiping the crawl leaves it alone, as the start key."""
        return f"{self.prefix}:feeding:{{{hash_tag(start_key)}}}"

    @property
    def pattern(self) -> str:
        """Matches every key of this crawl (for a fresh start)."""
        return glob_escape(self.base) + "*"


class SeenKeys:
    """The keys of one seen-set, all under ``base`` (a crawl's prefix today; one
    partition's, with its own hash tag, once a crawl is split), so that one script can
    check and fill the seen-set of the requests it enqueues there."""

    def __init__(self, base: str) -> None:
        self.base = base

    @property
    def legacy(self) -> str:
        """The SET of 20-byte fingerprints that crawls made before the seen-set kept;
        read and moved into the seen-set when such a crawl resumes."""
        return self.base + "seen"

    @property
    def meta(self) -> str:
        """The HASH of the seen-set: its mode and counts; the exact set's buckets too."""
        return self.base + "seenset"

    def block(self, layer: int, index: int) -> str:
        """One block (a bitmap STRING) of a Bloom layer. Scripts parse the two numbers back
        from the end of the name: keep them last."""
        return f"{self.base}bloom:{layer}:{index}"

    @property
    def blocks_pattern(self) -> str:
        """Matches every Bloom block of this seen-set (for measuring it)."""
        return glob_escape(self.base) + "bloom:*"


def glob_escape(text: str) -> str:
    """``text`` for a SCAN MATCH pattern (the hash tag's braces taken literally)."""
    return text.replace("{", "\\{").replace("}", "\\}")


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes for ``key``: the part between its first ``{`` and the
    next ``}`` if that is not empty, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key
