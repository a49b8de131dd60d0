"""Cache entries as text: the key of a (prompt, ``llm_string``) pair, and the stored
generations, written with ``langchain_core.load.dumps`` and revived restricted to generation
and message classes (never unpickled).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core import messages
from langchain_core.load import dumps, load
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

_KEY_VERSION = b"gemini-pool-cache-v1\x00"

# What a cached value may revive into: generations and the messages they carry, nothing
# that could take a base_url or run logic when built.
_ALLOWED_OBJECTS: list[Any] = [
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    messages.AIMessage,
    messages.AIMessageChunk,
    messages.HumanMessage,
    messages.HumanMessageChunk,
    messages.SystemMessage,
    messages.SystemMessageChunk,
    messages.ToolMessage,
    messages.ToolMessageChunk,
]


def entry_key(prompt: str, llm_string: str) -> str:
    """The cache key of one (prompt, llm_string) pair: a sha256 hex digest.

    Length-prefixed so that no two different pairs hash the same input.
    """
    digest = hashlib.sha256(_KEY_VERSION)
    encoded_prompt = prompt.encode("utf-8", "surrogatepass")
    digest.update(b"%d\x00" % len(encoded_prompt))
    digest.update(encoded_prompt)
    digest.update(llm_string.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def dump_generations(generations: Sequence[Generation]) -> str:
    """The text stored for ``generations`` (read back by ``load_generations``)."""
    return dumps(list(generations))


def load_generations(text: str) -> list[Generation]:
    """Revive the generations stored by ``GeminiDiskCache``.

    Only generation and message classes may be revived; a field that was not
    serialisable when stored comes back as ``None``.

    Raises:
        ValueError: The text is not a stored list of generations.
    """
    revived = _revive(json.loads(text))
    if not isinstance(revived, list) or not all(isinstance(g, Generation) for g in revived):
        raise ValueError("entry is not a list of generations")
    return revived


def _revive_with_load(obj: Any) -> Any:
    return load(obj, allowed_objects=_ALLOWED_OBJECTS, ignore_unserializable_fields=True)


def _make_reviver() -> Callable[[Any], Any]:
    """``langchain_core.load.load`` with its allowlist computed once, not on every call.

    ``load`` builds a ``Reviver`` per call, and turning an explicit class list into class
    paths scans every serialisation mapping (about 20 µs per class): most of a lookup.
    This walks the JSON exactly as ``load`` does (escaped user dicts stay plain dicts)
    with one ``Reviver``. If a langchain-core release moves the helpers it needs, it falls
    back to ``load`` itself; a test checks both agree.
    """
    try:
        from langchain_core.load._validation import _is_escaped_dict, _unescape_value
        from langchain_core.load.load import Reviver, default_init_validator
    except ImportError:  # pragma: no cover - depends on the langchain-core release
        return _revive_with_load
    reviver = Reviver(
        _ALLOWED_OBJECTS,
        ignore_unserializable_fields=True,
        init_validator=default_init_validator,
    )

    def revive(obj: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError(f"entry nested more than {_MAX_DEPTH} levels deep")
        if isinstance(obj, dict):
            if _is_escaped_dict(obj):
                return _unescape_value(obj)
            return reviver({k: revive(v, depth + 1) for k, v in obj.items()})
        if isinstance(obj, list):
            return [revive(item, depth + 1) for item in obj]
        return obj

    return revive


_MAX_DEPTH = 200
_revive = _make_reviver()
