"""What the emulator received, request by request: for tests that check settings reach the wire.

Each record is a plain dict:

- ``method``, ``path``, ``query`` (parsed, without any ``key``), ``body`` (the parsed JSON,
  or ``None``);
- ``headers``: every header line as sent, ``[name_lowercased, value]`` in order, so a header
  sent twice shows twice; API key values are masked (``mask_key``);
- ``key``: the masked key the request was sent with (header, else ``?key=``), or ``None``.

Only the most recent ``limit`` requests are kept, so a long soak does not grow memory.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from langchain_gemini_pool._keys import mask_key

_KEY_HEADER = "x-goog-api-key"


class Received:
    """A bounded, thread-safe log of received requests, key text masked.

    ``add`` only masks the key and keeps the raw bytes (it runs on every request the emulator
    serves, benchmarks included); records are parsed when read.
    """

    def __init__(self, limit: int = 1000) -> None:
        self._log: deque[tuple[str, str, list[tuple[str, str]], bytes]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, method: str, target: str, headers: list[tuple[str, str]], raw: bytes) -> None:
        masked = [
            (name, mask_key(value) if name.lower() == _KEY_HEADER else value)
            for name, value in headers
        ]
        url = urlsplit(target)
        if "key=" in url.query:  # never keep a key given in the query string
            query = [(n, mask_key(v) if n == "key" else v) for n, v in parse_qsl(url.query)]
            target = url._replace(query=urlencode(query)).geturl()
        with self._lock:
            self._log.append((method, target, masked, raw))

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._log)
        return [_record(*entry) for entry in entries]

    def clear(self) -> None:
        with self._lock:
            self._log.clear()


def _record(method: str, target: str, headers: list[tuple[str, str]], raw: bytes) -> dict[str, Any]:
    url = urlsplit(target)
    query = parse_qs(url.query)
    lines = [[name.lower(), value] for name, value in headers]
    key = next((value for name, value in lines if name == _KEY_HEADER), None)
    if key is None:
        key = (query.get("key") or [""])[0] or None
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return {
        "method": method,
        "path": url.path,
        "query": {name: values for name, values in query.items() if name != "key"},
        "headers": lines,
        "body": body,
        "key": key,
    }
