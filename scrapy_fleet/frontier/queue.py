"""The shared frontier of one crawl in Redis: push, lease, acknowledge, reclaim, finish.

A thin, synchronous client over the Lua scripts in :mod:`.scripts`; the scheduler decides
when to call it. Every call retries while Redis is away, up to a deadline, and then
raises :class:`RedisUnavailable` with a message naming the server.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack
import redis
from redis.cluster import ClusterPipeline, RedisCluster

from scrapy_fleet.frontier import scripts
from scrapy_fleet.frontier.keys import MAX_PARTITIONS, CrawlKeys, PartitionKeys, glob_escape
from scrapy_fleet.frontier.overview import HOSTS_SHOWN, read_hosts, read_status
from scrapy_fleet.frontier.overview import text as _text
from scrapy_fleet.frontier.seenset import (
    DEFAULT_BLOOM_CAPACITY,
    DEFAULT_BLOOM_ERROR_RATE,
    STATUS_FIELDS,
    SeenSet,
)
from scrapy_fleet.redis_server import RedisUnavailable, redact

if TYPE_CHECKING:
    from scrapy_fleet.frontier.partitions import SplitCrawl

logger = logging.getLogger(__name__)


class RedisRetryLater(Exception):
    """Redis is away (or full), the deadline not yet passed: try again on a later turn."""

    def __init__(self, pause: float) -> None:
        super().__init__(f"Redis is away; try again in {pause:.2f} s")
        self.pause = pause


class FrontierFault(RuntimeError):
    """A fault the worker cannot work around: it stops with this message, non-zero."""


class ReplicasBehind(redis.TimeoutError):
    """Fewer replicas than FLEET_WAIT_REPLICAS acknowledged a split crawl's pushes in
    time: retried like an outage, up to FLEET_REDIS_RETRY_TIMEOUT."""


class CrawlLost(FrontierFault):
    """The crawl's data in Redis is gone or was replaced (FLUSHALL, a restart of a Redis
    without persistence, eviction, ``--fresh`` from elsewhere)."""


class CrawlConflict(FrontierFault):
    """The key prefix holds a crawl made by another spider class (another project)."""


class CrawlFailed(FrontierFault):
    """Another worker marked the crawl failed (its start requests could not be made)."""


class RedisOutOfMemory(FrontierFault):
    """Redis refuses writes: ``maxmemory`` reached under the ``noeviction`` policy."""


T = TypeVar("T")
PushEntry = tuple[bytes, str, int, bytes]  # fingerprint (b"" = unfiltered), slot, priority, payload
MAX_PRIORITY = 4000  # |priority| * 2^40 + id must stay exact in a double
MAX_CALL_BYTES = 64 << 20  # pushes sent in one script call at most (Redis takes up to 1 GB)
STALE_RETRIES = 5  # a seen-set that changes under every try is a fault, not a loop
MORE_TRIES = 2  # pops sent again at once, declaring the ready queues the last one named
# partitions of a new crawl on a Redis Cluster: 3 to 6 masters hold 2 to 6 each (keys.py
# spreads them evenly over the slot range); one Redis gains nothing from more than one
DEFAULT_CLUSTER_PARTITIONS = 16
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)
# a Redis Cluster between states: a master restarting or failing over answers CLUSTERDOWN,
# TRYAGAIN or READONLY for a while, and redis-py gives up a call ("TTL exhausted") or finds
# a slot on no node while its map is stale. All pass once the cluster is ok again.
_CLUSTER_TRANSIENT = (
    redis.exceptions.ClusterDownError,  # MasterDownError too
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterError,
    redis.exceptions.SlotNotCoveredError,
)


@dataclass
class ReportDelta:
    """A worker's report (observe/worker.py): counters to add, failed requests by kind
    and by download slot, its row of the worker table, and its number."""

    totals: dict[str, int]
    kinds: dict[str, int]
    hosts: dict[str, int]
    info: str = ""
    seq: int = 0


@dataclass(frozen=True)
class FinishCheck:
    status: str  # "running" or "done" (a lost or failed crawl raises instead)
    pending: int
    leased: int
    live_workers: int
    live_seeders: int

    @property
    def finished(self) -> bool:
        return self.status == "done"


@dataclass
class FlushResult:
    pushed: list[bool]
    popped: list[tuple[str, bytes | None]]
    next_due: float | None = None  # seconds until a slot held back by its delay comes due
    junk: list[str] = field(default_factory=list)  # queue members dropped: never issued here
    pending: int | None = None  # requests queued in the whole crawl after this call
    finished: bool = False  # the crawl is done: nothing was pushed (or acknowledged)
    reported: bool = False  # the report that rode with it is in Redis (now or before)
    hints: list[bytes] | None = None  # slots the next pop should declare (None: no pop asked)
    more: bool = False  # ready work was left: its queues were not declared (not in hints)


class RedisFrontier:
    def __init__(
        self,
        client: redis.Redis,
        keys: CrawlKeys,
        worker_id: str,
        *,
        url: str,
        lease_timeout: float = 30.0,
        download_delay: float = 0.0,
        concurrency_per_slot: int = 8,
        retry_timeout: float = 10.0,
        on_connection_lost: Callable[[], None] | None = None,
        dupefilter: str = "exact",
        bloom_capacity: int = DEFAULT_BLOOM_CAPACITY,
        bloom_error_rate: float = DEFAULT_BLOOM_ERROR_RATE,
        partitions: int | None = None,
        wait_replicas: int = 0,
    ) -> None:
        self.client = client
        # a split crawl's pushes must reach this many replicas before its acks go out
        # (partitions.py): a failover then cannot keep an ack and lose the children
        self.wait_replicas = wait_replicas
        self.keys = keys
        self.worker_id = worker_id
        self.url = url
        self.lease_timeout_ms = int(lease_timeout * 1000)
        self.delay_ms = int(download_delay * 1000)
        self.cap = concurrency_per_slot
        self.retry_timeout = retry_timeout
        self._on_connection_lost = on_connection_lost
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in ("FLUSH", "REQUEUE", "CHECK_FINISHED", "HEARTBEAT", "CREATE", "SEEDING",
                         "REPORT", "NOW", "SEEN_INIT", "SEEN_ADD", "RECORD_HEADS")
        }
        # the seen-set: `dupefilter` and the Bloom settings apply to a new crawl only
        self._seen_options = {"mode": dupefilter, "bloom_capacity": bloom_capacity,
                              "bloom_error_rate": bloom_error_rate}
        # partitions of a new crawl (None: 16 on a Redis Cluster, 1 on one Redis); a
        # crawl keeps the count it was made with, read by open()
        self.new_partitions = partitions if partitions is not None else (
            DEFAULT_CLUSTER_PARTITIONS if isinstance(client, RedisCluster) else 1)
        self.split: SplitCrawl | None = None  # a crawl of more than one partition
        self._use_partitions(1)
        self._lease_key = keys.lease(worker_id)
        self.crawl_id: str | None = None  # set by open(): this crawl's id (a new crawl, a new id)
        self._down_since: float | None = None  # monotonic time of the outage's first failure
        self._attempts = 0
        self._reconnecting = threading.Lock()
        self._reconcile = False  # a FLUSH with a pop failed mid-call: leases to check
        self._ready_hints: list[bytes] = []  # slots an unsplit crawl's next pop declares

    # --- plumbing -------------------------------------------------------------------

    def _use_partitions(self, count: int) -> None:
        """Work on a crawl of ``count`` partitions (keys.py): their keys and seen-sets."""
        from scrapy_fleet.frontier.partitions import SplitCrawl  # it builds on this module

        self.parts = self.keys.partitions(count)
        # a Bloom filter's capacity is the crawl's: each partition takes its share
        options = {**self._seen_options,
                   "bloom_capacity": max(1, self._seen_options["bloom_capacity"] // count)}
        self.seens = [SeenSet(part.seen, **options) for part in self.parts]
        # what spans partitions (reclaim, leave, hand back) serves an unsplit crawl too
        self.spans = SplitCrawl(self)
        self.split = self.spans if count > 1 else None

    def read_layout(self) -> None:
        """A frontier that reads a crawl without joining it (status, tools): take the
        crawl's partition count from its state (open() does for a worker)."""
        if self.crawl_id is not None:
            return
        raw = self.call(lambda: self.client.hget(self.keys.state, "partitions"),
                        "read the crawl state")
        try:
            count = int(raw or 1)
        except ValueError:
            return  # junk: read as one partition
        if 1 <= count <= MAX_PARTITIONS and count != len(self.parts):
            self._use_partitions(count)

    @property
    def seen(self) -> SeenSet:
        """The seen-set of an unsplit crawl (of partition 0 of a split one)."""
        return self.seens[0]

    def part_of(self, slot: str) -> PartitionKeys:
        """The partition that holds download slot ``slot``'s queue and politeness state."""
        return self.parts[CrawlKeys.partition_of(slot, len(self.parts))]

    def _script(self, name: str, extra_keys: Sequence[str], extra_args: Sequence[Any],
                client: Any = None, part: PartitionKeys | None = None, *,
                common: bool = True, queues: Collection[str | bytes] = ()) -> Any:
        """Run a script on the common keys (scripts.py) of ``part`` (default: the crawl's
        own, its control keys) plus ``extra_keys``, then ``heads`` and the queues of the
        download slots ``queues`` (those it may touch); without ``common``, on
        ``extra_keys`` alone."""
        k = part or self.keys
        # slots as read from Redis stay bytes: a key must name them byte for byte
        declared = [k.queue(slot) if isinstance(slot, str) else k.queue_prefix.encode() + slot
                    for slot in dict.fromkeys(queues)]
        keys = [k.ready, k.delayed, k.nextok, k.inflight, k.stats, k.payload, *extra_keys,
                k.heads, *declared]
        args = [f"{len(declared)} {k.queue_prefix}", self.cap, *extra_args]
        if not common:
            keys, args = list(extra_keys), list(extra_args)
        if isinstance(client, (redis.client.Pipeline, ClusterPipeline)):
            # EVALSHA queued as is: redis-py's Script would add a SCRIPT EXISTS round trip
            # to every pipeline; a server that lost its scripts answers NOSCRIPT instead.
            # By execute_command: redis-py 5.0 blocks the evalsha() of a cluster pipeline
            return client.execute_command("EVALSHA", self._scripts[name].sha, len(keys), *keys,
                                          *args)
        return self._scripts[name](keys=keys, args=args, client=client or self.client)

    def add_scripts(self, sources: dict[str, str]) -> None:
        """Register more scripts written on the common KEYS/ARGV (see ``scripts``), such
        as the politeness layer's; they are reloaded with ours after a server restart."""
        for name, source in sources.items():
            self._scripts[name] = self.client.register_script(source)

    def run_script(self, name: str, extra_keys: Sequence[str], extra_args: Sequence[Any],
                   what: str, *, wait: bool = True, part: PartitionKeys | None = None) -> Any:
        """Run a script on the common keys (of ``part``, default the crawl's own) plus
        ``extra_keys``, retried like every call (``wait`` as in :meth:`call`)."""
        return self.call(lambda: self._script(name, extra_keys, extra_args, part=part), what,
                         wait=wait)

    def _load_scripts(self) -> None:
        for script in self._scripts.values():
            self.client.script_load(script.script)

    def call(self, operation: Callable[[], T], what: str, *, wait: bool = True) -> T:
        """Run ``operation`` while Redis is away (or full) for at most the retry deadline.

        The deadline runs from the first failure of the outage, across calls. With
        ``wait`` (start-up, shutdown, tools without a reactor) this call sleeps between
        attempts; without it (the scheduler, on the reactor thread, which must never
        sleep) it raises :class:`RedisRetryLater` at once and the caller tries again on a
        later turn. Past the deadline: :class:`RedisUnavailable` or :class:`RedisOutOfMemory`.
        """
        reloads = 0
        while True:
            try:
                result = operation()
            except redis.exceptions.NoScriptError:
                # the server restarted (or SCRIPT FLUSH): pipelines queue bare EVALSHAs
                if reloads >= 3:
                    raise
                reloads += 1
                self.call(self._load_scripts, "load the frontier's scripts", wait=wait)
            except redis.AuthenticationError as exc:
                # a wrong password never gets right by waiting: fail at once
                raise RedisUnavailable(
                    f"Redis at {redact(self.url)} refused the password: {exc}"
                ) from exc
            except _CLUSTER_TRANSIENT as exc:
                self._outage(what, exc, oom=False, wait=wait)
            except redis.exceptions.ResponseError as exc:
                if not _is_oom(exc):
                    raise
                # out of memory: other workers' acks may free some; then give up clearly
                self._outage(what, exc, oom=True, wait=wait)
            except _TRANSIENT as exc:
                if _untrusted_certificate(exc):
                    # rediss:// to a server whose certificate we do not trust: waiting
                    # never fixes that either
                    raise RedisUnavailable(
                        f"Redis at {redact(self.url)}: its TLS certificate is not trusted "
                        f"({exc}); name the CA that signed it in the URL: "
                        "rediss://host:port/0?ssl_ca_certs=/path/to/ca.pem"
                    ) from exc
                self._outage(what, exc, oom=False, wait=wait)
            else:
                if self._down_since is not None:
                    logger.warning("Redis at %s is back after %.1f s", redact(self.url),
                                   time.monotonic() - self._down_since)
                    self._down_since = None
                    self._attempts = 0
                return result

    def _outage(self, what: str, exc: Exception, *, oom: bool, wait: bool) -> None:
        """One failed attempt: give up past the deadline, else wait (or not) for the next."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._attempts = 0
            logger.warning("%s; retrying for up to %.0f s",
                           self._oom_message(what) if oom else
                           f"Redis at {redact(self.url)}: {exc}" if isinstance(exc, ReplicasBehind)
                           else f"Redis at {redact(self.url)} unreachable ({exc})",
                           self.retry_timeout)
        waited = now - self._down_since
        if waited >= self.retry_timeout:
            # the outage lasts until a call succeeds: every caller from now on gives up
            # at once (resetting here would let one caller's retries restart the clock)
            if oom:
                raise RedisOutOfMemory(self._oom_message(what)) from exc
            if isinstance(exc, ReplicasBehind):
                raise RedisUnavailable(
                    f"Redis at {redact(self.url)}: for {waited:.0f} s, {exc}: a replica is "
                    "down or far behind; bring it back, or lower FLEET_WAIT_REPLICAS") from exc
            raise RedisUnavailable(
                f"Redis at {redact(self.url)} unreachable for {waited:.0f} s "
                f"while trying to {what}: {exc}"
            ) from exc
        if not oom and self._on_connection_lost is not None:
            self._reconnect(background=not wait)
        self._attempts += 1
        pause = min(1.0, 0.05 * 2**self._attempts, max(0.0, self.retry_timeout - waited))
        if not wait:
            raise RedisRetryLater(pause) from exc
        time.sleep(pause)

    def _reconnect(self, *, background: bool) -> None:
        """Run the connection-lost hook (restart the embedded server): in a thread when
        the caller must not block, one at a time."""
        def run() -> None:
            try:
                self._on_connection_lost()  # type: ignore[misc]
            except Exception as hook_exc:  # keep retrying; report the cause
                logger.debug("reconnect hook failed: %s", hook_exc)
            finally:
                self._reconnecting.release()

        if not self._reconnecting.acquire(blocking=False):
            return
        if background:
            threading.Thread(target=run, name="fleet-redis-reconnect", daemon=True).start()
        else:
            run()

    def _oom_message(self, what: str) -> str:
        used, limit = "?", "?"
        try:
            info = self.client.info("memory")
            used, limit = info.get("used_memory_human", "?"), info.get("maxmemory_human", "?")
        except redis.RedisError:
            pass
        return (f"Redis at {redact(self.url)} is out of memory (used {used} of maxmemory "
                f"{limit}) and refuses to {what}; raise maxmemory (or free memory) and "
                "run the same command again to resume")

    def durability_warnings(self) -> list[str]:
        """What about this Redis can lose a crawl's data: eviction, no persistence."""
        warnings = []
        try:
            config = self.client.config_get("maxmemory-policy")
            config.update(self.client.config_get("appendonly"))
            config.update(self.client.config_get("save"))
        except redis.RedisError:  # CONFIG renamed or forbidden (managed Redis): can't tell
            return []
        policy = _text(config.get("maxmemory-policy", b"noeviction"))
        if policy != "noeviction":
            warnings.append(
                f"Redis at {redact(self.url)} evicts keys when full (maxmemory-policy "
                f"{policy}): it may drop the crawl's queue; use noeviction")
        if _text(config.get("appendonly", b"no")) == "no" and not _text(config.get("save", b"")).strip():
            warnings.append(
                f"Redis at {redact(self.url)} has no persistence (appendonly no, no save "
                "points): a restart loses the crawl")
        return warnings

    # --- lifecycle ------------------------------------------------------------------

    def open(self, *, fresh: bool, restart_finished: bool = True, owner: str = "",
             keep_alive: bool = False, idle_timeout: float = 0.0, feeds: bool = False) -> str:
        """Join the crawl; returns "new", "resumed", "fresh" (an old crawl was wiped) or
        "finished" (it is done and ``restart_finished`` is off: a worker that does not
        seed must not start a crawl nobody will feed). A worker that does not seed also
        never creates a crawl: one that is missing was lost (:class:`CrawlLost`).

        ``owner`` names the spider class; a crawl made by another class under the same
        keys (two projects, one spider name) raises :class:`CrawlConflict`.

        A ``keep_alive`` worker makes the crawl keep-alive for every worker, with its
        ``idle_timeout`` (seconds, 0: never); see :meth:`crawl_settings`. A worker that
        ``feeds`` from start keys marks the crawl so (see CHECK_FINISHED).
        """
        state = self._owned_state(owner)
        status = state.get(b"status")
        outcome = "new" if not state else "resumed"
        if status == b"done" and not fresh and not restart_finished:
            return "finished"
        if not state and not restart_finished:
            raise CrawlLost(
                f"no crawl of {self.keys.spider!r} on {redact(self.url)} to join (this worker "
                "does not seed): it finished and was wiped, or its data was lost")
        if status == b"failed" and not fresh and not restart_finished:
            raise CrawlFailed(f"the crawl failed: {_text(state.get(b'error', b''))}")
        if fresh or status == b"done":
            self.wipe()
            outcome = "fresh" if state else "new"
        self.create(owner)
        marks: dict[str, Any] = {"feeds": "1"} if feeds else {}
        if keep_alive:
            marks.update(keep_alive="1", idle_timeout=int(idle_timeout * 1000))
        if marks:
            self.call(lambda: self.client.hset(self.keys.state, mapping=marks),
                      "record how the crawl ends")
        if status == b"failed" and outcome == "resumed":
            # a crawl whose start requests failed is retried by the next run's seeder
            self.call(lambda: self.client.hset(self.keys.state, mapping={"status": "running",
                                                                          "error": ""}),
                      "reopen the failed crawl")
        self.heartbeat()
        return outcome

    def _owned_state(self, owner: str) -> dict[bytes, bytes]:
        """The crawl's state; :class:`CrawlConflict` if another spider class made it."""
        state = self.call(lambda: self.client.hgetall(self.keys.state), "read the crawl state")
        made_by = _text(state.get(b"spider", b""))
        if owner and made_by and made_by != owner:
            raise CrawlConflict(
                f"Redis at {redact(self.url)} already holds a crawl of {self.keys.spider!r} "
                f"made by {made_by}, not {owner}: another project uses the same spider name "
                f"and key prefix ({self.keys.prefix!r}). Set FLEET_KEY_PREFIX to keep them "
                "apart (or --fresh / FLEET_FRESH=1 to throw that crawl away)"
            )
        return state

    def attach(self, owner: str = "") -> str:
        """Join the crawl as a producer (``scrapy fleet feed``): no heartbeat, no leases.
        Returns "running" (it exists), "new" (created) or "restarted" (it had finished:
        wiped and created again, as the next ``scrapy fleet`` run would)."""
        state = self._owned_state(owner)
        outcome = "running" if state else "new"
        if state.get(b"status") == b"done":
            self.wipe()
            outcome = "restarted"
        self.create(owner)
        return outcome

    def crawl_settings(self) -> tuple[bool, float]:
        """Whether the crawl is keep-alive, and its idle timeout in seconds (0: none)."""
        keep, timeout = self.call(
            lambda: self.client.hmget(self.keys.state, "keep_alive", "idle_timeout"),
            "read the crawl state")
        try:
            seconds = max(0.0, int(timeout or 0) / 1000)
        except ValueError:
            seconds = 0.0
        return keep == b"1", seconds

    def create(self, owner: str = "") -> str:
        """Create the crawl's state unless it exists; returns the crawl's id. A new crawl
        gets ``new_partitions`` partitions; a crawl keeps the count it was made with."""
        def mark() -> list[Any]:
            return self._scripts["CREATE"](
                keys=[self.keys.state], client=self.client,
                args=[f"{time.time():.3f}", uuid.uuid4().hex, owner, self.new_partitions])

        crawl_id, count, claimed, heads = self.call(mark, "open the crawl")
        self.crawl_id = _text(crawl_id)
        try:
            partitions = int(count)
        except ValueError:
            partitions = 0
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise FrontierFault(
                f"the crawl of {self.keys.spider!r} in Redis at {redact(self.url)} says it has "
                f"{_text(count)!r} partitions ({self.keys.state} holds junk); start it again "
                "with --fresh")
        self._use_partitions(partitions)
        if self.split is not None and not claimed:
            self.split.claim()
        if not heads:
            self._record_heads()
        return self.crawl_id

    def _record_heads(self) -> None:
        """A crawl made before ``heads`` (scripts.py): record its queues' heads, found by
        SCAN, so that they are scheduled without reading them; then mark it."""
        def run() -> int:
            recorded = 0
            for part in self.parts:
                found = list(self.client.scan_iter(match=glob_escape(part.queue_prefix) + "*",
                                                   count=1000))
                prefix = part.queue_prefix.encode()
                slots = [key[len(prefix):] for key in found if key.startswith(prefix)]
                for start in range(0, len(slots), 1000):
                    recorded += int(self._script("RECORD_HEADS", [], [], part=part,
                                                 queues=slots[start:start + 1000]))
            self.client.hset(self.keys.state, "heads", "1")
            return recorded

        recorded = self.call(run, "record the queues of a crawl made by an older version")
        if recorded:
            logger.info("Recorded the heads of %d queues of a crawl made by an older version",
                        recorded)

    def fail_crawl(self, error: str) -> None:
        """Mark the crawl failed for every worker (they stop with ``error``)."""
        self.call(lambda: self.client.hset(self.keys.state, mapping={"status": "failed",
                                                                      "error": error[:2000]}),
                  "mark the crawl failed")

    def wipe(self) -> int:
        """Delete every key of this crawl (a fresh start)."""
        def run() -> int:
            deleted = 0
            batch: list[bytes] = []
            for key in self._crawl_keys():
                batch.append(key)
                if len(batch) >= 500:
                    deleted += self.client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += self.client.unlink(*batch)
            return deleted

        return self.call(run, "wipe the previous crawl")

    def _crawl_keys(self) -> Iterator[bytes]:
        """Every key of this crawl: its control keys and every partition's (whatever
        its partition count: a fresh start also clears what a crawl of another count left)."""
        yield from self.client.scan_iter(match=self.keys.pattern, count=1000)
        for key in self.client.scan_iter(match=self.keys.partitions_pattern, count=1000):
            if self.keys.in_partition(_text(key)):
                yield key

    def heartbeat(self, *, wait: bool = True) -> None:
        self.call(
            lambda: self._scripts["HEARTBEAT"](
                keys=[self.keys.workers], args=[self.worker_id], client=self.client
            ),
            "send a heartbeat", wait=wait,
        )

    def leave(self) -> int:
        """Hand back everything this worker holds and deregister it."""
        return self.spans.leave()

    def record_outcome(self, outcome: dict[str, Any]) -> None:
        """How this worker's run ended (reason, pages, error...), for launchers to read."""
        self.call(lambda: self.client.hset(self.keys.outcomes, self.worker_id,
                                           json.dumps(outcome, sort_keys=True)),
                  "record how this worker ended")

    def outcomes(self) -> dict[str, dict[str, Any]]:
        """worker id -> the outcome it recorded; junk entries are left out."""
        raw = self.call(lambda: self.client.hgetall(self.keys.outcomes), "read worker outcomes")
        found = {}
        for worker, value in raw.items():
            try:
                outcome = json.loads(value)
            except ValueError:
                continue
            if isinstance(outcome, dict):
                found[_text(worker)] = outcome
        return found

    def set_seeding(self, seeding: bool, *, complete: bool = True, wait: bool = True) -> None:
        """Tell other workers this one is (no longer) feeding start requests; once it has
        fed them all (``complete``) the crawl is marked seeded, else the feed was aborted."""
        def run() -> None:
            self._scripts["SEEDING"](
                keys=[self.keys.seeding, self.keys.state], client=self.client,
                args=[self.worker_id, "start" if seeding else "done" if complete else "abort"])

        self.call(run, "record seeding", wait=wait)

    # --- the hot path ---------------------------------------------------------------

    def flush(
        self,
        pushes: Sequence[PushEntry] = (),
        acks: Collection[str] = (),
        invalid: Collection[str] = (),
        pop: int = 0,
        held: Collection[str] = (),
        *,
        wait: bool = True,
        feed_bad: int = 0,
        duplicates: int = 0,
        report: ReportDelta | None = None,
    ) -> FlushResult:
        """Pushes, then acks, then a pop: one script, so one atomic round trip.
        ``report`` (a worker's, WorkerReport.pending) goes first in the same round trip in
        an unsplit crawl (``reported`` says it is in Redis): what a worker acknowledged is
        counted even if it is killed next.

        Pushes come before acks so that a request's children are stored before it is
        forgotten; if the script fails (Redis out of memory) nothing is stored and nothing
        acknowledged. If the connection broke mid-call, the pop may have leased ids we
        never saw: after the retry, any lease not in ``held`` (nor just popped) is handed
        back. Raises :class:`CrawlLost` when the crawl's state is gone or replaced.
        """
        if not (pushes or acks or invalid or pop or feed_bad or duplicates or report):
            return FlushResult([], [])
        if self.crawl_id is None:
            raise RuntimeError("open() the frontier before flushing")
        if self.split is not None:
            # a split crawl's reports go by the tick: with every ack round trip, all of
            # a large fleet's would meet on the master of the control keys
            return self.split.flush(pushes, acks, invalid, pop, held, wait=wait,
                                    feed_bad=feed_bad, duplicates=duplicates)
        chunks = _by_size(pushes, MAX_CALL_BYTES)
        if len(chunks) > 1:
            # pushes kept through a Redis outage can pile up: send them in calls Redis
            # accepts (client-query-buffer-limit); acks ride with the last, after every child
            flags: list[bool] = []
            for chunk in chunks[:-1]:
                result = self.flush(chunk, wait=wait)
                if result.finished:
                    return FlushResult([False] * len(pushes), [], finished=True)
                flags += result.pushed
            last = self.flush(chunks[-1], acks, invalid, pop, held, wait=wait, feed_bad=feed_bad,
                              duplicates=duplicates, report=report)
            last.pushed = flags + last.pushed
            return last
        result = self._flush_once(pushes, acks, invalid, pop, held, wait=wait,
                                  feed_bad=feed_bad, duplicates=duplicates, report=report)
        tries = 0
        while result.more and len(result.popped) < pop and tries < MORE_TRIES:
            # ready work in queues the pop did not declare: ask again, declaring them
            tries += 1
            more = self._flush_once((), (), (), pop - len(result.popped),
                                    {*held, *(i for i, _ in result.popped)}, wait=wait,
                                    feed_bad=0, duplicates=0, report=None)
            result.popped += more.popped
            result.junk += more.junk
            result.next_due, result.pending, result.more = more.next_due, more.pending, more.more
        return result

    def _flush_once(self, pushes: Sequence[PushEntry], acks: Collection[str],
                    invalid: Collection[str], pop: int, held: Collection[str], *, wait: bool,
                    feed_bad: int, duplicates: int, report: ReportDelta | None) -> FlushResult:
        """One FLUSH script (with the report before it, in one round trip)."""
        head: list[Any] = [self.crawl_id, len(pushes), len(acks), len(invalid), pop,
                           self.delay_ms, self.worker_id, feed_bad, duplicates]
        queues: list[str | bytes] = [entry[1] for entry in pushes]
        if pop:
            queues += self._ready_hints
        tail: list[Any] = []
        for fp, slot, priority, blob in pushes:
            tail += [fp, slot, max(-MAX_PRIORITY, min(MAX_PRIORITY, priority)), blob]
        tail += [*acks, *invalid]
        seen = self.keys.seen
        keys = [self.keys.seq, seen.legacy, self._lease_key, self.keys.workers,
                self.keys.slot_delay, self.keys.state, seen.meta]
        fingerprints = [entry[0] for entry in pushes]

        reporting = self._report_call(report) if report is not None else None
        reported: list[bool] = []

        def run() -> list[Any]:
            blocks = self.seen.block_keys(fingerprints)
            try:
                if reporting is None:
                    return self._script("FLUSH", [*keys, *blocks],
                                        [*head, *self.seen.view_args(), *tail], queues=queues)
                # the worker's counters go first, in the same round trip: whatever this
                # flush acknowledges is counted, even if the worker dies right after
                pipe = self.client.pipeline(transaction=False)
                self._script("REPORT", *reporting, client=pipe)
                self._script("FLUSH", [*keys, *blocks], [*head, *self.seen.view_args(), *tail],
                             client=pipe, queues=queues)
                taken, reply = pipe.execute(raise_on_error=False)
                if isinstance(reply, Exception):
                    raise reply  # it did nothing (the report, numbered, may go again)
                # the flush's answer is kept whatever became of the report (a pop's leases
                # would otherwise be lost to this worker). A report whose script was not
                # loaded yet (first use, a restarted server) goes now, loading it; one that
                # failed otherwise goes again by the tick
                if isinstance(taken, redis.exceptions.NoScriptError):
                    try:
                        taken = self._script("REPORT", *reporting)
                    except redis.RedisError as exc:
                        taken = exc
                if not isinstance(taken, Exception):
                    reported.append(self._report_taken(taken, report.seq))  # type: ignore[union-attr]
                return reply
            except _TRANSIENT:
                if pop:
                    self._reconcile = True  # the script may have run: check leases after
                raise

        reply = self._seen_call(run, "update the frontier", bool(pushes), wait=wait)
        result = self._read_flush(reply, len(pushes), pop > 0)
        result.reported = bool(reported) or (report is not None and reporting is None)
        if result.hints is not None:
            self._ready_hints = result.hints
        if self._reconcile and pop:
            # a pop whose answer was lost may have leased ids nobody here knows of
            self._reconcile = False
            self._hand_back_unknown({*held, *(i for i, _ in result.popped)}, wait=wait)
        return result

    def _read_flush(self, reply: list[Any], pushes: int, asked: bool) -> FlushResult:
        """A FLUSH script's answer (``asked``: it had a pop); :class:`CrawlLost` when the
        crawl's data is gone."""
        if reply[0] == b"done":
            return FlushResult([False] * pushes, [], finished=True)
        if reply[0] == b"lost":
            raise CrawlLost(self._lost_message(_text(reply[1]) and "replaced by another crawl"
                                               or "the crawl state is gone"))
        if reply[0] == b"undeclared":
            raise FrontierFault(f"a push's queue was not declared to FLUSH: {_text(reply[1])!r}")
        _, flags, flat, due_ms, lost, junk, pending, hints, more = reply
        popped = [(flat[i].decode("ascii"), flat[i + 1]) for i in range(0, len(flat), 2)]
        if lost:
            raise CrawlLost(self._lost_message(
                f"{len(lost)} queued requests have no stored payload (evicted?)"))
        return FlushResult([bool(x) for x in flags], popped,
                           None if due_ms < 0 else due_ms / 1000, [_text(j) for j in junk],
                           int(pending), hints=_slots(hints) if asked else None,
                           more=bool(more))

    # --- the seen-set (seenset.py) ------------------------------------------------

    def _seen_call(self, run: Callable[[], Any], what: str, checks: bool, *,
                   wait: bool = True, part: int = 0) -> Any:
        """``run`` a script that checks the seen-set of partition ``part`` (if
        ``checks``), with this worker's view of it read first; a "stale" answer (another
        worker added a Bloom layer, the seen-set was remade) changed nothing: read it
        again and retry."""
        seen = self.seens[part]
        for _ in range(STALE_RETRIES):
            if checks and seen.view is None:
                self.read_seen(wait=wait, part=part)
            reply = self.call(run, what, wait=wait)
            if reply[0] != b"stale":
                return reply
            seen.forget()
        raise FrontierFault(
            f"the seen-set of {self.keys.spider!r} in Redis at {redact(self.url)} changed under "
            f"each of {STALE_RETRIES} tries to {what}: is another tool rewriting "
            f"{seen.keys.meta!r}?")

    def read_seen(self, *, wait: bool = True, part: int = 0) -> None:
        """Read the seen-set's mode and Bloom layers (making it, if the crawl has none)."""
        seen = self.seens[part]
        reply = self.call(
            lambda: self._script("SEEN_INIT", [seen.keys.meta, seen.keys.legacy], seen.init_args(),
                                 part=self.parts[part]),
            "read the seen-set", wait=wait)
        seen.load(reply)

    def seen_add(self, fingerprints: Sequence[bytes], *, add: bool = True, wait: bool = True,
                 slots: Sequence[str] | None = None) -> list[bool]:
        """Which ``fingerprints`` the seen-set holds; with ``add``, those it did not hold
        are added (atomically: of two callers adding one fingerprint, one sees it new).
        In a split crawl each is looked up in the partition of its download slot
        (``slots``, one per fingerprint), where the scheduler's pushes look it up too."""
        if not fingerprints:
            return []
        groups: dict[int, list[int]] = {}
        for n in range(len(fingerprints)):
            i = CrawlKeys.partition_of(slots[n], len(self.parts)) if slots else 0
            groups.setdefault(i, []).append(n)
        flags = [False] * len(fingerprints)
        for i, members in groups.items():
            seen, part = self.seens[i], self.parts[i]
            fps = [fingerprints[n] for n in members]

            def run(seen: SeenSet = seen, part: PartitionKeys = part,
                    fps: list[bytes] = fps) -> list[Any]:
                return self._script(
                    "SEEN_ADD", [seen.keys.meta, seen.keys.legacy, *seen.block_keys(fps)],
                    [*seen.view_args(), "1" if add else "0", *fps], part=part)

            reply = self._seen_call(run, "check the seen-set", True, wait=wait, part=i)
            for n, flag in zip(members, reply[1]):
                flags[n] = bool(flag)
        return flags

    def seen_status(self) -> dict[str, Any]:
        """The seen-set's mode and size, over every partition; a Bloom filter's fill and
        estimated false positive rate (SeenSet.describe). Junk in its keys reads as empty."""
        self.read_layout()

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for part in self.parts:
                pipe.hmget(part.seen.meta, STATUS_FIELDS)
                pipe.scard(part.seen.legacy)
            return pipe.execute(raise_on_error=False)

        replies = self.call(run, "read the seen-set")
        described = []
        for i in range(0, len(replies), 2):
            fields, legacy = replies[i], replies[i + 1]
            if isinstance(fields, Exception):
                fields = []
            described.append(SeenSet.describe(fields, legacy if isinstance(legacy, int) else 0))
        return SeenSet.combine(described)

    def _lost_message(self, what: str) -> str:
        return (f"the crawl of {self.keys.spider!r} in Redis at {redact(self.url)} was lost "
                f"({what}): Redis was flushed, restarted without persistence, evicted keys "
                "under memory pressure, or the crawl was restarted with --fresh elsewhere. "
                "Its queue cannot be trusted; start it again (the output keeps what was "
                "written)")

    def _hand_back_unknown(self, known: set[str], *, wait: bool = True) -> None:
        if self.split is not None:
            self.split.hand_back_unknown(known, wait=wait)
            return
        leased = self.call(lambda: self.client.hkeys(self._lease_key), "list leases", wait=wait)
        unknown = [_text(i) for i in leased if _text(i) not in known]
        if unknown:
            logger.warning("Handing back %d leases lost in a failed round trip", len(unknown))
            self.requeue(unknown, wait=wait)

    def requeue(self, ids: Collection[str], *, wait: bool = True) -> int:
        if not ids:
            return 0
        if self.split is not None:
            return self.split.requeue(ids, wait=wait)
        return self.spans.requeue_in({0: list(ids)}, wait=wait)

    # --- liveness and the end of the crawl -----------------------------------------

    def reclaim(self, *, wait: bool = True) -> list[tuple[str, int]]:
        """Give the leases of workers with stale heartbeats back to the queue."""
        return self.spans.reclaim(wait=wait)

    def check_finished(self, *, keep_alive: bool = False, wait: bool = True) -> FinishCheck:
        """Whether the crawl is done (and mark it so); raises :class:`CrawlLost` when its
        data is gone, :class:`CrawlFailed` when another worker marked it failed."""
        if self.split is not None:
            return self.split.check_finished(keep_alive=keep_alive, wait=wait)
        def run() -> list[Any]:
            # the workers on record, read first: the script takes their leases in KEYS
            workers = self.client.zrange(self.keys.workers, 0, -1)  # bytes: keys as they are
            return self._script(
                "CHECK_FINISHED",
                [self.keys.workers, self.keys.seeding, self.keys.state,
                 *(self.keys.lease(w) for w in workers)],
                [self.lease_timeout_ms, self.worker_id, "1" if keep_alive else "0",
                 self.crawl_id or "", self.keys.lease_prefix])

        raw = self.call(run, "check whether the crawl is finished", wait=wait)
        status, detail = _text(raw[0]), _text(raw[5])
        if status == "lost":
            raise CrawlLost(self._lost_message(detail))
        if status == "failed":
            raise CrawlFailed(f"the crawl failed in another worker: {detail}")
        return FinishCheck(status, *(int(x) for x in raw[1:5]))

    def add_totals(self, deltas: Mapping[str, int], *, kinds: Mapping[str, int] | None = None,
                   hosts: Mapping[str, int] | None = None, info: str = "", seq: int = 0,
                   wait: bool = True) -> bool:
        """Add this worker's counters (pages, items, errors...) to the crawl's totals, its
        failed requests by kind and by download slot (``hosts``), and store its row of the
        worker table (``info``, JSON; "" leaves it as it was). One script: all or nothing.

        ``seq`` numbers this worker's reports (1, 2, ...): a report sent again under the
        same number, because the answer to the first try was lost, is not added twice.
        Returns False for such a report (taken before)."""
        call = self._report_call(ReportDelta(dict(deltas), dict(kinds or {}), dict(hosts or {}),
                                             info, seq))
        if call is None:
            return True
        return self._report_taken(self.run_script("REPORT", *call, "report to the crawl",
                                                  wait=wait), seq)

    def _report_call(self, report: ReportDelta) -> tuple[list[str], list[Any]] | None:
        """REPORT's keys and arguments for ``report``; None when it holds nothing."""
        totals = [(f, int(v)) for f, v in report.totals.items() if v]
        kinds_ = [(k, int(v)) for k, v in report.kinds.items() if v]
        hosts_ = [(h, int(v)) for h, v in report.hosts.items() if v]
        if not (totals or kinds_ or hosts_ or report.info):
            return None
        args: list[Any] = [self.worker_id, report.info, len(totals), len(kinds_), report.seq]
        for pair in (*totals, *kinds_, *hosts_):
            args += pair
        keys = [self.keys.error_kinds, self.keys.host_errors, self.keys.worker_info,
                self.keys.workers, self.keys.report_seq]
        return keys, args

    @staticmethod
    def _report_taken(reply: Any, seq: int) -> bool:
        junk = int(reply)
        if junk < 0:
            logger.debug("report %d was taken before (its answer was lost)", seq)
            return False
        if junk:
            # written by another tool: those totals start over (counted in `corrupt`)
            logger.warning("%d crawl totals in Redis held junk; reset", junk)
        return True

    def status(self) -> dict[str, Any]:
        """A snapshot of the crawl for humans: counters, state and workers (overview.py)."""
        self.read_layout()
        return read_status(self)

    def hosts(self, limit: int = HOSTS_SHOWN) -> dict[str, Any]:
        """The busiest, slowest and most failing hosts (overview.py)."""
        self.read_layout()
        return read_hosts(self, limit)


def _by_size(pushes: Sequence[T], limit: int,
             size_of: Callable[[T], int] = lambda entry: len(entry[3])) -> list[Sequence[T]]:  # type: ignore[index]
    """``pushes`` cut into runs whose payloads (``size_of``) add up to at most ``limit``
    bytes each."""
    chunks: list[Sequence[T]] = []
    start, size = 0, 0
    for i, entry in enumerate(pushes):
        size += size_of(entry) + 64
        if size > limit and i > start:
            chunks.append(pushes[start:i])
            start, size = i, size_of(entry) + 64
    chunks.append(pushes[start:])
    return chunks


def _slots(packed: bytes) -> list[bytes]:
    """A FLUSH answer's hints: a msgpack array of slots (an empty Lua table packs as a map)."""
    slots = msgpack.unpackb(packed, raw=True)
    return [s for s in slots if isinstance(s, bytes)] if isinstance(slots, list) else []


def lease_slots(entries: Iterable[Any]) -> set[bytes]:
    """The download slots of lease entries ("<score> <slot>"): the queues a script that
    hands them back must declare. Junk (no slot) is left to the script to drop."""
    slots = set()
    for entry in entries:
        if isinstance(entry, bytes):
            _, sep, slot = entry.partition(b" ")
            if sep:
                slots.add(slot)
    return slots


def _untrusted_certificate(exc: BaseException) -> bool:
    """A TLS handshake that failed on the server's certificate (redis-py wraps it)."""
    return isinstance(exc.__context__, ssl.SSLCertVerificationError) or \
        "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _is_oom(exc: redis.exceptions.ResponseError) -> bool:
    # a plain command answers "OOM ..."; a script's write answers "... OOM command not allowed"
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in str(exc)
