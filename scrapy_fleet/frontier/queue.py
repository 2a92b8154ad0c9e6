"""The shared frontier of one crawl in Redis: push, lease, acknowledge, reclaim, finish.

A thin, synchronous client over the Lua scripts in :mod:`.scripts`; the scheduler decides
when to call it. Every call retries while Redis is away, up to a deadline, and then
raises :class:`RedisUnavailable` with a message naming the server.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from scrapy_fleet.frontier import scripts
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.redis_server import RedisUnavailable, redact

logger = logging.getLogger(__name__)

T = TypeVar("T")
PushEntry = tuple[bytes, str, int, bytes]  # fingerprint (b"" = unfiltered), slot, priority, payload
MAX_PRIORITY = 4000  # |priority| * 2^40 + id must stay exact in a double
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)


@dataclass(frozen=True)
class FinishCheck:
    finished: bool
    pending: int
    leased: int
    live_workers: int
    live_seeders: int


@dataclass
class FlushResult:
    pushed: list[bool]
    popped: list[tuple[str, bytes | None]]
    next_due: float | None = None  # seconds until a slot held back by its delay comes due


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
    ) -> None:
        self.client = client
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
            for name in ("PUSH", "POP", "ACK", "REQUEUE", "RECLAIM", "CHECK_FINISHED",
                         "HEARTBEAT")
        }
        k = keys
        self._common_keys = [k.ready, k.delayed, k.nextok, k.inflight, k.stats, k.payload]
        self._common_args: list[Any] = [k.queue_prefix, self.cap]
        self._lease_key = k.lease(worker_id)
        self.crawl_id: str | None = None  # set by open(): this crawl's id (a new crawl, a new id)

    # --- plumbing -------------------------------------------------------------------

    def _script(self, name: str, extra_keys: Sequence[str], extra_args: Sequence[Any],
                client: Any = None) -> Any:
        keys = [*self._common_keys, *extra_keys]
        args = [*self._common_args, *extra_args]
        if isinstance(client, redis.client.Pipeline):
            # EVALSHA queued as is: redis-py's Script would add a SCRIPT EXISTS round trip
            # to every pipeline; a server that lost its scripts answers NOSCRIPT instead
            return client.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
        return self._scripts[name](keys=keys, args=args, client=client or self.client)

    def add_scripts(self, sources: dict[str, str]) -> None:
        """Register more scripts written on the common KEYS/ARGV (see ``scripts``), such
        as the politeness layer's; they are reloaded with ours after a server restart."""
        for name, source in sources.items():
            self._scripts[name] = self.client.register_script(source)

    def run_script(self, name: str, extra_keys: Sequence[str], extra_args: Sequence[Any],
                   what: str) -> Any:
        """Run a script on the common keys plus ``extra_keys``, retried like every call."""
        return self.call(lambda: self._script(name, extra_keys, extra_args), what)

    def _load_scripts(self) -> None:
        for script in self._scripts.values():
            self.client.script_load(script.script)

    def call(self, operation: Callable[[], T], what: str) -> T:
        """Run ``operation``, retrying while Redis is unreachable, up to the deadline."""
        started = time.monotonic()
        attempt = 0
        reloads = 0
        while True:
            try:
                result = operation()
            except redis.exceptions.NoScriptError:
                # the server restarted (or SCRIPT FLUSH): pipelines queue bare EVALSHAs
                if reloads >= 3:
                    raise
                reloads += 1
                self.call(self._load_scripts, "load the frontier's scripts")
            except _TRANSIENT as exc:
                waited = time.monotonic() - started
                if waited >= self.retry_timeout:
                    raise RedisUnavailable(
                        f"Redis at {redact(self.url)} unreachable for {waited:.0f} s "
                        f"while trying to {what}: {exc}"
                    ) from exc
                if attempt == 0:
                    logger.warning(
                        "Redis at %s unreachable (%s); retrying for up to %.0f s",
                        redact(self.url), exc, self.retry_timeout,
                    )
                if self._on_connection_lost is not None:
                    try:
                        self._on_connection_lost()
                    except Exception as hook_exc:  # keep retrying; report the cause
                        logger.debug("reconnect hook failed: %s", hook_exc)
                attempt += 1
                time.sleep(min(1.0, 0.05 * 2**attempt, max(0.0, self.retry_timeout - waited)))
            else:
                if attempt:
                    logger.warning("Redis at %s is back after %d retries", redact(self.url), attempt)
                return result

    # --- lifecycle ------------------------------------------------------------------

    def open(self, *, fresh: bool, restart_finished: bool = True) -> str:
        """Join the crawl; returns "new", "resumed", "fresh" (an old crawl was wiped) or
        "finished" (it is done and ``restart_finished`` is off: a worker that does not
        seed must not start a crawl nobody will feed)."""
        state = self.call(lambda: self.client.hgetall(self.keys.state), "read the crawl state")
        status = state.get(b"status")
        outcome = "new" if not state else "resumed"
        if status == b"done" and not fresh and not restart_finished:
            return "finished"
        if fresh or status == b"done":
            self.wipe()
            outcome = "fresh" if state else "new"

        def mark() -> bytes:
            pipe = self.client.pipeline(transaction=True)
            pipe.hsetnx(self.keys.state, "status", "running")
            pipe.hsetnx(self.keys.state, "started_at", f"{time.time():.3f}")
            pipe.hsetnx(self.keys.state, "id", uuid.uuid4().hex)
            pipe.hget(self.keys.state, "id")
            return pipe.execute()[-1]

        self.crawl_id = self.call(mark, "open the crawl").decode("ascii", "replace")
        self.heartbeat()
        return outcome

    def wipe(self) -> int:
        """Delete every key of this crawl (a fresh start)."""
        def run() -> int:
            deleted = 0
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=self.keys.pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += self.client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += self.client.unlink(*batch)
            return deleted

        return self.call(run, "wipe the previous crawl")

    def heartbeat(self) -> None:
        self.call(
            lambda: self._scripts["HEARTBEAT"](
                keys=[self.keys.workers], args=[self.worker_id], client=self.client
            ),
            "send a heartbeat",
        )

    def leave(self) -> int:
        """Hand back everything this worker holds and deregister it."""
        def run() -> int:
            pipe = self.client.pipeline(transaction=True)
            self._script("REQUEUE", [self._lease_key], [], client=pipe)
            pipe.zrem(self.keys.workers, self.worker_id)
            pipe.srem(self.keys.seeding, self.worker_id)
            return int(pipe.execute()[0])

        return self.call(run, "hand back leased requests")

    def set_seeding(self, seeding: bool) -> None:
        """Tell other workers this one is (no longer) feeding start requests."""
        def run() -> None:
            pipe = self.client.pipeline(transaction=True)
            if seeding:
                pipe.sadd(self.keys.seeding, self.worker_id)
            else:
                pipe.hset(self.keys.state, "seeded", "1")
                pipe.srem(self.keys.seeding, self.worker_id)
            pipe.execute()

        self.call(run, "record seeding")

    # --- the hot path ---------------------------------------------------------------

    def flush(
        self,
        pushes: Sequence[PushEntry] = (),
        acks: Collection[str] = (),
        invalid: Collection[str] = (),
        pop: int = 0,
        held: Collection[str] = (),
    ) -> FlushResult:
        """Pushes, then acks, then a pop: one atomic round trip.

        Pushes come before acks so that a request's children are stored before it is
        forgotten. If Redis failed mid-call, the pop may have leased ids we never saw:
        after the retry, any lease not in ``held`` (nor just popped) is handed back.
        """
        failed = False

        def run() -> list[Any]:
            nonlocal failed
            pipe = self.client.pipeline(transaction=True)
            if pushes:
                args: list[Any] = []
                for fp, slot, priority, blob in pushes:
                    args += [fp, slot, max(-MAX_PRIORITY, min(MAX_PRIORITY, priority)), blob]
                self._script("PUSH", [self.keys.seq, self.keys.seen], args, client=pipe)
            if acks:
                self._script("ACK", [self._lease_key], ["acked", *acks], client=pipe)
            if invalid:
                self._script("ACK", [self._lease_key], ["invalid", *invalid], client=pipe)
            if pop:
                self._script(
                    "POP",
                    [self._lease_key, self.keys.workers, self.keys.slot_delay],
                    [pop, self.delay_ms, self.worker_id],
                    client=pipe,
                )
            try:
                return pipe.execute()
            except (*_TRANSIENT, redis.exceptions.NoScriptError):
                # other commands of the batch may have run: reconcile leases afterwards
                # (pushes dedupe themselves, acks are idempotent)
                failed = True
                raise

        results = self.call(run, "update the frontier") if (pushes or acks or invalid or pop) else []
        pushed = [bool(x) for x in results[0]] if pushes else []
        popped: list[tuple[str, bytes | None]] = []
        next_due = None
        if pop:
            flat, due_ms = results[-1]
            popped = [(flat[i].decode(), flat[i + 1] or None) for i in range(0, len(flat), 2)]
            next_due = None if due_ms < 0 else due_ms / 1000
        if failed and pop:
            self._hand_back_unknown({*held, *(i for i, _ in popped)})
        return FlushResult(pushed, popped, next_due)

    def _hand_back_unknown(self, known: set[str]) -> None:
        leased = self.call(lambda: self.client.hkeys(self._lease_key), "list leases")
        unknown = [i.decode() for i in leased if i.decode() not in known]
        if unknown:
            logger.warning("Handing back %d leases lost in a failed round trip", len(unknown))
            self.requeue(unknown)

    def requeue(self, ids: Collection[str]) -> int:
        if not ids:
            return 0
        return int(self.call(
            lambda: self._script("REQUEUE", [self._lease_key], list(ids)), "requeue requests"
        ))

    # --- liveness and the end of the crawl -----------------------------------------

    def reclaim(self) -> list[tuple[str, int]]:
        """Give the leases of workers with stale heartbeats back to the queue."""
        flat = self.call(
            lambda: self._script(
                "RECLAIM",
                [self.keys.workers, self.keys.seeding],
                [self.keys.lease_prefix, self.lease_timeout_ms],
            ),
            "reclaim dead workers' requests",
        )
        return [(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def check_finished(self, *, keep_alive: bool = False) -> FinishCheck:
        raw = self.call(
            lambda: self._script(
                "CHECK_FINISHED",
                [self.keys.workers, self.keys.seeding, self.keys.state],
                [self.lease_timeout_ms, self.worker_id, "1" if keep_alive else "0"],
            ),
            "check whether the crawl is finished",
        )
        return FinishCheck(bool(raw[0]), *(int(x) for x in raw[1:]))

    def add_totals(self, deltas: dict[str, int]) -> None:
        """Add this worker's counters (pages, items, errors...) to the crawl's totals."""
        deltas = {k: v for k, v in deltas.items() if v}
        if not deltas:
            return

        def run() -> None:
            pipe = self.client.pipeline(transaction=True)
            for field, value in deltas.items():
                pipe.hincrby(self.keys.stats, field, value)
            pipe.execute()

        self.call(run, "update totals")

    def status(self) -> dict[str, Any]:
        """A snapshot of the crawl for humans: counters, state and workers."""
        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.stats)
            pipe.hgetall(self.keys.state)
            pipe.scard(self.keys.seen)
            pipe.zrange(self.keys.workers, 0, -1, withscores=True)
            pipe.smembers(self.keys.seeding)
            pipe.time()
            return pipe.execute()

        stats, state, seen, workers, seeding, now = self.call(run, "read the crawl status")
        now_ms = now[0] * 1000 + now[1] // 1000
        return {
            "stats": {k.decode(): int(v) for k, v in stats.items()},
            "state": {k.decode(): v.decode() for k, v in state.items()},
            "seen": int(seen),
            "workers": [
                {
                    "id": w.decode(),
                    "last_heartbeat_s": (now_ms - beat) / 1000,
                    "alive": now_ms - beat <= self.lease_timeout_ms,
                    "seeding": w in seeding,
                }
                for w, beat in workers
            ],
        }
