"""Every Redis key of one crawl, built in this one place.

A crawl's control keys (workers, seeding, state, totals) share the prefix
``<FLEET_KEY_PREFIX>:{<spider>}:``. Its queues, leases, seen-set and per-host politeness
state are split into partitions by download slot (:meth:`CrawlKeys.partition_of`): a
crawl of one partition keeps them under the control prefix too (the layout of every crawl
made before partitions, read as it was); a crawl of P > 1 partitions keeps partition i
under ``<FLEET_KEY_PREFIX>:{<spider>#<i>.<k>}:``. The braces are a Redis Cluster hash tag:
each partition lives in one slot, so a Lua script may touch any of one partition's keys
(the per-slot queues and per-worker leases among them: the caller names those it may
touch, in KEYS), and the partitions'
slots are spread evenly over the cluster's slot range (``k`` is chosen for that), so that
the masters of a cluster share a crawl's work.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

MAX_PARTITIONS = 1024


class PartitionKeys:
    """The keys of one partition: the queues of the download slots that hash to it, their
    requests, leases, seen-set and politeness state, and the partition's own ``state``
    (the crawl's id, and its seal while the end of the crawl is decided)."""

    def __init__(self, base: str, index: int = 0) -> None:
        self.base = base
        self.index = index

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

    @property
    def stats(self) -> str:
        return self.base + "stats"

    @property
    def state(self) -> str:
        return self.base + "state"

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
    def lease_beats(self) -> str:
        """A split crawl's partition: the ZSET of when each worker last leased from it, so
        its leases are not taken for orphans while a heartbeat is on its way (partitions.py)."""
        return self.base + "leasebeats"

    @property
    def heads(self) -> str:
        """The HASH of each non-empty queue's head score (scripts.py)."""
        return self.base + "heads"

    # the keys per slot and per worker: callers name them, scripts take them in KEYS
    @property
    def queue_prefix(self) -> str:
        return self.base + "q:"

    @property
    def replica_mark(self) -> str:
        """A split crawl's partition, with FLEET_WAIT_REPLICAS: a short-lived string each
        wait for replicas writes first, so that WAIT covers the pushes before it."""
        return self.base + "replicamark"

    @property
    def lease_prefix(self) -> str:
        return self.base + "lease:"

    def queue(self, slot: str) -> str:
        return self.queue_prefix + slot

    def lease(self, worker: str | bytes) -> str | bytes:
        """A worker's lease hash; a worker id read from Redis (bytes) gives the key as
        bytes, byte for byte, whatever it holds."""
        if isinstance(worker, bytes):
            return self.lease_prefix.encode() + worker
        return self.lease_prefix + worker

    @property
    def lease_pattern(self) -> str:
        """Matches every lease hash of this partition (and, in an unsplit crawl, nothing
        else: no other key name starts with ``lease:``)."""
        return glob_escape(self.lease_prefix) + "*"


class CrawlKeys(PartitionKeys):
    """A crawl's control keys, and (as a :class:`PartitionKeys`) those of its only
    partition when it has one."""

    def __init__(self, prefix: str, spider: str) -> None:
        super().__init__(f"{prefix}:{{{spider}}}:")
        self.prefix = prefix
        self.spider = spider

    def partitions(self, count: int) -> list[PartitionKeys]:
        """The keys of each of ``count`` partitions (1: the crawl's own prefix)."""
        if count == 1:
            return [self]
        return [PartitionKeys(f"{self.prefix}:{{{tag}}}:", i)
                for i, tag in enumerate(partition_tags(self.spider, count))]

    @staticmethod
    def partition_of(slot: str, count: int) -> int:
        """The partition of a download slot: every request of a host in one partition,
        so that its politeness and queue stay atomic in one script. CRC32, not hash():
        every worker, in every process, must agree."""
        return zlib.crc32(slot.encode("utf-8", "surrogatepass")) % count if count > 1 else 0

    # the control keys; see README "Redis key schema" for what each holds
    @property
    def workers(self) -> str:
        return self.base + "workers"

    @property
    def seeding(self) -> str:
        return self.base + "seeding"

    @property
    def outcomes(self) -> str:
        return self.base + "outcomes"

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

    @property
    def check_lock(self) -> str:
        """Held (with a token) by the one worker deciding whether a partitioned crawl has
        ended (scrapy_fleet/frontier/partitions.py)."""
        return self.base + "checklock"

    def feeding(self, start_key: str) -> str:
        """The HASH of entries workers have taken from ``start_key`` (a RedisSpider's
        ``redis_key``) but not yet stored in the frontier. It sits in the start key's
        Redis Cluster slot, so one script can move entries between the two, and it is
        not a key of this crawl: wiping the crawl leaves it alone, as the start key."""
        return f"{self.prefix}:feeding:{{{hash_tag(start_key)}}}"

    @property
    def pattern(self) -> str:
        """Matches every control key of this crawl, and those of an unsplit crawl's
        partition (for a fresh start)."""
        return glob_escape(self.base) + "*"

    @property
    def partitions_pattern(self) -> str:
        """Matches every key of every partition of a split crawl (and perhaps keys of a
        spider whose name starts with ``<spider>#``: check with :meth:`in_partition`)."""
        return glob_escape(f"{self.prefix}:{{{self.spider}#") + "*"

    def in_partition(self, key: str) -> bool:
        """Whether ``key`` belongs to a partition of this crawl (any partition count)."""
        head = f"{self.prefix}:{{{self.spider}#"
        return key.startswith(head) and re.match(r"\d+\.\d+\}:", key[len(head):]) is not None


@lru_cache(maxsize=64)
def partition_tags(spider: str, count: int) -> tuple[str, ...]:
    """The hash tags of ``count`` partitions: partition i's slot lies in the i-th of
    ``count`` equal ranges of the cluster's slot range, so however the slot range is cut
    into equal parts among masters (as ``redis-cli --cluster create`` does), each master
    holds about the same number of partitions; a plain hash could put twice the share on
    one. About ``count`` CRC16s per partition, once per process."""
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"a crawl has 1 to {MAX_PARTITIONS} partitions, not {count}")
    tags = []
    for i in range(count):
        low = i * REDIS_CLUSTER_HASH_SLOTS // count
        high = (i + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        k = 0
        while not low <= key_slot(f"{spider}#{i}.{k}".encode()) < high:
            k += 1
        tags.append(f"{spider}#{i}.{k}")
    return tuple(tags)


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
    """``text`` for a SCAN MATCH pattern: glob's special characters (and the hash tag's
    braces) taken literally."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", text)


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes for ``key``: the part between its first ``{`` and the
    next ``}`` if that is not empty, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key
