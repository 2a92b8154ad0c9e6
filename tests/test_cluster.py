"""REDIS_URL naming any node of a real Redis Cluster (3 masters, tests/cluster.py): the
frontier and a real ``scrapy fleet`` crawl work through it, MOVED followed. Today a crawl
is split into partitions spread over the masters (tests/test_partitions.py on one Redis)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from cluster import LocalCluster, cluster_ports
from conftest import WAIT, Fleet, crawl_hosts, fleet_args, fp, make_project, scrapy_args, wait_for
from local_site import Host, LinkedSite, PoliteSite
from tls_proxy import TlsProxy
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.redis_server import connect

pytestmark = pytest.mark.slow  # starts redis-servers of its own


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    nodes = LocalCluster(tmp_path_factory.mktemp("cluster"), cluster_ports(3))
    try:
        yield nodes.start()
    finally:
        nodes.stop()


def test_any_nodes_url_gives_a_cluster_client_that_runs_the_frontier(cluster, key_prefix):
    keys = CrawlKeys(key_prefix, "spider")
    owner = cluster.owner(keys.state)
    for url in cluster.urls:  # the owner of the crawl's slot, and two that answer MOVED
        client = connect(url)
        assert isinstance(client, RedisCluster), url
        frontier = RedisFrontier(client, keys, f"w-{url[-7:-2]}", url=url)
        assert frontier.open(fresh=True, owner="Spider") in ("new", "fresh")
        frontier.set_seeding(True)
        result = frontier.flush([(fp(1), "a", 0, b"one"), (fp(1), "a", 0, b"dup"),
                                 (fp(2), "b", 0, b"two")], pop=5)
        assert result.pushed == [True, False, True] and len(result.popped) == 2
        frontier.set_seeding(False)
        frontier.add_totals({"pages": 2})
        assert frontier.status()["stats"]["pages"] == 2
        assert frontier.hosts()["hosts_with_queued_work"] == 0  # both leased
        assert not frontier.check_finished().finished  # two leased
        frontier.flush(acks=[lease for lease, _ in result.popped])
        assert frontier.check_finished().finished
        client.close()
        assert frontier.status()["state"]["status"] == "done"  # usable after close(), as redis.Redis
    assert owner in cluster.ports


def test_a_fleet_crawl_through_a_node_that_does_not_hold_its_keys(tmp_path: Path, cluster, key_prefix):
    site = LinkedSite(40).start()
    try:
        keys = CrawlKeys(key_prefix, "links")
        other = cluster.url_besides(cluster.owner(keys.state))
        settings = {"REDIS_URL": other, "FLEET_KEY_PREFIX": key_prefix,
                    "FLEET_DATA_DIR": str(tmp_path / ".fleet"), "CONCURRENT_REQUESTS": "4"}
        fleet = Fleet(make_project(tmp_path), fleet_args(site.url, settings, "-n", "2"))
        assert fleet.wait() == 0, fleet.text[-3000:]
        assert "finished" in fleet.text
    finally:
        site.stop()
    assert len(site.page_fetches()) == 40 and set(site.page_fetches().values()) == {1}


def test_a_master_restarted_and_a_worker_killed_mid_crawl_lose_nothing(tmp_path: Path, cluster,
                                                                       key_prefix):
    site = LinkedSite(300, delay=0.02).start()
    try:
        keys = CrawlKeys(key_prefix, "links")
        owner = cluster.owner(keys.state)
        other = cluster.url_besides(owner)
        settings = {"REDIS_URL": other, "FLEET_KEY_PREFIX": key_prefix,
                    "FLEET_DATA_DIR": str(tmp_path / ".fleet"), "CONCURRENT_REQUESTS": "4",
                    "FLEET_LEASE_TIMEOUT": "3", "FLEET_REDIS_RETRY_TIMEOUT": "60"}
        fleet = Fleet(make_project(tmp_path), fleet_args(site.url, settings, "-n", "2"))
        view = RedisFrontier(connect(other), keys, "test", url=other)
        wait_for(lambda: len(site.page_fetches()) >= 60, what="the crawl under way")
        # the master that holds the crawl's slot goes away and comes back (its AOF and
        # nodes.conf keep the crawl and its slots)
        cluster.restart(owner)
        wait_for(lambda: len(site.page_fetches()) >= 120 or fleet.proc.poll() is not None,
                 what="the crawl going on")
        assert fleet.proc.poll() is None, fleet.text[-3000:]
        # then a worker is SIGKILLed while it holds leases: scrapy fleet restarts it
        victim = next(w for w in view.status()["workers"] if w["alive"] and w.get("pid"))
        os.kill(victim["pid"], signal.SIGKILL)
        assert fleet.wait() == 0, fleet.text[-3000:]
        assert "finished" in fleet.text
        assert "died with signal 9 (SIGKILL)" in fleet.text, fleet.text
    finally:
        site.stop()
    fetches = site.page_fetches()
    assert len(fetches) == 300  # every page, none lost
    assert sum(n - 1 for n in fetches.values()) <= 2 * (4 + 16)  # only what was in flight
    status = view.status()
    assert status["stats"]["pending"] == status["stats"]["leased"] == 0
    assert status["stats"]["acked"] == status["stats"]["enqueued"]
    assert view.hosts()["busiest"] == []  # nothing queued is left anywhere


def test_a_crawl_over_many_hosts_is_spread_over_every_master_and_ends_exactly(
        tmp_path: Path, cluster, key_prefix):
    """A crawl on a cluster is split (16 partitions): its keys and commands are on every
    master, none serves most of them, and the end is declared once every page is crawled."""
    nodes = [redis.Redis(port=port) for port in cluster.ports]
    before = [_script_calls(node) for node in nodes]
    crawl_hosts(tmp_path, {"REDIS_URL": cluster.urls[0], "FLEET_KEY_PREFIX": key_prefix,
                           "FLEET_DATA_DIR": str(tmp_path / ".fleet"), "CONCURRENT_REQUESTS": "8"},
                hosts=16, pages=10)
    keys = CrawlKeys(key_prefix, "links")
    per_node = [sum(1 for _ in node.scan_iter(match=keys.partitions_pattern, count=1000))
                for node in nodes]
    assert all(n > 0 for n in per_node), per_node  # every master holds partitions
    calls = [_script_calls(node) - b for node, b in zip(nodes, before)]
    assert max(calls) < 0.6 * sum(calls), calls  # no master serves most of the crawl
    view = RedisFrontier(connect(cluster.urls[1]), keys, "test", url=cluster.urls[1])
    status = view.status()
    assert status["partitions"] == 16 and status["state"]["status"] == "done"
    assert status["stats"]["acked"] == status["stats"]["enqueued"] == 16 * 10 + 1
    assert status["stats"]["pending"] == status["stats"]["leased"] == 0


def _script_calls(node) -> int:
    stats = node.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


HOSTS = [f"host{n}.example" for n in range(64)]


def _three_masters_and_a_spare(directory: Path) -> tuple[LocalCluster, int]:
    """A running 3-master cluster, and a free port for a 4th master to join."""
    nodes = LocalCluster(directory, cluster_ports(4)[:3])
    spare = cluster_ports(1)[0]
    nodes.start()
    return nodes, spare


def _seeded(nodes: LocalCluster, keys: CrawlKeys, worker: str, count: int) -> RedisFrontier:
    """A new crawl of ``count`` start requests (b"r<n>") over 64 hosts, fed by ``worker``."""
    frontier = RedisFrontier(connect(nodes.urls[0]), keys, worker, url=nodes.urls[0])
    frontier.open(fresh=True)
    frontier.set_seeding(True)
    frontier.flush([(fp(n), HOSTS[n % 64], 0, b"r%d" % n) for n in range(count)])
    frontier.set_seeding(False)
    return frontier


def _holds_partitions(port: int, keys: CrawlKeys) -> bool:
    """Whether the master on ``port`` holds keys of the crawl's partitions."""
    return any(redis.Redis(port=port).scan_iter(match=keys.partitions_pattern, count=1000))


def test_a_crawl_stopped_resharded_onto_a_new_master_and_resumed_loses_nothing(
        tmp_path: Path, key_prefix):
    """Scaling out between runs, as the README says: a worker leaves mid-crawl (leases
    handed back), a 4th master joins and takes a share of the slots with their keys
    (`redis-cli --cluster rebalance`), and a worker of the next run, through a new
    client, finishes the crawl: every request once, and the new master holds partitions."""
    nodes, spare = _three_masters_and_a_spare(tmp_path / "scaled")
    try:
        keys = CrawlKeys(key_prefix, "spider")
        first = _seeded(nodes, keys, "w1", 400)
        done = first.flush(pop=50).popped
        first.flush(acks=[lease for lease, _ in done])  # crawled
        got = [blob for _, blob in done]
        in_hand = first.flush(pop=30).popped  # leased when the run stops
        assert len(done) == 50 and len(in_hand) == 30
        assert first.leave() == 30  # handed back to their queues
        first.client.close()

        nodes.add_master(spare)
        assert _holds_partitions(spare, keys)

        second = RedisFrontier(connect(nodes.urls[-1]), keys, "w2", url=nodes.urls[-1])
        assert second.open(fresh=False) == "resumed"
        for _ in range(200):
            popped = second.flush(pop=50).popped
            if not popped and second.check_finished().finished:
                break
            got += [blob for _, blob in popped]
            second.flush(acks=[lease for lease, _ in popped])
        assert sorted(got) == sorted(b"r%d" % n for n in range(400))
        assert second.status()["state"]["status"] == "done"
    finally:
        nodes.stop()


def test_a_crawl_resharded_onto_a_new_master_while_it_runs_loses_nothing(tmp_path: Path, key_prefix):
    """Every key a script touches is in KEYS, so Redis itself guards a slot while it
    migrates: a script whose keys are split between two masters is refused (TRYAGAIN, ASK)
    and retried. Two workers lease, crawl (a child pushed for each start request) and
    acknowledge, slowly, while a 4th master joins and takes a share of the slots with
    their keys; then they finish: every request leased and acknowledged once."""
    nodes, spare = _three_masters_and_a_spare(tmp_path / "live")
    try:
        keys = CrawlKeys(key_prefix, "spider")
        starts = 600
        seeder = _seeded(nodes, keys, "seed", starts)
        got: list[bytes] = []
        moved, errors = threading.Event(), []

        def work(name: str, url: str) -> None:
            try:
                f = RedisFrontier(connect(url), keys, name, url=url, retry_timeout=60)
                f.open(fresh=False)
                acks: list[str] = []
                children: list[tuple[bytes, str, int, bytes]] = []
                while True:
                    result = f.flush(children, acks=acks, pop=2)
                    blobs = [blob for _, blob in result.popped]
                    got.extend(blobs)
                    acks = [lease for lease, _ in result.popped]
                    children = [(fp(10_000 + int(b[1:])), HOSTS[int(b[1:]) % 64], 0, b"c" + b[1:])
                                for b in blobs if b.startswith(b"r")]
                    if not blobs and not children:
                        if f.check_finished().finished:
                            return
                    if not moved.is_set():
                        time.sleep(0.05)  # slowly, so that the crawl outlasts the move
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(f"w{i}", nodes.urls[i]), daemon=True)
                   for i in (1, 2)]
        for thread in workers:
            thread.start()
        wait_for(lambda: len(got) >= 20, what="the crawl under way")
        nodes.add_master(spare)
        during = len(got)
        moved.set()
        for thread in workers:
            thread.join(WAIT)
        assert not errors, errors
        assert during < 2 * starts  # the move happened while the crawl ran
        assert sorted(got) == sorted([b"r%d" % n for n in range(starts)] +
                                     [b"c%d" % n for n in range(starts)])
        assert _holds_partitions(spare, keys)
        assert seeder.status()["state"]["status"] == "done"
    finally:
        nodes.stop()


def test_wait_replicas_asks_each_master_that_took_pushes(cluster, key_prefix):
    """FLEET_WAIT_REPLICAS on a cluster: WAIT goes to the master of each partition pushed
    to (these masters have no replica: the acks never go out, and the error says why)."""
    from scrapy_fleet.redis_server import RedisUnavailable

    keys = CrawlKeys(key_prefix, "spider")
    frontier = RedisFrontier(connect(cluster.urls[0]), keys, "w1", url=cluster.urls[0],
                             wait_replicas=1, retry_timeout=0.5)
    frontier.open(fresh=True)
    frontier.set_seeding(True)
    frontier.flush([(fp(n), f"host{n}.example", 0, b"r%d" % n) for n in range(40)])
    (lease, _), = frontier.flush(pop=1).popped
    with pytest.raises(RedisUnavailable, match=r"0 of the 1 replicas .* of 127\.0\.0\.1:\d+"):
        frontier.flush([(fp(99), "host99.example", 0, b"child")], acks=[lease])
    assert frontier.status()["stats"]["leased"] == 1  # its ack waits for the child's copy


def test_a_master_failing_over_to_its_replica_mid_crawl_loses_nothing(tmp_path: Path, key_prefix):
    """3 masters with a replica each, the crawl split over them, FLEET_WAIT_REPLICAS = 1.
    The master of the crawl's control keys is SIGKILLed mid-crawl: its replica takes over
    (cluster-node-timeout 2 s), and the workers wait for a replica again until the killed
    node comes back as the new master's replica (as an operator restarts it). Every page
    of every host is crawled, and the crawl ends on its own."""
    nodes = LocalCluster(tmp_path / "ha", cluster_ports(6), replicas=1, node_timeout_ms=2000)
    nodes.start()
    hosts, pages = 12, 30
    site = PoliteSite([Host(pages=pages, latency=0.01) for _ in range(hosts)]).start()
    try:
        keys = CrawlKeys(key_prefix, "links")
        victim = nodes.owner(keys.state)
        url = nodes.url_besides(victim)
        settings = {"REDIS_URL": url, "FLEET_KEY_PREFIX": key_prefix,
                    "FLEET_DATA_DIR": str(tmp_path / ".fleet"), "CONCURRENT_REQUESTS": "8",
                    "FLEET_WAIT_REPLICAS": "1", "FLEET_LEASE_TIMEOUT": "3",
                    "FLEET_REDIS_RETRY_TIMEOUT": "60"}
        fleet = Fleet(make_project(tmp_path), ["links", "-n", "2",
                                               *scrapy_args(settings, {"start_url": site.hub_url})])
        crawled = lambda: sum(len(site.pages(site.host(i))) for i in range(hosts))  # noqa: E731
        wait_for(lambda: crawled() >= 80, what="the crawl under way")
        nodes.kill(victim)
        wait_for(lambda: nodes.owner(keys.state) != victim, timeout=30,
                 what="the replica taking over")
        nodes.start_node(victim)  # back, as the new master's replica
        assert fleet.wait() == 0, fleet.text[-3000:]
        assert "finished" in fleet.text
    finally:
        site.stop()
        nodes.stop()
    for i in range(hosts):  # every page (a few twice: leases that ran out meanwhile)
        assert set(site.pages(site.host(i))) == {f"/p/{k}" for k in range(pages)}, i


def test_rediss_to_a_cluster_runs_a_split_crawl(tmp_path: Path, key_prefix):
    """`rediss://` naming one node of a cluster whose nodes speak TLS (a TLS proxy in
    front of each, announced as the node's port): the cluster client follows the slot map
    over TLS, and a `scrapy fleet -n 2` crawl over 12 hosts, split over the 3 masters,
    fetches every page once."""
    ports = cluster_ports(3)
    proxies: list[TlsProxy] = []
    for port in ports:
        proxies.append(TlsProxy(tmp_path, port, proxies[0].certificates if proxies else None))
    nodes = LocalCluster(tmp_path / "tls", ports,
                         announce={port: proxy.port for port, proxy in zip(ports, proxies)})
    try:
        nodes.start()
        url = proxies[1].url(f"ssl_ca_certs={proxies[0].ca}")
        client = connect(url)
        assert isinstance(client, RedisCluster)
        assert {node.port for node in client.get_primaries()} == {p.port for p in proxies}
        crawl_hosts(tmp_path, {"REDIS_URL": url, "FLEET_KEY_PREFIX": key_prefix,
                               "FLEET_DATA_DIR": str(tmp_path / ".fleet"),
                               "CONCURRENT_REQUESTS": "8"}, hosts=12, pages=8)
        keys = CrawlKeys(key_prefix, "links")
        held = [sum(1 for _ in redis.Redis(port=port).scan_iter(match=keys.partitions_pattern))
                for port in ports]
        assert all(held), held  # every master holds partitions of the crawl
        status = RedisFrontier(client, keys, "test", url=url).status()
        assert status["state"]["status"] == "done" and status["partitions"] == 16
    finally:
        nodes.stop()
        for proxy in proxies:
            proxy.stop()

