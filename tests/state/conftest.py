"""Fixtures for the shared-state backends: a real redis-server, real SQLite files.

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
class Harness:
    """One backend under test, a way to make another instance on the same storage, and
    a way to let time pass (a moved clock; real time on Redis, which reads its own)."""

    kind: str
    state: StateBackend
    twin: Callable[[], StateBackend]
    advance: Callable[[float], None]
    redis: RedisServer | None = None
    directory: Path | None = None


BACKENDS = ["memory", "disk", "redis"]


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
        server: RedisServer = request.getfixturevalue("shared_redis")
        server.client().flushall()
        made_r: list[RedisState] = [RedisState(server.url, prefix="t")]

        def twin_r() -> StateBackend:
            made_r.append(RedisState(server.url, prefix="t"))
            return made_r[-1]

        yield Harness(kind, made_r[0], twin_r, time.sleep, redis=server)
        for r in made_r:
            r.close()
