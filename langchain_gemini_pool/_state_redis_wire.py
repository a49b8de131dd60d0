"""The sync hot path of ``RedisState``: its scripts over one plain socket per thread.

redis-py spends about 70 µs of Python per command reading a reply (its parser, pool checkout,
health checks), four times a loopback round trip. Here each thread keeps one connection of
its own (opened by redis-py, so URLs, TLS, passwords and ``db`` work as everywhere else;
RESP2), packs ``EVALSHA`` itself and reads the small replies of the scripts itself. Every
command waits for its reply (a plain settle is not waited for by the caller: a thread of
the process writes it, see ``_state_behind``).

What keeps a connection from ever serving a reply to the wrong command (a stray reply is how
a reader waits for an answer that already went elsewhere):

- Any failure or interruption between writing a command and reading all of its reply
  (timeout, reset, ``KeyboardInterrupt``, a bug) drops the connection.
- A wire call made *while this thread is inside one* (a generator closed by the garbage
  collector during a read, whose ``finally`` settles) does not touch the busy connection: it
  goes through redis-py's own pool and waits for its reply.
- A forked child never uses its parent's sockets; each thread uses only its own.
- Every read is bounded by the client's socket timeout.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
import weakref
from typing import Any


class _Error(bytes):
    """An error reply (``-ERR ...``), kept apart from data."""


class _Conn:
    """One connection and the reader's buffer."""

    def __init__(self, client: Any) -> None:
        pool = client.connection_pool
        options = {k: v for k, v in pool.connection_kwargs.items() if not k.startswith("maint_")}
        options["protocol"] = 2  # RESP2, whatever the URL asks: no push frames to skip
        self.rconn = pool.connection_class(**options)
        self.rconn.connect()  # handshake (AUTH, SELECT, TLS) by redis-py; then the socket is ours
        sock = getattr(self.rconn, "_sock", None)
        if sock is None:  # pragma: no cover - every redis-py from 3.0 to 8 keeps it there
            raise RuntimeError("redis-py keeps its socket elsewhere: RedisState needs an update.")
        self.sock: socket.socket = sock
        self.poll: Any = None
        if hasattr(select, "poll"):  # not on Windows
            self.poll = select.poll()
            self.poll.register(sock, select.POLLIN)
        self.pid = os.getpid()
        self.buf = b""
        self.pos = 0

    def stale(self) -> bool:
        """Readable between commands: closed by Redis (a restart, its client timeout)."""
        if self.poll is not None:
            return bool(self.poll.poll(0))
        return bool(select.select([self.sock], [], [], 0)[0])

    def close(self) -> None:
        if self.pid == os.getpid():
            self.rconn.disconnect()

    # --- reading RESP ---------------------------------------------------------------------

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("Redis closed the connection")
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = self.buf[self.pos : end]
                self.pos = end + 2
                return line
            self._fill()

    def reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) - self.pos < n + 2:
                self._fill()
            data = self.buf[self.pos : self.pos + n]
            self.pos += n + 2
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            return _Error(rest)
        raise ConnectionError(f"Unexpected reply from Redis: {line[:20]!r}")


class Wire:
    """``EVALSHA`` of ``scripts`` over per-thread connections made like ``client``'s.

    Args:
        client: A ``redis.Redis``: its pool gives the connection options, and it runs the
            rare command made while this thread's connection is busy.
        scripts: Script name -> Lua source.
    """

    def __init__(self, client: Any, scripts: dict[str, str]) -> None:
        self._client = client
        self._sources = scripts
        self._shas = {n: hashlib.sha1(s.encode()).hexdigest() for n, s in scripts.items()}  # noqa: S324 (Redis names scripts by SHA-1)
        self._scripts = {n: client.register_script(s) for n, s in scripts.items()}
        self._local = threading.local()
        self._all: weakref.WeakSet[_Conn] = weakref.WeakSet()
        self._lock = threading.RLock()  # a finalizer may settle while this thread holds it

    @classmethod
    def of(cls, client: Any, scripts: dict[str, str]) -> Wire | None:
        """A wire for ``client``, or None for a client it does not speak for (a cluster)."""
        import redis

        return cls(client, scripts) if type(client) is redis.Redis else None

    def call(self, name: str, argv: list[Any]) -> Any:
        """Run script ``name`` and return its reply."""
        loc = self._local
        if getattr(loc, "busy", False):
            return self._aside(name, argv)
        loc.busy = True
        try:
            conn = self._ready()
            conn.sock.sendall(pack(b"EVALSHA", self._shas[name], 0, *argv))
            got = conn.reply()
            return self._on_error(conn, got, name, argv) if isinstance(got, _Error) else got
        except _ScriptError as exc:  # answered: the connection is still in step
            raise _as_redis_error(exc) from None
        except BaseException as exc:
            self._drop()
            raise _as_redis_error(exc) from None
        finally:
            loc.busy = False

    def close(self) -> None:
        """Disconnect every thread's connection (each reconnects at its next command)."""
        with self._lock:
            conns = list(self._all)
            self._all = weakref.WeakSet()
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # --- inside ---------------------------------------------------------------------------

    def _ready(self) -> _Conn:
        """This thread's connection, fresh if Redis closed it."""
        conn = self._conn()
        if conn.stale():  # as redis-py's pool does at checkout: a reconnect, not an outage
            self._drop()
            conn = self._conn()
        return conn

    def _conn(self) -> _Conn:
        loc = self._local
        conn: _Conn | None = getattr(loc, "conn", None)
        if conn is None or conn.pid != os.getpid():  # first use, or a forked child
            loc.conn = None  # never the parent's socket, even if connecting fails
            conn = _Conn(self._client)
            loc.conn = conn
            with self._lock:
                self._all.add(conn)
        return conn

    def _drop(self) -> None:
        """Forget this thread's connection."""
        conn: _Conn | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _on_error(self, conn: _Conn, got: _Error, name: str, argv: list[Any]) -> Any:
        if got.startswith(b"NOSCRIPT"):
            got = self._load_and_run(conn, name, argv)
            if not isinstance(got, _Error):
                return got
        raise _ScriptError(got.decode(errors="replace"))

    def _load_and_run(self, conn: _Conn, name: str, argv: list[Any]) -> Any:
        conn.sock.sendall(pack(b"SCRIPT", b"LOAD", self._sources[name]))
        loaded = conn.reply()
        if isinstance(loaded, _Error):
            raise _ScriptError(loaded.decode(errors="replace"))
        conn.sock.sendall(pack(b"EVALSHA", self._shas[name], 0, *argv))
        return conn.reply()

    def _aside(self, name: str, argv: list[Any]) -> Any:
        """A command made while this thread is inside one: redis-py's pool, waited for."""
        return self._scripts[name](args=argv)


def _as_redis_error(exc: BaseException) -> BaseException:
    """What the caller's outage policy understands: redis-py's errors."""
    from redis import exceptions

    err: BaseException = exc
    if isinstance(exc, _ScriptError):  # answered: the connection is still in step
        err = exceptions.ResponseError(str(exc))
    elif isinstance(exc, TimeoutError | socket.timeout):
        err = exceptions.TimeoutError(f"Timeout talking to Redis ({type(exc).__name__})")
    elif isinstance(exc, OSError | ConnectionError | ValueError | IndexError):
        err = exceptions.ConnectionError(f"Lost the connection to Redis ({type(exc).__name__})")
    return err


class _ScriptError(Exception):
    """Redis answered with an error: the connection is still in step."""


_BULK: dict[str, bytes] = {}
"""Packed text arguments (key names, fingerprints, limits repeat call after call)."""


def pack(*args: Any) -> bytes:
    """One RESP command from ``bytes``/``str``/``int``/``float`` arguments."""
    parts = [b"*%d\r\n" % len(args)]
    add, bulk = parts.append, _BULK
    for arg in args:
        kind = type(arg)
        if kind is str:
            chunk = bulk.get(arg)
            if chunk is None:
                data = arg.encode()
                chunk = b"$%d\r\n%s\r\n" % (len(data), data)
                if len(bulk) >= 4096:  # reservation ids are new each call: stay bounded
                    bulk.clear()
                bulk[arg] = chunk
            add(chunk)
            continue
        if kind is bytes:
            data = arg
        elif kind is int or kind is float:
            data = repr(arg).encode()
        elif isinstance(arg, str):
            data = str(arg).encode()
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"A Redis argument must be str, int, float or bytes, not {arg!r}.")
        add(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)
