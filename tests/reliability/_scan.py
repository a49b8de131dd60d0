"""Finding key text: every 8-character window of a key, in text, bytes and object graphs.

A key counts as leaked if its full text or any 8 consecutive characters of it appear. The
masked form (``…`` plus the last four characters) is what may appear instead.
"""

from __future__ import annotations

import contextlib
import pickle
import types
from collections import deque
from collections.abc import Iterable
from typing import Any

WINDOW = 8

# Distinctive, obviously fake keys: no window of one occurs by chance in text the pool writes.
SCAN_KEYS = (
    "QZk7Rm2xVb9TqL4wNs8YcH3p-0001",
    "QZp5Ft8nWd2KjX6rMb4ZsG7v-0002",
    "QZh3Lc9yTr5BnV2qKx7PmD4w-0003",
    "QZw8Gs4kNf6HdR3tYb9LcX2m-0004",
)


def windows(key: str, size: int = WINDOW) -> list[str]:
    """The key itself and every ``size``-character window of it."""
    return [key] + [key[i : i + size] for i in range(max(0, len(key) - size + 1))]


def leaks_in_text(text: str, keys: Iterable[str]) -> list[str]:
    """The windows of ``keys`` found in ``text``."""
    return [w for key in keys for w in windows(key) if w in text]


def leaks_in_bytes(data: bytes, keys: Iterable[str]) -> list[str]:
    found = []
    for key in keys:
        for window in windows(key):
            if window.encode() in data or window.encode("utf-16-le") in data:
                found.append(window)
    return found


def assert_no_leak_in_text(text: str, keys: Iterable[str], what: str) -> None:
    leaked = leaks_in_text(text, keys)
    assert not leaked, f"{what}: key text {leaked[:3]} in {text[:2000]!r}"


_OPAQUE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    types.TracebackType,
)


def find_in_graph(root: object, keys: Iterable[str], limit: int = 100_000) -> list[str]:
    """Paths from ``root`` to a string or bytes holding key text: attributes, slots, items,
    exception args, ``__cause__`` and ``__context__`` (what pickles and error trackers see)."""
    keys = list(keys)
    hits: list[str] = []
    seen: set[int] = set()
    todo: deque[tuple[Any, str]] = deque([(root, "root")])
    visited = 0
    while todo and visited < limit:
        obj, path = todo.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        visited += 1
        if isinstance(obj, str):
            if leaks_in_text(obj, keys):
                hits.append(path)
            continue
        if isinstance(obj, (bytes, bytearray, memoryview)):
            if leaks_in_bytes(bytes(obj), keys):
                hits.append(path)
            continue
        if obj is None or isinstance(obj, (int, float, complex, *_OPAQUE)):
            continue
        if isinstance(obj, dict):
            for k, v in list(obj.items()):
                todo.append((k, f"{path}.<key>"))
                todo.append((v, f"{path}[{k!r}]"))
            continue
        if isinstance(obj, (list, tuple, set, frozenset, deque)):
            todo.extend((v, f"{path}[{i}]") for i, v in enumerate(list(obj)))
            continue
        if isinstance(obj, BaseException):
            todo.append((obj.args, f"{path}.args"))
            todo.append((obj.__cause__, f"{path}.__cause__"))
            todo.append((obj.__context__, f"{path}.__context__"))
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            todo.extend((v, f"{path}.{k}") for k, v in attrs.items())
        for cls in type(obj).__mro__:
            slots = cls.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                with contextlib.suppress(AttributeError):
                    todo.append((getattr(obj, name), f"{path}.{name}"))
        items = getattr(obj, "items", None)
        if callable(items) and not isinstance(obj, dict):
            try:
                for k, v in list(items()):
                    todo.append((k, f"{path}.<key>"))
                    todo.append((v, f"{path}[{k!r}]"))
            except Exception:  # noqa: S110 - not a mapping after all
                pass
    return hits


def chain_of(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    todo = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is seen for seen in out):
            continue
        out.append(item)
        todo.extend([item.__cause__, item.__context__])  # type: ignore[list-item]
    return out


def assert_exception_clean(exc: BaseException, keys: Iterable[str], what: str) -> bool:
    """No key text in the exception, its chain, its attributes or its pickle.

    Returns whether the exception could be pickled (an aiohttp response cannot be)."""
    keys = list(keys)
    for item in chain_of(exc):
        assert_no_leak_in_text(str(item), keys, f"{what}: str({type(item).__name__})")
        assert_no_leak_in_text(repr(item), keys, f"{what}: repr({type(item).__name__})")
    hits = find_in_graph(exc, keys)
    assert not hits, f"{what}: key text at {hits[:5]}"
    try:
        data = pickle.dumps(exc)
    except (TypeError, AttributeError, pickle.PicklingError):
        return False
    leaked = leaks_in_bytes(data, keys)
    assert not leaked, f"{what}: key text {leaked[:3]} in the pickle"
    return True
