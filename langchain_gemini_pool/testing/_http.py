"""The socket side: a keep-alive HTTP/1.1 server that writes the emulator's answers.

Standard library only. Each connection gets a daemon thread; errors inside a handler become a
Google-shaped 500, never a traceback on the wire.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from langchain_gemini_pool.testing import _bodies as bodies

if TYPE_CHECKING:
    from langchain_gemini_pool.testing._server import FakeGeminiServer

_MAX_BODY = 64 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 2048
    emulator: FakeGeminiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a timeout, a cancelled stream) is normal traffic here;
        anything else still gets socketserver's report."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: requests carry keys in headers, and tests read stats, not logs."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        from langchain_gemini_pool.testing._server import JsonAnswer, ResetAnswer, StreamAnswer

        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._json(413, bodies.invalid_argument("Request payload size exceeds the limit.")[1])
            self.close_connection = True
            return
        raw = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.emulator._received.add(method, self.path, list(self.headers.items()), raw)
        try:
            answer = self.server.emulator.answer(method, self.path, headers, raw)
        except Exception as exc:  # never a traceback on the wire
            self._json(
                500, bodies.error(500, "INTERNAL", f"Emulator error: {type(exc).__name__}")[1]
            )
            return
        if answer.delay > 0:
            time.sleep(answer.delay)
        if isinstance(answer, ResetAnswer):
            self._reset()
        elif isinstance(answer, JsonAnswer):
            self._json(answer.status, answer.body)
        elif isinstance(answer, StreamAnswer):
            self._stream(answer.chunks, answer.error)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Vary", "Origin, X-Origin, Referer")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: list[dict[str, Any]], error: dict[str, Any] | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [*chunks, *([error] if error is not None else [])]
        for event in events:
            data = b"data: " + json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\r\n\r\n"
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _reset(self) -> None:
        """Close with RST and no response, like a dropped connection."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def make_http_server(emulator: FakeGeminiServer, host: str, port: int) -> _Server:
    """Bind a server for ``emulator`` on ``host:port`` (0 = any free port)."""
    server = _Server((host, port), _Handler)
    server.emulator = emulator
    return server
