"""A stand-in for ``scrapy crawl`` under the launcher's supervisor, for tests.

A real process on a real Redis, whose end is scripted: the supervisor runs it as
``fake-python -m scrapy crawl SPIDER -s ...``. ``FAKE_WORKER_PLAN`` (JSON) says what the
seeding worker (``FLEET_SEED=1``) and the others do; ``FAKE_REDIS_URL`` and
``FAKE_KEY_PREFIX`` locate the crawl. Each behaviour waits on an event, never on a time:
a worker that waits for a signal says when it is ready for it (a list in Redis, see
:func:`ready_key`), and one that ends the run first waits for ``wait`` of them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import uuid

from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.redis_server import connect


def frontier() -> RedisFrontier:
    url = os.environ["FAKE_REDIS_URL"]
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"  # as a worker's
    return RedisFrontier(connect(url), CrawlKeys(os.environ["FAKE_KEY_PREFIX"], sys.argv[4]),
                         worker_id, url=url)


def ready_key(keys: CrawlKeys) -> str:
    return keys.base + "fake:ready"


def record(**outcome: object) -> None:
    """What the fleet scheduler records as a worker closes."""
    f = frontier()
    f.record_outcome({"reason": "finished", "pages": 0, "items": 0, "error": None,
                      "exit_status": 0, "pid": os.getpid(), **outcome})
    f.client.close()


def main() -> int:
    plan = json.loads(os.environ["FAKE_WORKER_PLAN"])
    behaviour = plan["seed" if "FLEET_SEED=1" in sys.argv else "other"]
    f = frontier()
    if behaviour in ("finish", "fault", "unrecorded-fault"):
        for _ in range(plan.get("wait", 0)):  # the others are ready for what it causes
            while not f.client.blpop([ready_key(f.keys)], timeout=1):  # under the socket's
                pass
    if behaviour == "finish":  # the crawl ends with this worker's last page
        f.client.hset(f.keys.state, "status", "done")
        record(pages=7, items=6)
        return 0
    if behaviour == "fault":  # stops on a fault it records; exits 0 as Scrapy's crawl does
        record(reason="fleet_error", error="output not writable", exit_status=4)
        return 0
    if behaviour == "unrecorded-fault":  # Redis gone: it can only log the fault
        print("scrapy-fleet: this worker stopped: Redis went away", flush=True)
        return 3
    if behaviour == "graceful":  # Scrapy's graceful stop on SIGINT
        signal.signal(signal.SIGINT, lambda *_: (record(reason="shutdown"), sys.exit(0)))
    elif behaviour == "dies-on-sigint":
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    elif behaviour == "hangs-after-the-end":  # the crawl ends, but it is deaf to the stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        f.client.hset(f.keys.state, "status", "done")
    f.client.rpush(ready_key(f.keys), os.getpid())
    f.client.close()
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
