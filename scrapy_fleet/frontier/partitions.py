"""A crawl split into partitions: the frontier's operations that span them.

A split crawl (keys.py) keeps each download slot's queue, leases, seen-set and politeness
state in the partition of its slot, and its workers, seeding and state in its control
keys, each group in one Redis Cluster slot. No Lua script spans two of them, so what
spans partitions is a sequence of scripts (partition_scripts.py) in an order that never
loses a request, each safe to run again after a failure:

- **flush**: every push is stored before any acknowledgement is sent, so a request is
  forgotten only after its children are stored. Pushes and acks that went through in a
  flush that failed later are remembered and not sent again by its retry (a push sent
  twice would be counted a duplicate; one of ``dont_filter`` would run twice). Leases
  whose answer was lost are handed back after the next pop, as in an unsplit crawl.
- **pop**: partitions are asked in turn, from a rotating start, skipping for a moment those
  that just had nothing to lease: none starves, and an idle partition costs little.
- **reclaim**: the dead workers are read from the control keys, each partition hands
  their leases back, and only then are they forgotten. A crash in between leaves them on
  record, dead, for the next reclaim.
- **leave**: every partition hands this worker's leases back; it deregisters last.
- **the end**: the control keys are read (status, seeders), each partition is checked and
  repaired (CHECK_PART), the control rules are applied and the check lock taken (one
  worker at a time), then every partition is sealed if it is still empty: a sealed
  partition refuses pushes. Once all are sealed, all were empty at one instant and none
  could change since: nothing is queued or leased anywhere, so no worker can make more
  work, and the crawl is marked done (if the lock is still held: a checker that stalled
  past it lets go). A partition found busy lifts the seals. Seals end by themselves
  (twice the lock's time), so a checker killed half-way holds nothing up for long.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy_fleet.frontier import partition_scripts
from scrapy_fleet.frontier.keys import CrawlKeys, PartitionKeys
from scrapy_fleet.frontier.overview import text
from scrapy_fleet.frontier.queue import (
    MAX_CALL_BYTES,
    MAX_PRIORITY,
    CrawlFailed,
    CrawlLost,
    FinishCheck,
    FlushResult,
    FrontierFault,
    PushEntry,
    RedisRetryLater,
    _by_size,
)
from scrapy_fleet.redis_server import redact

if TYPE_CHECKING:
    from scrapy_fleet.frontier.queue import RedisFrontier

logger = logging.getLogger(__name__)

SEP = ":"  # a split crawl's lease ids are "<partition>:<id>"
SKIP_FOR = 0.5  # s a partition that had nothing to lease is skipped by pops
MAX_POP_CALLS = 4  # partitions asked for work in one flush at most
LOCK_MS = 10_000  # the check lock; seals last twice as long
SCRIPTS = ("HAND_BACK", "CHECK_PART", "SEAL_PART", "UNSEAL_PART", "CLAIM_PART",
           "DEAD_WORKERS", "FORGET_WORKERS", "DEREGISTER", "CHECK_CONTROL", "END_CHECK")


@dataclass
class _Hint:
    """What this worker last learnt of a partition's work."""

    pending: int = 0  # queued there, as of ``checked``
    due_at: float | None = None  # monotonic time its first delayed slot comes due
    checked: float = float("-inf")  # never: unknown
    exhausted: bool = False  # its last pop leased fewer than asked

    def rank(self, now: float) -> int:
        """0: known to have work to lease; 1: unknown (or not looked at for a while);
        2: just found without work to lease (asked only if the others give nothing)."""
        if now - self.checked >= SKIP_FOR:
            return 1
        if self.pending <= 0:
            return 2
        if not self.exhausted or (self.due_at is not None and self.due_at <= now):
            return 0
        return 2


class SplitCrawl:
    """The multi-partition side of a :class:`RedisFrontier` (see the module doc)."""

    def __init__(self, frontier: RedisFrontier) -> None:
        self.f = frontier
        self.parts: list[PartitionKeys] = frontier.parts
        self.n = len(self.parts)
        frontier.add_scripts({name: getattr(partition_scripts, name) for name in SCRIPTS})
        self._hints = [_Hint() for _ in range(self.n)]
        self._next = random.randrange(self.n)  # workers start their turns apart
        # a failed flush's pushes (by identity: the scheduler sends the same entries
        # again) and acks that went through
        self._carried: dict[int, tuple[PushEntry, bool]] = {}
        self._acked: set[str] = set()
        self._reconcile = False

    # --- plumbing ---------------------------------------------------------------------

    def _run(self, name: str, keys: Sequence[Any], args: Sequence[Any], what: str,
             wait: bool) -> Any:
        f = self.f
        return f.call(lambda: f._scripts[name](keys=list(keys), args=list(args), client=f.client),
                      what, wait=wait)

    def _part_script(self, name: str, i: int, keys: Sequence[Any], args: Sequence[Any],
                     what: str, wait: bool) -> Any:
        return self.f.run_script(name, keys, args, what, wait=wait, part=self.parts[i])

    def lease_id(self, i: int, raw: str) -> str:
        return f"{i}{SEP}{raw}"

    def where(self, lease_id: str) -> tuple[int, str] | None:
        """(partition, id in it) of a lease id this frontier gave out; None for junk."""
        head, sep, raw = lease_id.partition(SEP)
        if not sep or not head.isdigit() or int(head) >= self.n or not raw:
            return None
        return int(head), raw

    def _by_partition(self, ids: Collection[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for lease_id in ids:
            where = self.where(lease_id)
            if where is None:
                logger.warning("Ignoring lease id %r: not one this frontier gave out", lease_id)
                continue
            groups.setdefault(where[0], []).append(where[1])
        return groups

    def claim(self) -> None:
        """Mark every partition as the crawl's own (its id), then the crawl as claimed:
        from then on a partition without the id has lost its data (CrawlLost)."""
        f = self.f
        for part in self.parts:
            held = self._run("CLAIM_PART", [part.state], [f.crawl_id], "open the crawl's partitions",
                             True)
            if text(held) != f.crawl_id:
                raise FrontierFault(
                    f"{part.state} in Redis at {redact(f.url)} belongs to another crawl of "
                    f"{f.keys.spider!r}; run with --fresh to start it again")
        f.call(lambda: f.client.hset(f.keys.state, "claimed", "1"), "open the crawl's partitions")

    # --- the hot path -----------------------------------------------------------------

    def flush(self, pushes: Sequence[PushEntry], acks: Collection[str], invalid: Collection[str],
              pop: int, held: Collection[str], *, wait: bool, feed_bad: int,
              duplicates: int) -> FlushResult:
        flags = [False] * len(pushes)
        push_groups: dict[int, list[int]] = {}
        for n, entry in enumerate(pushes):
            carried = self._carried.get(id(entry))
            if carried is not None and carried[0] is entry:
                flags[n] = carried[1]  # stored by an earlier try of this flush
                continue
            push_groups.setdefault(CrawlKeys.partition_of(entry[1], self.n), []).append(n)
        ack_groups: dict[int, tuple[list[str], list[str]]] = {}
        for column, ids in enumerate((acks, invalid)):
            fresh = [i for i in ids if i not in self._acked]
            for part, raw in self._by_partition(fresh).items():
                ack_groups.setdefault(part, ([], []))[column].extend(raw)
        # every push before any ack; the last push call may carry its partition's acks
        calls: list[tuple[int, list[int], list[str], list[str]]] = []
        for part in sorted(push_groups, key=lambda p: p in ack_groups):
            for chunk in _by_size(push_groups[part], MAX_CALL_BYTES, lambda n: len(pushes[n][3])):
                calls.append((part, list(chunk), [], []))
        if calls and calls[-1][0] in ack_groups:
            part, members, _, _ = calls[-1]
            calls[-1] = (part, members, *ack_groups.pop(part))
        calls += [(part, [], a, inv) for part, (a, inv) in ack_groups.items()]
        if not calls and (feed_bad or duplicates):
            calls.append((0, [], [], []))
        # the counters ride with the last pushes (a batch never stored is counted again)
        counted = max((k for k, c in enumerate(calls) if c[1]), default=0)
        for k, (part, members, a, inv) in enumerate(calls):
            extra = (feed_bad, duplicates) if k == counted else (0, 0)
            result = self._flush_one(part, [pushes[n] for n in members], a, inv, 0, extra, wait)
            if result.finished:
                self._carried.clear()
                self._acked.clear()
                return FlushResult([False] * len(pushes), [], finished=True)
            for n, ok in zip(members, result.pushed):
                flags[n] = ok
                self._carried[id(pushes[n])] = (pushes[n], ok)
            self._acked.update(self.lease_id(part, raw) for raw in (*a, *inv))
        popped: list[tuple[str, bytes | None]] = []
        junk: list[str] = []
        if pop:
            popped, junk = self._pop(pop, wait)
        self._carried.clear()
        self._acked.clear()
        if self._reconcile and pop:
            self._reconcile = False
            self.hand_back_unknown({*held, *(i for i, _ in popped)}, wait=wait)
        now = time.monotonic()
        dues = [h.due_at - now for h in self._hints if h.due_at is not None and h.pending > 0]
        return FlushResult(flags, popped, max(0.0, min(dues)) if dues else None, junk,
                           sum(max(0, h.pending) for h in self._hints))

    def _pop(self, want: int, wait: bool) -> tuple[list[tuple[str, bytes | None]], list[str]]:
        now = time.monotonic()
        order = [(self._next + k) % self.n for k in range(self.n)]
        self._next = (self._next + 1) % self.n
        # those worth asking first; the rest too if they gave nothing (work pushed by
        # another worker since is found at once, not after SKIP_FOR)
        order.sort(key=lambda p: self._hints[p].rank(now))
        popped: list[tuple[str, bytes | None]] = []
        junk: list[str] = []
        asked = 0
        for part in order:
            if len(popped) >= want or asked >= MAX_POP_CALLS:
                break
            if popped and self._hints[part].rank(now) == 2:
                break
            asked += 1
            n = want - len(popped)
            try:
                result = self._flush_one(part, [], [], [], n, (0, 0), wait)
            except BaseException:
                # the script may have leased, and what earlier partitions leased is
                # dropped with this flush: hand back what the scheduler never saw
                self._reconcile = True
                raise
            popped += [(self.lease_id(part, raw), blob) for raw, blob in result.popped]
            junk += [self.lease_id(part, raw) for raw in result.junk]
            self._hints[part].exhausted = len(result.popped) < n
        return popped, junk

    def _flush_one(self, i: int, pushes: Sequence[PushEntry], acks: Sequence[str],
                   invalid: Sequence[str], pop: int, extra: tuple[int, int],
                   wait: bool) -> FlushResult:
        """One FLUSH on partition ``i``; a push refused by a sealed partition waits for
        the end check to finish (or fails over to ``finished`` once the crawl is done)."""
        f, part, seen = self.f, self.parts[i], self.f.seens[i]
        head: list[Any] = [f.crawl_id, len(pushes), len(acks), len(invalid), pop, f.delay_ms,
                           f.worker_id, *extra]
        tail: list[Any] = []
        for fp, slot, priority, blob in pushes:
            tail += [fp, slot, max(-MAX_PRIORITY, min(MAX_PRIORITY, priority)), blob]
        tail += [*acks, *invalid]
        keys = [part.seq, seen.keys.legacy, part.lease(f.worker_id), part.lease_beats,
                part.slot_delay, part.state, seen.keys.meta]
        fingerprints = [entry[0] for entry in pushes]

        def run() -> list[Any]:
            blocks = seen.block_keys(fingerprints)
            return f._script("FLUSH", [*keys, *blocks], [*head, *seen.view_args(), *tail],
                             part=part)

        deadline = time.monotonic() + 2 * LOCK_MS / 1000 + f.retry_timeout
        while True:
            reply = f._seen_call(run, "update the frontier", bool(pushes), wait=wait, part=i)
            result = f._read_flush(reply, len(pushes))
            if not (result.finished and pushes):
                break
            if self._crawl_done(wait):
                self._unseal(i, "done", wait)
                return result
            # sealed while another worker decides whether the crawl has ended
            if not wait:
                raise RedisRetryLater(0.1)
            if time.monotonic() > deadline:
                raise FrontierFault(f"{part.state} in Redis at {redact(f.url)} refuses pushes "
                                    "(sealed) though the crawl is not done")
            time.sleep(0.05)
        hint = self._hints[i]
        hint.pending, hint.checked = result.pending or 0, time.monotonic()
        if pop:
            hint.due_at = None if result.next_due is None else hint.checked + result.next_due
        else:
            hint.exhausted = False  # pushes or freed slots: it may have work now
        return result

    def _crawl_done(self, wait: bool) -> bool:
        f = self.f
        status = f.call(lambda: f.client.hget(f.keys.state, "status"), "read the crawl state",
                        wait=wait)
        return status == b"done"

    def _unseal(self, i: int, how: str, wait: bool, token: str = "") -> None:
        self._run("UNSEAL_PART", [self.parts[i].state], [token, how, self.f.crawl_id],
                  "unseal a partition", wait)

    # --- handing leases back -----------------------------------------------------------

    def requeue(self, ids: Collection[str], *, wait: bool = True) -> int:
        back = 0
        for i, raw in self._by_partition(ids).items():
            part = self.parts[i]
            back += int(self._part_script("REQUEUE", i, [part.lease(self.f.worker_id), part.seq],
                                          raw, "requeue requests", wait))
        return back

    def hand_back_unknown(self, known: set[str], *, wait: bool = True) -> None:
        f = self.f

        def run() -> list[Any]:
            pipe = f.client.pipeline(transaction=False)
            for part in self.parts:
                pipe.hkeys(part.lease(f.worker_id))
            return pipe.execute()

        leased = f.call(run, "list leases", wait=wait)
        unknown = [self.lease_id(i, text(raw)) for i, ids in enumerate(leased) for raw in ids
                   if self.lease_id(i, text(raw)) not in known]
        if unknown:
            logger.warning("Handing back %d leases lost in a failed round trip", len(unknown))
            self.requeue(unknown, wait=wait)

    def _hand_back(self, workers: Sequence[str], field: str, wait: bool) -> list[int]:
        """Every lease of ``workers`` back to the queues, partition by partition."""
        counts = [0] * len(workers)
        for i, part in enumerate(self.parts):
            back = self._part_script("HAND_BACK", i, [part.seq, *(part.lease(w) for w in workers)],
                                     [field], "hand back leased requests", wait)
            counts = [c + int(b) for c, b in zip(counts, back)]
        return counts

    def leave(self) -> int:
        f = self.f
        back = self._hand_back([f.worker_id], "requeued", True)[0]
        self._run("DEREGISTER", [f.keys.workers, f.keys.seeding], [f.worker_id],
                  "leave the crawl", True)
        return back

    def reclaim(self, *, wait: bool = True) -> list[tuple[str, int]]:
        f = self.f
        dead = [text(w) for w in self._run("DEAD_WORKERS", [f.keys.workers, f.keys.stats],
                                           [f.lease_timeout_ms], "find dead workers", wait)]
        if not dead:
            return []
        counts = self._hand_back(dead, "reclaimed", wait)
        self._run("FORGET_WORKERS", [f.keys.workers, f.keys.seeding, f.keys.state],
                  [f.lease_timeout_ms, *dead], "forget dead workers", wait)
        return list(zip(dead, counts))

    # --- the end of the crawl ----------------------------------------------------------

    def _control(self, step: str, wait: bool, *, keep_alive: bool = False, versions: str = "",
                 token: str = "") -> list[Any]:
        f = self.f
        reply = self._run(
            "CHECK_CONTROL", [f.keys.workers, f.keys.seeding, f.keys.state, f.keys.check_lock],
            [f.lease_timeout_ms, f.worker_id, f.crawl_id or "", step, versions, token, LOCK_MS,
             "1" if keep_alive else "0"],
            "check whether the crawl is finished", wait)
        status = text(reply[0])
        if status == "lost":
            raise CrawlLost(f._lost_message(text(reply[3])))
        if status == "failed":
            raise CrawlFailed(f"the crawl failed in another worker: {text(reply[3])}")
        return [status, *reply[1:]]

    def check_finished(self, *, keep_alive: bool = False, wait: bool = True) -> FinishCheck:
        f = self.f
        begin = self._control("begin", wait)
        if begin[0] == "done":
            for i in range(self.n):
                self._unseal(i, "done", wait)
            return FinishCheck("done", 0, 0, 0, 0)
        live, seeders = int(begin[1]), int(begin[2])
        workers = [text(w) for w in begin[4:]]
        pending = leased = 0
        busy = False
        versions = []
        for i, part in enumerate(self.parts):
            status, p, l, version, detail = self._part_script(
                "CHECK_PART", i, [part.state, part.seq, part.lease_beats,
                                  *(part.lease(w) for w in workers)],
                [f.crawl_id, i, part.lease_prefix, f.lease_timeout_ms],
                "check whether the crawl is finished", wait)
            if text(status) == "lost":
                raise CrawlLost(f._lost_message(text(detail)))
            pending, leased = pending + int(p), leased + int(l)
            busy = busy or text(status) == "busy"
            versions.append(text(version))
        if busy:
            self._control("busy", wait)
            return FinishCheck("running", pending, leased, live, seeders)
        token = uuid.uuid4().hex
        decided = self._control("decide", wait, keep_alive=keep_alive,
                                versions=",".join(versions), token=token)
        if decided[0] != "seal":
            return FinishCheck("done" if decided[0] == "done" else "running", 0, 0, live, seeders)
        sealed = []
        for i, part in enumerate(self.parts):
            answer = text(self._part_script("SEAL_PART", i, [part.state],
                                            [f.crawl_id, token, 2 * LOCK_MS],
                                            "seal a partition", wait))
            if answer != "sealed":
                break
            sealed.append(i)
        done = len(sealed) == self.n
        marked = bool(self._run("END_CHECK", [f.keys.state, f.keys.check_lock],
                                [token, "done" if done else "release", text(decided[1])],
                                "mark the crawl done", wait))
        for i in sealed:
            self._unseal(i, "done" if marked else "open", wait, token)
        if marked:
            return FinishCheck("done", 0, 0, live, seeders)
        return FinishCheck("running", 0, 0, live, seeders)
