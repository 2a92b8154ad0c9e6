"""A crawl seen from outside: its counters, state and workers (:func:`read_status`, for
the progress line, ``--status``, the dashboard and ``/metrics``) and its busiest, slowest
and most failing hosts (:func:`read_hosts`).

Read-only, and safe against junk: anything may have been written into the crawl's keys
by another tool, so junk numbers are left out (and counted), junk text is shown escaped,
never a traceback. Every time is in seconds (docs/observing.md).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrapy_fleet.frontier.queue import RedisFrontier

# state fields the scripts keep in ms of the server's clock, shown in seconds
_MS_STATE_FIELDS = ("finished_at", "idle_since", "reclaimed_at", "idle_timeout")
GONE_WORKERS_SHOWN = 50  # rows of workers that left the crawl (highest pid first)
HOSTS_SAMPLED = 200  # slots read from each of ready / delayed for the host tables
HOSTS_SHOWN = 10


def read_status(frontier: RedisFrontier) -> dict[str, Any]:
    """A snapshot of the crawl for humans: counters, state, workers, errors by kind."""
    keys = frontier.keys
    # a split crawl's counters are in its control keys and each partition (keys.py)
    parts = [part for part in frontier.parts if part.base != keys.base]

    def run() -> list[Any]:
        pipe = frontier.client.pipeline(transaction=False)
        pipe.hgetall(keys.stats)
        pipe.hgetall(keys.state)
        pipe.zrange(keys.workers, 0, -1, withscores=True)
        pipe.smembers(keys.seeding)
        pipe.hgetall(keys.worker_info)
        pipe.hgetall(keys.error_kinds)
        for part in frontier.parts:
            pipe.zcard(part.ready)
            pipe.zcard(part.delayed)
        for part in parts:
            pipe.hgetall(part.stats)
        return _answers(pipe.execute(raise_on_error=False))

    answers = frontier.call(run, "read the crawl status")
    stats, state, workers, seeding, info, kinds = answers[:6]
    cards = [_int(n) for n in answers[6:6 + 2 * len(frontier.parts)]]
    ready, delayed = sum(cards[0::2]), sum(cards[1::2])
    now_ms = server_ms(frontier)
    seen = frontier.seen_status()
    numbers, corrupt = _numbers(stats or {})
    for part_stats in answers[6 + 2 * len(frontier.parts):]:
        more, junk = _numbers(part_stats or {})
        corrupt += junk
        for name, value in more.items():
            numbers[name] = numbers.get(name, 0) + value
    if corrupt:
        numbers["corrupt"] = numbers.get("corrupt", 0) + corrupt
    waiting = None
    if numbers.get("pending", 0) > 0 and not ready:
        # queued work, none of it leasable now: held back by politeness. Cheap to say
        # exactly when: the slots in flight are at most the fleet's concurrency.
        def inflight() -> list[Any]:
            pipe = frontier.client.pipeline(transaction=False)
            for part in frontier.parts:
                pipe.hvals(part.inflight)
            return pipe.execute()

        counts = [c for row in frontier.call(inflight, "read the in-flight counts") for c in row]
        capped = sum(1 for c in counts if c.isdigit() and int(c) >= frontier.cap)
        waiting = {"delayed_hosts": int(delayed or 0), "capped_hosts": capped,
                   "cap": frontier.cap}
    rows = {text(k): _row(v) for k, v in (info or {}).items()}
    registered = []
    for worker, beat in workers or []:
        wid = text(worker)
        registered.append({
            "id": wid,
            "last_heartbeat_s": (now_ms - beat) / 1000,
            "alive": 0 <= now_ms - beat <= frontier.lease_timeout_ms,
            "seeding": worker in (seeding or ()),
            **rows.pop(wid, {}),
        })
    gone = sorted(({"id": k, **v} for k, v in rows.items()),
                  key=lambda r: (r.get("pid") or 0), reverse=True)
    return {
        "stats": numbers,
        "waiting": waiting,  # None, or why no queued request can be leased right now
        "state": _state(state or {}),
        "partitions": len(frontier.parts),
        "seen": seen["count"],  # fingerprints in the seen-set (kept by the scripts)
        "seenset": seen,
        "workers": registered,
        "gone_workers": gone[:GONE_WORKERS_SHOWN],  # reported once, no longer registered
        "errors_by_kind": _numbers(kinds or {})[0],  # failed requests by why they failed
        "now": now_ms / 1000,  # the crawl's Redis clock, s since the epoch
    }


def read_hosts(frontier: RedisFrontier, limit: int = HOSTS_SHOWN) -> dict[str, Any]:
    """The busiest hosts (longest queues), the slowest (delay, backoff) and those with
    the most failed requests, ``limit`` of each; from a sample of the download slots (the
    first of the ready and delayed ones, all of those in flight or backing off)."""
    keys = frontier.keys
    # a split crawl: the sample is shared out among its partitions
    sampled = max(1, HOSTS_SAMPLED // len(frontier.parts))

    def candidates() -> list[Any]:
        pipe = frontier.client.pipeline(transaction=False)
        pipe.zrevrange(keys.host_errors, 0, max(0, limit - 1), withscores=True)
        for part in frontier.parts:
            pipe.zrange(part.ready, 0, sampled - 1)
            pipe.zrange(part.delayed, 0, sampled - 1)
            pipe.hkeys(part.inflight)
            pipe.zcard(part.ready)
            pipe.zcard(part.delayed)
        return _answers(pipe.execute(raise_on_error=False))

    answers = frontier.call(candidates, "sample the crawl's hosts")
    top_errors, rows = answers[0], answers[1:]
    found: list[Any] = []
    queued_hosts = 0
    for i in range(0, len(rows), 5):
        ready, delayed, inflight, n_ready, n_delayed = rows[i:i + 5]
        found += [*(ready or []), *(delayed or []), *(inflight or [])]
        queued_hosts += _int(n_ready) + _int(n_delayed)
    slots = list(dict.fromkeys([*found, *(s for s, _ in top_errors or [])]))
    summary = {"hosts_with_queued_work": queued_hosts, "sampled": len(slots)}
    if not slots:
        return {**summary, "busiest": [], "slowest": [], "most_errors": []}
    now_ms = server_ms(frontier)

    # each slot's fields are in its partition's hashes: one HMGET per hash and partition
    groups: dict[int, list[Any]] = {}
    for slot in slots:
        groups.setdefault(frontier.part_of(text(slot)).index, []).append(slot)

    def details() -> list[Any]:
        pipe = frontier.client.pipeline(transaction=False)
        for slot in slots:
            pipe.zcard(frontier.part_of(text(slot)).queue(text(slot)))
            pipe.zscore(keys.host_errors, slot)
        for i, members in groups.items():
            part = frontier.parts[i]
            for key in (part.inflight, part.slot_delay, part.crawl_delay, part.backoff):
                pipe.hmget(key, members)
        return _answers(pipe.execute(raise_on_error=False))

    raw = frontier.call(details, "read the hosts' queues and delays")
    fields: dict[Any, list[Any]] = {}  # slot -> in flight, delay, crawl delay, backoff
    rows = iter(raw[2 * len(slots):])
    for members in groups.values():
        columns = [row if isinstance(row, list) else [None] * len(members)
                   for row in (next(rows) for _ in range(4))]
        for n, slot in enumerate(members):
            fields[slot] = [column[n] for column in columns]
    hosts = []
    for i, slot in enumerate(slots):
        queued, errors = raw[2 * i], raw[2 * i + 1]
        in_flight, delay, crawl_delay, backoff = fields[slot]
        count, until = _backoff(backoff)
        hosts.append({
            "host": text(slot),
            "queued": queued if isinstance(queued, int) else 0,
            "in_flight": _int(in_flight),
            "delay_s": _int(delay, frontier.delay_ms) / 1000,
            "crawl_delay_s": _int(crawl_delay) / 1000 if crawl_delay else None,
            "backoff_s": max(0, until - now_ms) / 1000,
            "backoffs": count,
            "errors": int(errors) if isinstance(errors, float) else 0,
        })

    def top(key: str, also: str = "") -> list[dict[str, Any]]:
        ranked = sorted(hosts, key=lambda h: (h[key] + (h[also] if also else 0), h["queued"]),
                        reverse=True)
        return [h for h in ranked[:limit] if h[key] or (also and h[also])]

    return {
        **summary,
        "busiest": top("queued"),
        "slowest": top("backoff_s", "delay_s"),
        "most_errors": top("errors"),
    }


def server_ms(frontier: RedisFrontier) -> int:
    """The crawl's Redis clock in ms (heartbeats, backoffs are in its time; a cluster
    pipeline takes neither TIME nor scripts, so a script of its own)."""
    now = frontier.run_script("NOW", [], [], "read the Redis clock")
    return int(now[0]) * 1000 + int(now[1]) // 1000


def _numbers(raw: dict[Any, Any]) -> tuple[dict[str, int], int]:
    """A hash of counters as ints, and how many held junk (left out)."""
    numbers: dict[str, int] = {}
    junk = 0
    for k, v in raw.items():
        try:
            numbers[text(k)] = int(v)
        except (TypeError, ValueError):
            junk += 1
    return numbers, junk


def _state(raw: dict[Any, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {text(k): text(v) for k, v in raw.items()}
    for name in _MS_STATE_FIELDS:
        if name in state:
            try:
                state[name] = int(state[name]) / 1000
            except ValueError:
                pass  # junk stays text
    return state


def _row(raw: bytes) -> dict[str, Any]:
    """A worker's JSON row (observe/worker.py), keeping only the known fields and types."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    row: dict[str, Any] = {}
    for name in ("host", "launch", "state", "why"):
        if isinstance(data.get(name), str):
            row[name] = data[name][:300]
    for name in ("pid", "restarts", "pages", "items", "errors"):
        if isinstance(data.get(name), int) and not isinstance(data.get(name), bool):
            row[name] = data[name]
    return row


def _backoff(raw: Any) -> tuple[int, int]:
    """A backoff entry "<consecutive> <until ms>" (politeness/store.py); junk: none."""
    try:
        n, until = text(raw).split(" ", 1)
        return int(n), int(until)
    except (AttributeError, ValueError):
        return 0, 0


def _int(raw: Any, default: int = 0) -> int:
    try:
        return int(raw) if raw is not None else default
    except (TypeError, ValueError):
        return default


def _answers(results: list[Any]) -> list[Any]:
    """A pipeline's answers, None where a key held the wrong type (junk, read as empty);
    any other error is raised, so that RedisFrontier.call retries what is transient (a
    cluster between states) and reports the rest."""
    for i, value in enumerate(results):
        if isinstance(value, Exception):
            if not str(value).startswith("WRONGTYPE"):
                raise value
            results[i] = None
    return results


def text(value: Any) -> str:
    """A Redis reply as text, whatever it holds (non-UTF-8 bytes come out escaped; None
    is "")."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)

