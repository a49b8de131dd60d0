"""Fixtures for the shared-state backends: a real redis-server, a real 3-node Redis
Cluster, real SQLite files.

Without ``redis-server`` on the PATH the Redis tests skip with a reason, except under
``CI=true``, where a missing server fails them (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from langchain_gemini_pool import DiskState, InMemoryState, ManualClock, RedisState
from langchain_gemini_pool._state_types import StateBackend

T0 = 1_772_445_610.0  # 2026-03-02 10:00:10 UTC: a Monday, 02:00 Pacific


@pytest.fixture(autouse=True)
def no_state_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``GEMINI_POOL_STATE`` of the machine running the tests picks no test's backend."""
    monkeypatch.delenv("GEMINI_POOL_STATE", raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """One redis-server process on a loopback port, with its own directory."""

    port: int
    directory: str
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", self.directory, *self.args]
        self.proc = subprocess.Popen(  # noqa: S603 (a fixed argv, no shell)
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but redis-server is not installed (.ci/run installs it).")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start private redis-servers (stopped at the end of the test)."""
    _need_redis_server()
    started: list[RedisServer] = []
    dirs: list[str] = []

    def start(*args: str) -> RedisServer:
        directory = tempfile.mkdtemp(prefix="gp-redis-")
        dirs.append(directory)
        server = RedisServer(_free_port(), directory, list(args)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One redis-server for the contract suite (flushed before each test)."""
    _need_redis_server()
    directory = tempfile.mkdtemp(prefix="gp-redis-")
    server = RedisServer(_free_port(), directory).start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@dataclass
class RedisClusterNodes:
    """Three masters (``--cluster-enabled yes``) joined by ``redis-cli --cluster create``."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def flush(self) -> None:
        for node in self.nodes:
            node.client().flushall()

    def wait_ok(self) -> None:
        deadline = time.monotonic() + 10
        while any(n.client().cluster("info").get("cluster_state") != "ok" for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def keys(self) -> dict[int, list[str]]:
        """Every key, by the port of the node that holds it."""
        out = {}
        for node in self.nodes:
            out[node.port] = [k.decode() for k in node.client().scan_iter(count=1000)]
        return out


def start_cluster(directory: str) -> RedisClusterNodes:
    nodes: list[RedisServer] = []
    try:
        for i in range(3):
            own = os.path.join(directory, str(i))
            os.mkdir(own)
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-port", str(_free_port())]  # not port + 10000: maybe taken
            nodes.append(RedisServer(_free_port(), own, args))
            nodes[-1].start()
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not installed (it comes with redis-server)")
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(  # noqa: S603 (a fixed argv, no shell)
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],  # noqa: S607
            check=True,
            capture_output=True,
            timeout=30,
        )
        RedisClusterNodes(nodes).wait_ok()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisClusterNodes(nodes)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A real 3-master Redis Cluster on loopback ports (flushed by the tests that need it)."""
    _need_redis_server()
    directory = tempfile.mkdtemp(prefix="gp-redis-cluster-")
    cluster = start_cluster(directory)
    yield cluster
    for node in cluster.nodes:
        node.stop()
    shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Harness:
    """One backend under test, a way to make another instance on the same storage, and
    a way to let time pass (a moved clock; real time on Redis, which reads its own)."""

    kind: str
    state: StateBackend
    twin: Callable[[], StateBackend]
    advance: Callable[[float], None]
    redis: RedisServer | None = None
    directory: Path | None = None


BACKENDS = ["memory", "disk", "redis", "redis-cluster"]


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    kind = request.param
    if kind == "memory":
        clock = ManualClock(T0)
        state = InMemoryState(clock)
        yield Harness(kind, state, lambda: state, clock.advance)
    elif kind == "disk":
        clock = ManualClock(T0)
        disk = DiskState(tmp_path / "state", clock)
        twins: list[DiskState] = [disk]

        def twin() -> StateBackend:
            twins.append(DiskState(tmp_path / "state", clock))
            return twins[-1]

        yield Harness(kind, disk, twin, clock.advance, directory=tmp_path / "state")
        for made in twins:
            made.close()
    else:
        server: RedisServer | None = None
        if kind == "redis":
            server = request.getfixturevalue("shared_redis")
            server.client().flushall()
            url = server.url
        else:
            cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
            cluster.flush()
            url = cluster.url
        made_r: list[RedisState] = [RedisState(url, prefix="t")]
        assert made_r[0].cluster is (kind == "redis-cluster")

        def twin_r() -> StateBackend:
            made_r.append(RedisState(url, prefix="t"))
            return made_r[-1]

        yield Harness(kind, made_r[0], twin_r, time.sleep, redis=server)
        for r in made_r:
            r.close()
