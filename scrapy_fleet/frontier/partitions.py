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
  that just had nothing to lease: none starves, and an idle partition costs little. A pop
  names the queues it may lease from (scripts.py): the ready slots the partition's last
  answer listed, and those the same flush pushed to there; one that left ready work in
  other queues is asked again at once.
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster

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
    STALE_RETRIES,
    RedisRetryLater,
    ReplicasBehind,
    _by_size,
    lease_slots,
)
from scrapy_fleet.redis_server import redact

if TYPE_CHECKING:
    from scrapy_fleet.frontier.queue import RedisFrontier

logger = logging.getLogger(__name__)

SEP = ":"  # a split crawl's lease ids are "<partition>:<id>"
SKIP_FOR = 0.5  # s a partition that had nothing to lease is skipped by pops
MAX_POP_CALLS = 4  # partitions asked for work in one flush at most
HAND_BACK_TRIES = 5  # lease slots read again while leases keep coming (a slow worker's)
LOCK_MS = 10_000  # the check lock; seals last twice as long
SCRIPTS = ("HAND_BACK", "CHECK_PART", "SEAL_PART", "UNSEAL_PART", "CLAIM_PART",
           "DEAD_WORKERS", "FORGET_WORKERS", "DEREGISTER", "CHECK_CONTROL", "END_CHECK")


@dataclass
class _Call:
    """One FLUSH script call on one partition, within a flush."""

    part: int
    members: list[int] = field(default_factory=list)  # indexes of the flush's pushes
    acks: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    pop: int = 0
    counters: tuple[int, int] = (0, 0)  # feed_bad, duplicates
    declare: list[str] = field(default_factory=list)  # more queues a pop may lease from


@dataclass
class _Hint:
    """What this worker last learnt of a partition's work."""

    pending: int = 0  # queued there, as of ``checked``
    due_at: float | None = None  # monotonic time its first delayed slot comes due
    checked: float = float("-inf")  # never: unknown
    exhausted: bool = False  # its last pop leased fewer than asked
    slots: list[bytes] = field(default_factory=list)  # its ready slots: the next pop declares them
    more: bool = False  # its last pop left ready work in queues it had not declared

    def rank(self, now: float) -> int:
        """0: known to have work to lease; 1: unknown (or not looked at for a while);
        2: just found without work to lease (asked only if the others give nothing)."""
        if now - self.checked >= SKIP_FOR:
            return 1
        if self.pending <= 0:
            return 2
        if not self.exhausted or self.more or (self.due_at is not None and self.due_at <= now):
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
        self._counted = False  # the flush's counters went through with a call
        self._unreplicated: set[int] = set()  # pushed to since the last wait for replicas
        self._reconcile = False

    # --- plumbing ---------------------------------------------------------------------

    def _run(self, name: str, keys: Sequence[Any], args: Sequence[Any], what: str,
             wait: bool) -> Any:
        f = self.f
        return f.call(lambda: f._script(name, keys, args, common=False),
                      what, wait=wait)

    def _each(self, name: str, calls: Sequence[tuple[Any, ...]], what: str, wait: bool, *,
              common: bool = True) -> list[Any]:
        """Script ``name`` once per (partition, keys, args[, queues]) of ``calls``, in one
        pipeline: one round trip on one Redis, one per master on a cluster. ``common``:
        the script is written on the partition's common keys (scripts.py), else on
        ``keys`` alone. Only for scripts that are safe to run again: a failure sends them
        all again."""
        f = self.f

        def run() -> list[Any]:
            pipe = f.client.pipeline(transaction=False)
            for i, keys, args, *queues in calls:
                f._script(name, keys, args, client=pipe, part=self.parts[i], common=common,
                          queues=queues[0] if queues else ())
            return pipe.execute()

        return f.call(run, what, wait=wait) if calls else []

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
        """Two pipelined rounds (one round trip each on one Redis, one per master on a
        cluster): every partition's pushes, then every partition's acks with the first
        pop. A request's children are stored before it is forgotten; only when all
        pushes go to one partition do its acks ride in the same script."""
        push_groups: dict[int, list[int]] = {}
        for n, entry in enumerate(pushes):
            if self._stored_before(entry) is None:  # else sent by an earlier try of this flush
                push_groups.setdefault(CrawlKeys.partition_of(entry[1], self.n), []).append(n)
        ack_groups: dict[int, tuple[list[str], list[str]]] = {}
        for column, ids in enumerate((acks, invalid)):
            fresh = [i for i in ids if i not in self._acked]
            for part, raw in self._by_partition(fresh).items():
                ack_groups.setdefault(part, ([], []))[column].extend(raw)
        push_calls = [_Call(part, list(chunk)) for part, members in push_groups.items()
                      for chunk in _by_size(members, MAX_CALL_BYTES, lambda n: len(pushes[n][3]))]
        wait_replicas = self.f.wait_replicas > 0
        if len(push_calls) == 1 and push_calls[0].part in ack_groups and not wait_replicas:
            push_calls[0].acks, push_calls[0].invalid = ack_groups.pop(push_calls[0].part)
        ack_calls = [_Call(part, [], a, inv) for part, (a, inv) in ack_groups.items()]
        # the counters ride once, with the pushes (a batch never stored counts them again)
        counters = (0, 0) if self._counted else (feed_bad, duplicates)
        if counters != (0, 0):
            if push_calls:
                push_calls[-1].counters = counters
            elif ack_calls:
                ack_calls[0].counters = counters
            else:
                ack_calls.append(_Call(0, counters=counters))
        if push_calls and self._send(push_calls, pushes, wait) is None:
            return self._finished(len(pushes))
        if self._unreplicated and ack_calls:
            self._wait_for_replicas(wait)
        popped: list[tuple[str, bytes | None]] = []
        junk: list[str] = []
        if pop or ack_calls:
            answered = self._pop(pop, wait, ack_calls, pushes, push_groups)
            if answered is None:
                return self._finished(len(pushes))
            popped, junk = answered
        flags = [bool(self._stored_before(entry)) for entry in pushes]
        self._forget_tries()
        if self._reconcile and pop:
            self._reconcile = False
            self.hand_back_unknown({*held, *(i for i, _ in popped)}, wait=wait)
        now = time.monotonic()
        dues = [h.due_at - now for h in self._hints if h.due_at is not None and h.pending > 0]
        return FlushResult(flags, popped, max(0.0, min(dues)) if dues else None, junk,
                           sum(max(0, h.pending) for h in self._hints))

    def _stored_before(self, entry: PushEntry) -> bool | None:
        """Whether a try of this flush stored ``entry`` (False: a duplicate); None if no
        try sent it (entries are known by identity: the scheduler sends the same again)."""
        carried = self._carried.get(id(entry))
        return carried[1] if carried is not None and carried[0] is entry else None

    def _finished(self, pushes: int) -> FlushResult:
        self._forget_tries()
        return FlushResult([False] * pushes, [], finished=True)

    def _forget_tries(self) -> None:
        self._carried.clear()
        self._acked.clear()
        self._counted = False

    def _pop(self, want: int, wait: bool, calls: list[_Call], pushes: Sequence[PushEntry],
             pushed: dict[int, list[int]],
             ) -> tuple[list[tuple[str, bytes | None]], list[str]] | None:
        """The acks ``calls``, and leases of up to ``want`` requests: the first partition
        asked goes in the acks' round, the next ones (when it had too few) one by one.
        ``pushed``: the flush's pushes by partition, whose queues a pop there names."""
        now = time.monotonic()
        order = [(self._next + k) % self.n for k in range(self.n)]
        self._next = (self._next + 1) % self.n
        # those worth asking first; the rest too if they gave nothing (work pushed by
        # another worker since is found at once, not after SKIP_FOR)
        order.sort(key=lambda p: self._hints[p].rank(now))
        popped: list[tuple[str, bytes | None]] = []
        junk: list[str] = []
        asked = 0
        again: set[int] = set()  # asked once more at once, naming the queues they named
        order = order if want else []
        while order:
            part = order.pop(0)
            if len(popped) >= want or asked >= MAX_POP_CALLS:
                break
            if popped and self._hints[part].rank(now) == 2:
                break
            asked += 1
            n = want - len(popped)
            asking = next((c for c in calls if c.part == part), None)
            if asking is None:
                asking = _Call(part)
                calls.append(asking)
            asking.pop = n
            # the queues this flush just pushed to there have work: the pop names them too
            asking.declare = [pushes[k][1] for k in pushed.get(part, ())]
            try:
                results = self._send(calls, pushes, wait)
            except BaseException:
                # the script may have leased, and what earlier partitions leased is
                # dropped with this flush: hand back what the scheduler never saw
                self._reconcile = True
                raise
            if results is None:
                return None
            for c, result in zip(calls, results):
                popped += [(self.lease_id(c.part, raw), blob) for raw, blob in result.popped]
                junk += [self.lease_id(c.part, raw) for raw in result.junk]
                if c is asking:
                    self._hints[part].exhausted = len(result.popped) < n
                    if result.more and len(result.popped) < n and part not in again:
                        # ready work in queues it had not declared: again, not counted
                        again.add(part)
                        order.insert(0, part)
                        asked -= 1
            calls = []
        if calls and self._send(calls, pushes, wait) is None:
            return None
        return popped, junk

    def _send(self, calls: Sequence[_Call], pushes: Sequence[PushEntry],
              wait: bool) -> list[FlushResult] | None:
        """FLUSH ``calls``, pipelined, until each is answered: a "stale" answer (the
        seen-set changed) is sent again with the seen-set read again; a push refused by a
        sealed partition waits for the end check to finish. None: the crawl is done."""
        f = self.f
        results: list[FlushResult | None] = [None] * len(calls)
        stale = [0] * len(calls)
        deadline = time.monotonic() + 2 * LOCK_MS / 1000 + f.retry_timeout
        while True:
            todo = [k for k, r in enumerate(results) if r is None]
            if not todo:
                return results  # type: ignore[return-value]
            for k in todo:
                if calls[k].members and f.seens[calls[k].part].view is None:
                    f.read_seen(wait=wait, part=calls[k].part)
            sealed = f.call(lambda: self._round(calls, pushes, results, stale),
                            "update the frontier", wait=wait)
            if not sealed:
                continue
            if self._crawl_done(wait):
                self._unseal([calls[k].part for k in sealed], "done", wait)
                return None
            # sealed while another worker decides whether the crawl has ended; what was
            # answered is remembered (pushes, acks) or handed back (leases)
            if not wait:
                self._reconcile = self._reconcile or any(r and r.popped for r in results)
                raise RedisRetryLater(0.1)
            if time.monotonic() > deadline:
                raise FrontierFault(f"{self.parts[calls[sealed[0]].part].state} in Redis at "
                                    f"{redact(f.url)} refuses pushes (sealed) though the crawl "
                                    "is not done")
            time.sleep(0.05)

    def _round(self, calls: Sequence[_Call], pushes: Sequence[PushEntry],
               results: list[FlushResult | None], stale: list[int]) -> list[int]:
        """One pipeline of the unanswered ``calls`` (up to MAX_CALL_BYTES of payloads);
        returns those refused by a seal. Each answer is recorded as it is read, so a
        failure after some were answered sends only the others again."""
        f = self.f
        todo: list[int] = []
        size = 0
        for k, c in enumerate(calls):
            if results[k] is not None or (c.members and f.seens[c.part].view is None):
                continue
            size += sum(len(pushes[n][3]) + 64 for n in c.members)
            if todo and size > MAX_CALL_BYTES:
                break
            todo.append(k)
        pipe = f.client.pipeline(transaction=False)
        for k in todo:
            self._queue(pipe, calls[k], pushes)
        try:
            replies = pipe.execute(raise_on_error=False)
        except BaseException:
            if any(calls[k].pop for k in todo):
                self._reconcile = True  # a pop may have leased: check leases after
            raise
        error: Exception | None = None
        sealed: list[int] = []
        for k, reply in zip(todo, replies):
            c = calls[k]
            if isinstance(reply, Exception):
                error = error or reply
                continue
            if reply[0] == b"stale":
                # the seen-set changed (a Bloom layer added, the set remade): nothing done
                f.seens[c.part].forget()
                stale[k] += 1
                if stale[k] >= STALE_RETRIES:
                    raise FrontierFault(
                        f"the seen-set of {self.parts[c.part].seen.meta!r} in Redis at "
                        f"{redact(f.url)} changed under each of {STALE_RETRIES} tries: is "
                        "another tool rewriting it?")
                continue
            result = f._read_flush(reply, len(c.members), c.pop > 0)
            if result.finished and c.members:
                sealed.append(k)
                continue
            results[k] = result
            self._answered(c, result, pushes)
        if error is not None:
            raise error
        return sealed

    def _queue(self, pipe: Any, c: _Call, pushes: Sequence[PushEntry]) -> None:
        """Queue one FLUSH on partition ``c.part`` in ``pipe``."""
        f, part, seen = self.f, self.parts[c.part], self.f.seens[c.part]
        head: list[Any] = [f.crawl_id, len(c.members), len(c.acks), len(c.invalid), c.pop,
                           f.delay_ms, f.worker_id, *c.counters]
        tail: list[Any] = []
        for n in c.members:
            fp, slot, priority, blob = pushes[n]
            tail += [fp, slot, max(-MAX_PRIORITY, min(MAX_PRIORITY, priority)), blob]
        tail += [*c.acks, *c.invalid]
        keys = [part.seq, seen.keys.legacy, part.lease(f.worker_id), part.lease_beats,
                part.slot_delay, part.state, seen.keys.meta,
                *seen.block_keys([pushes[n][0] for n in c.members])]
        queues: list[str | bytes] = [pushes[n][1] for n in c.members]
        if c.pop:
            queues += [*c.declare, *self._hints[c.part].slots]
        f._script("FLUSH", keys, [*head, *seen.view_args(), *tail], client=pipe, part=part,
                  queues=queues)

    def _answered(self, c: _Call, result: FlushResult, pushes: Sequence[PushEntry]) -> None:
        """Remember what call ``c`` did, for a retry of this flush and the next pops."""
        for n, ok in zip(c.members, result.pushed):
            self._carried[id(pushes[n])] = (pushes[n], ok)
        if c.members and self.f.wait_replicas:
            self._unreplicated.add(c.part)
        self._acked.update(self.lease_id(c.part, raw) for raw in (*c.acks, *c.invalid))
        if c.counters != (0, 0):
            self._counted = True
        hint = self._hints[c.part]
        hint.pending, hint.checked = result.pending or 0, time.monotonic()
        if c.pop:
            hint.due_at = None if result.next_due is None else hint.checked + result.next_due
            hint.slots, hint.more = result.hints or [], result.more
        elif c.members or c.acks:
            hint.exhausted = False  # pushes or freed slots: it may have work now

    def _wait_for_replicas(self, wait: bool) -> None:
        """Before any ack: the partitions pushed to since the last wait are on
        FLEET_WAIT_REPLICAS replicas, so a failover cannot keep an ack on one master and
        lose the children on another. WAIT counts its own connection's writes: a write on
        that connection comes first, after the pushes on the same master, so WAIT covers
        them too. One pipeline per master; fewer replicas in time is retried as an outage."""
        f = self.f
        want = f.wait_replicas
        timeout_ms = max(100, int(min(1.0, f.retry_timeout) * 1000))

        def run() -> None:
            by_node: dict[str, tuple[Any, PartitionKeys]] = {}
            for i in sorted(self._unreplicated):
                client, node = _node_of(f.client, self.parts[i].replica_mark)
                by_node.setdefault(node, (client, self.parts[i]))
            for node, (client, part) in by_node.items():
                pipe = client.pipeline(transaction=False)
                pipe.set(part.replica_mark, "1", px=60_000)
                pipe.execute_command("WAIT", want, timeout_ms)
                try:
                    _, acked = pipe.execute()
                except redis.exceptions.AskError as exc:
                    # the slot moved to another master: learn the cluster's map again
                    f.client.nodes_manager.initialize()
                    raise redis.ConnectionError(f"slot moved ({exc})") from exc
                if int(acked) < want:
                    raise ReplicasBehind(
                        f"{acked} of the {want} replicas wanted (FLEET_WAIT_REPLICAS) of "
                        f"{node or redact(f.url)} acknowledged the pushes within {timeout_ms} ms")

        f.call(run, "wait for replicas to hold the pushes", wait=wait)
        self._unreplicated.clear()

    def _crawl_done(self, wait: bool) -> bool:
        f = self.f
        status = f.call(lambda: f.client.hget(f.keys.state, "status"), "read the crawl state",
                        wait=wait)
        return status == b"done"

    def _unseal(self, which: Sequence[int], how: str, wait: bool, token: str = "") -> None:
        self._each("UNSEAL_PART", [(i, [self.parts[i].state], [token, how, self.f.crawl_id])
                                   for i in which], "unseal partitions", wait, common=False)

    # --- handing leases back -----------------------------------------------------------

    def requeue(self, ids: Collection[str], *, wait: bool = True) -> int:
        return self.requeue_in(self._by_partition(ids), wait=wait)

    def requeue_in(self, groups: dict[int, list[str]], *, wait: bool = True) -> int:
        """Hand this worker's leases ``groups`` (partition -> ids) back to their queues:
        their slots are read first, so that each script declares the queues it touches."""
        f = self.f
        back = 0
        for _ in range(HAND_BACK_TRIES):
            if not groups:
                return back
            order = list(groups.items())

            def read(order: list[tuple[int, list[str]]] = order) -> list[Any]:
                pipe = f.client.pipeline(transaction=False)
                for i, raw in order:
                    pipe.hmget(self.parts[i].lease(f.worker_id), raw)
                return pipe.execute()

            entries = f.call(read, "read leases", wait=wait)
            answers = self._each("REQUEUE", [
                (i, [self.parts[i].lease(f.worker_id), self.parts[i].seq], raw,
                 lease_slots(found)) for (i, raw), found in zip(order, entries)],
                "requeue requests", wait)
            groups = {}
            for (i, raw), (n, missing) in zip(order, answers):
                back += int(n)
                if int(missing):
                    groups[i] = raw  # a lease rewritten since it was read: read it again
        if groups:
            raise FrontierFault(f"leases in Redis at {redact(f.url)} changed under each of "
                                f"{HAND_BACK_TRIES} tries to hand them back: is another tool "
                                "rewriting them?")
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

    def _hand_back(self, workers: Sequence[str | bytes], field: str,
                   wait: bool) -> tuple[list[int], set[str | bytes]]:
        """Every lease of ``workers`` back to the queues, partition by partition: the
        slots of their leases are read first, so that each script declares the queues it
        touches. Returns the requests handed back per worker, and the workers some of
        whose leases stayed (they kept leasing while this ran: a slow worker, not a dead one)."""
        f = self.f
        backs = [0] * len(workers)
        todo = {(i, w) for i in range(self.n) for w in range(len(workers))}
        for _ in range(HAND_BACK_TRIES):
            pairs = sorted(todo)

            def read(pairs: list[tuple[int, int]] = pairs) -> list[Any]:
                pipe = f.client.pipeline(transaction=False)
                for i, w in pairs:
                    pipe.hvals(self.parts[i].lease(workers[w]))
                return pipe.execute()

            by_part: dict[int, list[tuple[int, list[bytes]]]] = {}
            for (i, w), entries in zip(pairs, f.call(read, "read leases", wait=wait)):
                by_part.setdefault(i, []).append((w, entries))
            calls = [(i, [self.parts[i].seq, *(self.parts[i].lease(workers[w]) for w, _ in held)],
                      [field], lease_slots(e for _, entries in held for e in entries))
                     for i, held in by_part.items()]
            answers = self._each("HAND_BACK", calls, "hand back leased requests", wait)
            todo = set()
            for (i, held), (back, missing) in zip(by_part.items(), answers):
                for (w, _), n, left in zip(held, back, missing):
                    backs[w] += int(n)
                    if int(left):
                        todo.add((i, w))
            if not todo:
                break
        return backs, {workers[w] for _, w in todo}

    def leave(self) -> int:
        f = self.f
        back, kept = self._hand_back([f.worker_id], "requeued", True)
        if kept:
            # never deregister with leases held: they would be nobody's. Reclaimed later.
            logger.warning("Some leases of %s could not be handed back; it stays on record "
                           "until reclaimed", f.worker_id)
            return back[0]
        self._run("DEREGISTER", [f.keys.workers, f.keys.seeding], [f.worker_id],
                  "leave the crawl", True)
        return back[0]

    def reclaim(self, *, wait: bool = True) -> list[tuple[str, int]]:
        f = self.f
        # worker ids as Redis holds them (bytes): a junk id names its keys byte for byte
        dead = list(self._run("DEAD_WORKERS", [f.keys.workers, f.keys.stats],
                              [f.lease_timeout_ms], "find dead workers", wait))
        if not dead:
            return []
        counts, kept = self._hand_back(dead, "reclaimed", wait)
        # a worker whose leases all went back is forgotten; one still leasing stays
        gone = [w for w in dead if w not in kept]
        if gone:
            self._run("FORGET_WORKERS", [f.keys.workers, f.keys.seeding, f.keys.state],
                      [f.lease_timeout_ms, *gone], "forget dead workers", wait)
        return [(text(w), n) for w, n in zip(dead, counts)]

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
            self._unseal(range(self.n), "done", wait)
            return FinishCheck("done", 0, 0, 0, 0)
        live, seeders = int(begin[1]), int(begin[2])
        workers = list(begin[4:])  # bytes: their lease keys byte for byte
        pending = leased = 0
        busy = False
        versions = []
        checks = self._check_parts(workers, wait)
        for status, p, l, version, detail in checks:
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
        answers = self._each("SEAL_PART", [(i, [part.state], [f.crawl_id, token, 2 * LOCK_MS])
                                           for i, part in enumerate(self.parts)],
                             "seal the partitions", wait)
        sealed = [i for i, answer in enumerate(answers) if text(answer) == "sealed"]
        done = len(sealed) == self.n
        marked = bool(self._run("END_CHECK", [f.keys.state, f.keys.check_lock],
                                [token, "done" if done else "release", text(decided[1])],
                                "mark the crawl done", wait))
        self._unseal(sealed, "done" if marked else "open", wait, token)
        if marked:
            return FinishCheck("done", 0, 0, live, seeders)
        return FinishCheck("running", 0, 0, live, seeders)


    def _check_parts(self, workers: Sequence[bytes], wait: bool) -> list[Any]:
        """CHECK_PART on every partition. One that finds more leased than the workers on
        record hold answers "orphans": its other lease hashes are looked for here (SCAN,
        rare) and it is checked again with them and the queues of their leases."""
        f = self.f

        def check(i: int, others: Sequence[str] = (), slots: Collection[bytes] = (),
                  scanned: bool = False) -> tuple[Any, ...]:
            part = self.parts[i]
            return (i, [part.state, part.seq, part.lease_beats, *(part.lease(w) for w in workers),
                        *others],
                    [f.crawl_id, i, part.lease_prefix, f.lease_timeout_ms, len(workers),
                     "1" if scanned else "0"], slots)

        what = "check whether the crawl is finished"
        checks = self._each("CHECK_PART", [check(i) for i in range(self.n)], what, wait)
        again = [i for i, answer in enumerate(checks) if text(answer[0]) == "orphans"]
        if not again:
            return checks
        calls = []
        for i in again:
            part = self.parts[i]
            on_record = {part.lease(w) for w in workers}

            def scan(part: PartitionKeys = part) -> list[tuple[bytes, list[bytes]]]:
                found = list(f.client.scan_iter(match=part.lease_pattern, count=1000))
                pipe = f.client.pipeline(transaction=False)
                for key in found:
                    pipe.hvals(key)
                return list(zip(found, pipe.execute())) if found else []

            others = [(k, v) for k, v in f.call(scan, "look for orphaned leases", wait=wait)
                      if k not in on_record]
            calls.append(check(i, [k for k, _ in others],
                               lease_slots(e for _, entries in others for e in entries), True))
        for i, answer in zip(again, self._each("CHECK_PART", calls, what, wait)):
            checks[i] = answer
        return checks


def _node_of(client: Any, key: str) -> tuple[Any, str]:
    """The client of the master that holds ``key`` (of a Redis Cluster), and its name;
    one Redis: the client itself."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        return client.get_redis_connection(node), node.name
    return client, ""
