"""How a worker's run ended, as the worker itself recorded it in Redis.

Each worker, as it closes, writes its close reason, pages, items, error and exit status
into the crawl's ``outcomes`` hash under its worker id, ``host:pid:random``
(RedisFrontier.record_outcome). The launcher knows its children's pids, so it finds a
child's outcome by host and pid. Anyone can write to Redis: values of the wrong type are
read as unknown, never as a crash.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

HOST = socket.gethostname()  # the host part of our workers' ids


@dataclass(frozen=True)
class Outcome:
    reason: str | None  # Scrapy's close reason
    pages: int
    items: int
    error: str | None  # the fault it stopped on
    exit_status: int  # the status it meant to exit with (3 or 4 after a fault)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Outcome:
        return cls(reason=_text(raw.get("reason")), pages=_count(raw.get("pages")),
                   items=_count(raw.get("items")), error=_text(raw.get("error")),
                   exit_status=_count(raw.get("exit_status")))


def find_outcome(outcomes: Mapping[str, Mapping[str, Any]], pid: int, *, host: str = HOST,
                 ignore: Collection[str] = ()) -> tuple[str, Outcome] | None:
    """The worker id and outcome recorded by process ``pid`` of ``host``, if any.

    ``ignore``: ids already there before that process started (an earlier process with the
    same pid, here or in an earlier run), so a reused pid never finds another's outcome.
    """
    for worker_id, raw in outcomes.items():
        parts = worker_id.rsplit(":", 2)
        if (worker_id in ignore or len(parts) != 3 or parts[0] != host
                or parts[1] != str(pid) or raw.get("pid", pid) != pid):
            continue
        return worker_id, Outcome.parse(raw)
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
