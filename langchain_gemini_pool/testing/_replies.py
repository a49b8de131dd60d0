"""Deterministic replies and their exact token counts.

Token rule (the pool estimates with the same one):

* ``count_tokens(text) = ceil(len(text) / 4)`` over Python characters; ``""`` is 0 tokens.
* ``promptTokenCount`` is the sum of ``count_tokens`` over: every ``text`` part of
  ``systemInstruction`` and of ``contents``; the compact JSON (``sort_keys``, no spaces,
  non-ASCII kept) of every ``functionCall`` and ``functionResponse`` part's value; the compact
  JSON of every function declaration in ``tools``; plus 258 per ``inlineData``/``fileData`` part.
* ``candidatesTokenCount`` is ``count_tokens`` of the reply text (per candidate, summed over
  ``candidateCount``), or of the compact JSON of a ``functionCall`` part's value.
* ``thoughtsTokenCount`` (only when ``generationConfig.thinkingConfig`` turns thinking on:
  a non-zero ``thinkingBudget``, no budget, or a ``thinkingLevel``) is 24, or the budget if
  smaller. ``totalTokenCount`` is prompt + candidates + thoughts.

Replies: "Echo: " and the first 12 words of the last user text; a ``functionCall`` when the
request asks for one (see :func:`wants_tool`); schema-valid JSON for ``application/json``
responses; after a ``functionResponse``, a sentence quoting it. ``maxOutputTokens`` cuts the
text to ``4 * maxOutputTokens`` characters (``finishReason: MAX_TOKENS``) and ``stopSequences``
cut it before the first stop sequence.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_gemini_pool.testing._schema import ValueMaker, normalize

ReplyValue = str | dict[str, Any]
"""A scripted reply: text, a part (``{"text"}``/``{"functionCall"}``), or ``{"name", "args"}``."""
ReplyFn = Callable[[dict[str, Any]], ReplyValue]
"""Makes a reply from the request JSON."""

MEDIA_TOKENS = 258
THOUGHT_TOKENS = 24
_THOUGHT_TEXT = "Thinking about the request."
_WORD = re.compile(r"[a-z0-9]+")


def count_tokens(text: str) -> int:
    """The emulator's token count of ``text``: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / 4)


def compact(value: Any) -> str:
    """The compact JSON the token rule counts."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return 0
    if isinstance(part.get("text"), str):
        return count_tokens(part["text"])
    for key in ("functionCall", "functionResponse"):
        if key in part:
            return count_tokens(compact(part[key]))
    if "inlineData" in part or "fileData" in part:
        return MEDIA_TOKENS
    return 0


def _parts(content: Any) -> list[Any]:
    if isinstance(content, dict) and isinstance(content.get("parts"), list):
        return list(content["parts"])
    return []


def prompt_tokens(body: dict[str, Any]) -> int:
    """``promptTokenCount`` of a generate/countTokens body, by the rule in this module."""
    total = sum(_part_tokens(p) for p in _parts(body.get("systemInstruction")))
    for content in body.get("contents") or []:
        total += sum(_part_tokens(p) for p in _parts(content))
    for decl in declarations(body):
        total += count_tokens(compact(decl))
    return total


def declarations(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every function declaration in ``tools``."""
    out: list[dict[str, Any]] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            out += [d for d in tool.get("functionDeclarations") or [] if isinstance(d, dict)]
    return out


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last ``user`` content (parts joined by spaces)."""
    for content in reversed(body.get("contents") or []):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            texts = [p["text"] for p in _parts(content) if isinstance(p.get("text"), str)]
            if texts:
                return " ".join(texts)
    return ""


def _last_function_response(body: dict[str, Any]) -> dict[str, Any] | None:
    contents = body.get("contents") or []
    if contents and isinstance(contents[-1], dict):
        for part in _parts(contents[-1]):
            if isinstance(part, dict) and isinstance(part.get("functionResponse"), dict):
                return dict(part["functionResponse"])
    return None


def wants_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The declaration to call, or ``None`` for a text reply.

    A call is made when functions are declared, the last content is not a
    ``functionResponse``, the mode is not ``NONE``, and either ``allowedFunctionNames`` is set
    (its first declared name), the mode is ``ANY`` (the function the text names, else the
    first), or the last user text names a function: its full name, a word of its name of 4+
    letters, or the word "tool".
    """
    decls = declarations(body)
    if not decls or _last_function_response(body) is not None:
        return None
    config = ((body.get("toolConfig") or {}).get("functionCallingConfig")) or {}
    mode = str(config.get("mode", "AUTO")).upper()
    if mode == "NONE":
        return None
    allowed = config.get("allowedFunctionNames") or []
    for decl in decls:
        if decl.get("name") in allowed:
            return decl
    text = last_user_text(body).lower()
    words = set(_WORD.findall(text))
    for decl in decls:
        name = str(decl.get("name", "")).lower()
        if name and (name in text or any(len(w) >= 4 and w in words for w in name.split("_"))):
            return decl
    if mode in ("ANY", "VALIDATED") or "tool" in words or "tools" in words:
        return decls[0]
    return None


@dataclass
class Reply:
    """One reply, before it is put on the wire."""

    part: dict[str, Any]
    finish_reason: str
    prompt_tokens: int
    candidate_count: int
    thoughts_tokens: int
    include_thoughts: bool

    @property
    def text(self) -> str | None:
        value = self.part.get("text")
        return value if isinstance(value, str) else None

    def candidates_tokens(self, text: str | None = None) -> int:
        one = count_tokens(text) if text is not None else _part_tokens(self.part)
        return one * self.candidate_count

    def usage(self, text: str | None = None) -> dict[str, Any]:
        """``usageMetadata`` with ``text`` (default: the whole reply) as the output so far."""
        cand = self.candidates_tokens(text)
        usage: dict[str, Any] = {"promptTokenCount": self.prompt_tokens}
        usage["candidatesTokenCount"] = cand
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        usage["totalTokenCount"] = self.prompt_tokens + cand + self.thoughts_tokens
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.prompt_tokens}]
        return usage


def _thinking(config: dict[str, Any]) -> tuple[int, bool]:
    thinking = config.get("thinkingConfig")
    if not isinstance(thinking, dict):
        return 0, False
    budget = thinking.get("thinkingBudget")
    include = bool(thinking.get("includeThoughts"))
    if budget == 0 and "thinkingLevel" not in thinking:
        return 0, False
    if isinstance(budget, int) and budget > 0:
        return min(budget, THOUGHT_TOKENS), include
    return THOUGHT_TOKENS, include


def _default_text(body: dict[str, Any], config: dict[str, Any]) -> str:
    response = _last_function_response(body)
    if response is not None:
        said = compact(response.get("response", {}))
        return f"The tool {response.get('name', 'tool')} returned {said[:120]}."
    user = last_user_text(body)
    if str(config.get("responseMimeType", "")).lower() == "application/json":
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if schema:
            return json.dumps(ValueMaker(user).make(normalize(schema)), ensure_ascii=False)
        return json.dumps({"response": "Echo: " + " ".join(user.split()[:12])})
    words = user.split()[:12]
    return "Echo: " + " ".join(words) if words else "Hello! How can I help you today?"


def _as_part(value: ReplyValue) -> dict[str, Any]:
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, dict) and ("text" in value or "functionCall" in value):
        return dict(value)
    if isinstance(value, dict) and "name" in value:
        return {"functionCall": {"name": value["name"], "args": value.get("args", {})}}
    raise TypeError(
        "A reply must be text, a part ({'text': ...} or {'functionCall': ...}) or "
        f"{{'name': ..., 'args': {{...}}}}; got {value!r}."
    )


def make_reply(
    body: dict[str, Any], scripted: ReplyValue | None, reply_fn: ReplyFn | None
) -> Reply:
    """The reply to a generate request: scripted, else ``reply_fn``, else the default."""
    config = body.get("generationConfig") or {}
    if scripted is not None:
        part = _as_part(scripted)
    elif reply_fn is not None:
        part = _as_part(reply_fn(body))
    elif (decl := wants_tool(body)) is not None:
        schema = decl.get("parametersJsonSchema") or decl.get("parameters")
        args = ValueMaker(last_user_text(body)).make(normalize(schema)) if schema else {}
        part = {"functionCall": {"name": decl.get("name", ""), "args": args or {}}}
    else:
        part = {"text": _default_text(body, config)}
    finish = "STOP"
    if isinstance(part.get("text"), str):
        text = part["text"]
        for stop in config.get("stopSequences") or []:
            if stop and stop in text:
                text = text[: text.index(stop)]
        limit = config.get("maxOutputTokens")
        if isinstance(limit, int) and limit > 0 and count_tokens(text) > limit:
            text, finish = text[: 4 * limit], "MAX_TOKENS"
        part = {**part, "text": text}
    thoughts, include = _thinking(config)
    count = config.get("candidateCount")
    return Reply(
        part=part,
        finish_reason=finish,
        prompt_tokens=prompt_tokens(body),
        candidate_count=count if isinstance(count, int) and count > 1 else 1,
        thoughts_tokens=thoughts,
        include_thoughts=include,
    )


def _candidates(reply: Reply, parts: list[dict[str, Any]], last: bool) -> list[dict[str, Any]]:
    out = []
    for index in range(reply.candidate_count):
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if last:
            cand["finishReason"] = reply.finish_reason
        cand["index"] = index
        out.append(cand)
    return out


def _thought_parts(reply: Reply) -> list[dict[str, Any]]:
    return [{"text": _THOUGHT_TEXT, "thought": True}] if reply.include_thoughts else []


def response_body(reply: Reply, model: str, response_id: str) -> dict[str, Any]:
    """The ``generateContent`` response JSON."""
    return {
        "candidates": _candidates(reply, [*_thought_parts(reply), reply.part], last=True),
        "usageMetadata": reply.usage(),
        "modelVersion": model,
        "responseId": response_id,
    }


def split_text(text: str) -> list[str]:
    """The stream pieces of ``text``: at least 3 (if it has 3 characters), at most 40 chars."""
    if len(text) < 3:
        return [text]
    count = max(3, math.ceil(len(text) / 40))
    size = math.ceil(len(text) / count)
    return [text[i : i + size] for i in range(0, len(text), size)]


def stream_bodies(reply: Reply, model: str, response_id: str) -> list[dict[str, Any]]:
    """The ``streamGenerateContent`` chunks, with running-total ``usageMetadata``."""
    if reply.text is None:
        return [response_body(reply, model, response_id)]
    pieces = split_text(reply.text)
    chunks = []
    so_far = ""
    for i, piece in enumerate(pieces):
        so_far += piece
        last = i == len(pieces) - 1
        parts = [*(_thought_parts(reply) if i == 0 else []), {**reply.part, "text": piece}]
        chunks.append(
            {
                "candidates": _candidates(reply, parts, last=last),
                "usageMetadata": reply.usage(so_far),
                "modelVersion": model,
                "responseId": response_id,
            }
        )
    return chunks
