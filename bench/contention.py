"""Contention benchmark: N workers leasing from one crawl at once, this checkout against
another commit (``--base``), same Redis, same run.

    python bench/contention.py --base e084abd          # 1, 2 and 4 workers, 3 runs each
    python bench/contention.py --base e084abd --workers 4 --runs 1 --requests 4000

Since every key a script touches is declared in KEYS (scripts.py), a pop leases only from
the queues it names: the ready slots its previous answer listed (hints). Workers that
lease at once from the same slots make each other's hints stale, and a pop that finds
ready work in queues it did not name asks again. This measures what that costs: each
worker process pushes its share of the requests (``--hosts`` hosts, one download slot
each), then all lease ``--batch`` at a time and acknowledge until the crawl ends. Figures
per implementation and worker count (medians): requests/s of the whole fleet, round trips
per request (``send_packed_command`` calls of every worker / requests), and the mean
requests per pop. Runs alternate between the implementations. The other commit is
checked out into a temporary worktree and imported from there in its own processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scrapy_fleet.redis_server import ensure_embedded_server, stop_embedded_server  # noqa: E402

# One worker, run in its own process with the implementation's checkout on sys.path:
# argv: checkout, url, prefix, worker, workers, requests, hosts, batch, delay
WORKER = r"""
import json, sys, time, uuid
sys.path.insert(0, sys.argv[1])
import redis.connection
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.redis_server import connect

url, prefix, me = sys.argv[2], sys.argv[3], int(sys.argv[4])
workers, n, hosts, batch = (int(x) for x in sys.argv[5:9])
trips = [0]
send = redis.connection.AbstractConnection.send_packed_command
def counted(self, *a, **k):
    trips[0] += 1
    return send(self, *a, **k)
redis.connection.AbstractConnection.send_packed_command = counted
f = RedisFrontier(connect(url), CrawlKeys(prefix, "bench"), f"w{me}", url=url,
                  concurrency_per_slot=1000, download_delay=float(sys.argv[9]))
f.open(fresh=False)
f.set_seeding(True)
mine = [i for i in range(n) if i % workers == me]
work = [(uuid.uuid5(uuid.NAMESPACE_URL, f"{i}").bytes, f"host{i % hosts}.example", 0,
         f"https://host{i % hosts}.example/page/{i}".encode()) for i in mine]
for i in range(0, len(work), 64):
    f.flush(work[i:i + 64])
f.set_seeding(False)
print("ready", flush=True)
sys.stdin.readline()  # all start leasing at once
trips[0] = 0
start = time.perf_counter()
done = pops = 0
acks = []
while True:
    popped = f.flush(acks=acks, pop=batch).popped
    acks = [lease for lease, _ in popped]
    if popped:
        pops += 1
        done += len(popped)
        continue
    if f.check_finished().finished:
        break
    time.sleep(0.01)
print(json.dumps({"done": done, "pops": pops, "trips": trips[0],
                  "elapsed": time.perf_counter() - start}), flush=True)
"""


def run(checkout: str, url: str, workers: int, n: int, hosts: int, batch: int,
        delay: float) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, checkout, url, prefix, str(w),
                               str(workers), str(n), str(hosts), str(batch), str(delay)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for w in range(workers)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
    for p in procs:
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        results.append(json.loads(out.strip().splitlines()[-1]))
        assert p.returncode == 0
    done = sum(r["done"] for r in results)
    assert done == n, f"{done} of {n} requests leased"
    return {"rate": done / max(r["elapsed"] for r in results),
            "trips": sum(r["trips"] for r in results) / done,
            "per_pop": done / max(1, sum(r["pops"] for r in results))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16, help="requests per pop (FLEET_BATCH_SIZE)")
    parser.add_argument("--delay", type=float, default=0.0, help="DOWNLOAD_DELAY, seconds")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = str(Path(tmp) / "base")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", base, args.base],
                       check=True, capture_output=True)
        try:
            url = ensure_embedded_server(Path(tmp) / "redis")
            impls = {f"base {args.base}": base, "this checkout": str(ROOT)}
            for workers in (int(w) for w in args.workers.split(",")):
                figures: dict[str, list[dict[str, float]]] = {name: [] for name in impls}
                for _ in range(args.runs):
                    for name, checkout in impls.items():
                        figures[name].append(run(checkout, url, workers, args.requests,
                                                 args.hosts, args.batch, args.delay))
                for name, runs in figures.items():
                    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    rates = ", ".join(f"{r['rate']:.0f}" for r in runs)
                    print(f"{workers} workers  {name:<22} {med['rate']:8.0f} req/s  "
                          f"{med['trips']:.3f} round trips/req  {med['per_pop']:.1f} req/pop  "
                          f"(rates {rates})", flush=True)
        finally:
            stop_embedded_server(Path(tmp) / "redis")
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", base],
                           capture_output=True)


if __name__ == "__main__":
    main()
