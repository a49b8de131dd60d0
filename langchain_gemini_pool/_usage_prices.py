"""Prices per million tokens, and the cost of one response.

The table is an *example* copied from Google's pricing page
(https://ai.google.dev/gemini-api/docs/pricing, paid tier, text/image/video input, USD); prices
move, so pass your own ``prices=`` wherever a price table is taken. A model the table does not
know is never guessed: its cost is ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_PRICES", "ModelPrice", "estimate_cost", "match_price", "normalize_model"]


@dataclass(frozen=True)
class ModelPrice:
    """What one model costs, in US dollars per million tokens.

    Thinking tokens are billed as output (Gemini bills them so). Cached prompt tokens are billed
    at ``cached_input``; when that is ``None`` (no context-caching price) they are billed at the
    full ``input`` price, an upper bound.
    """

    input: float
    """Price of one million prompt tokens (not read from the context cache)."""
    output: float
    """Price of one million output tokens, thinking tokens included."""
    cached_input: float | None = None
    """Price of one million prompt tokens read from the context cache, if the model has one."""
    long_context: ModelPrice | None = None
    """Prices that apply instead when the prompt is longer than ``long_context_threshold``."""
    long_context_threshold: int = 200_000
    """Prompt length (tokens) above which ``long_context`` prices apply."""

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input"):
            value = getattr(self, name)
            if value is None and name == "cached_input":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"ModelPrice.{name} must be a non-negative number of US dollars per "
                    f"million tokens, got {value!r}."
                )


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gemini-2.5-pro": ModelPrice(1.25, 10.00, 0.125, long_context=ModelPrice(2.50, 15.00, 0.25)),
    "gemini-2.5-flash": ModelPrice(0.30, 2.50, 0.03),
    "gemini-2.5-flash-lite": ModelPrice(0.10, 0.40, 0.01),
    "gemini-2.0-flash": ModelPrice(0.10, 0.40, 0.025),
    "gemini-2.0-flash-lite": ModelPrice(0.075, 0.30, None),
}
"""Example prices (USD per million tokens) from Google's pricing page, paid tier, text input.

Check https://ai.google.dev/gemini-api/docs/pricing before relying on them, and pass your own
table (``prices=``) for other models, audio input, or when the prices change. Free-tier use is
not billed at all; these figures say what the same traffic would cost on the paid tier.
"""

# A version suffix: "-001", "-latest", "-preview-05-20", "-exp-0827", "-preview-09-2025"…
_VERSION_SUFFIX = re.compile(r"^(-(\d+|latest|preview|exp|experimental))+$")


def normalize_model(model: str) -> str:
    """A model name without ``models/`` (or any ``…/``) prefix, lower-cased and stripped."""
    return model.strip().lower().rsplit("/", 1)[-1]


def match_price(model: str | None, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price entry for ``model``, or ``None`` when the table does not know it.

    Matches the exact name first (after :func:`normalize_model`), then the longest table entry
    of which ``model`` is that name plus a version suffix (``-001``, ``-latest``,
    ``-preview-05-20``, ``-exp``…). A different model that merely shares a prefix
    (``gemini-2.5-flash-lite`` vs ``gemini-2.5-flash``) never matches.
    """
    if not model:
        return None
    name = normalize_model(model)
    table = {normalize_model(k): v for k, v in prices.items()}
    if name in table:
        return table[name]
    best: str | None = None
    for base in table:
        if (
            name.startswith(base)
            and _VERSION_SUFFIX.match(name[len(base) :])
            and (best is None or len(base) > len(best))
        ):
            best = base
    return table[best] if best is not None else None


def _int(mapping: Mapping[str, Any] | None, key: str) -> int:
    value = mapping.get(key) if mapping else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def estimate_cost(
    model: str | None,
    usage_metadata: Mapping[str, Any] | None,
    prices: Mapping[str, ModelPrice] | None = None,
) -> float | None:
    """The cost in US dollars of one response, from LangChain ``usage_metadata``.

    ``input_tokens`` includes the cached prompt tokens (``input_token_details.cache_read``), which
    are billed at the cached price; ``output_tokens`` includes thinking tokens, billed as output.

    Args:
        model: The model name (``gemini-2.5-flash``, ``models/gemini-2.5-flash-001``…).
        usage_metadata: An ``AIMessage.usage_metadata`` dict.
        prices: A price table; defaults to :data:`DEFAULT_PRICES`.

    Returns:
        The cost, or ``None`` when the model is not in the table or there is no usage to price.
    """
    price = match_price(model, DEFAULT_PRICES if prices is None else prices)
    if price is None or not usage_metadata:
        return None
    input_tokens = _int(usage_metadata, "input_tokens")
    output_tokens = _int(usage_metadata, "output_tokens")
    details = usage_metadata.get("input_token_details")
    cache_read = min(
        _int(details if isinstance(details, Mapping) else None, "cache_read"), input_tokens
    )
    if price.long_context is not None and input_tokens > price.long_context_threshold:
        price = price.long_context
    cached_rate = price.input if price.cached_input is None else price.cached_input
    dollars = (
        (input_tokens - cache_read) * price.input
        + cache_read * cached_rate
        + output_tokens * price.output
    )
    return dollars / 1_000_000
