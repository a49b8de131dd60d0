"""Prices at the edges the mutation run found open (``benchmarks/mutation.sh _usage_prices``)."""

from __future__ import annotations

from typing import Any

import pytest

from langchain_gemini_pool import ModelPrice, estimate_cost
from langchain_gemini_pool._usage_prices import normalize_model


def exactly(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((1.0, 1.0, -0.1), "cached_input"),
        (("1", 1.0), "input"),
        ((True, 1.0), "input"),
        ((1.0, -2), "output"),
    ],
)
def test_a_price_must_be_a_non_negative_number(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^ModelPrice\.{field} must be a non-negative number"):
        ModelPrice(*args)


def test_free_and_fractional_prices_are_fine() -> None:
    assert ModelPrice(0, 0, 0).input == 0
    assert ModelPrice(0.5, 0.25).cached_input is None


def test_any_resource_path_prefix_is_dropped() -> None:
    assert normalize_model(" publishers/google/models/Gemini-2.5-Flash ") == "gemini-2.5-flash"


def test_missing_or_odd_usage_fields_count_as_zero() -> None:
    one_million_in: dict[str, Any] = {"input_tokens": 1_000_000}
    assert estimate_cost("gemini-2.5-flash", one_million_in) == exactly(0.30)
    odd: dict[str, Any] = {
        "input_tokens": 1_000_000,
        "output_tokens": "12",
        "input_token_details": "junk",
    }
    assert estimate_cost("gemini-2.5-flash", odd) == exactly(0.30)
    assert estimate_cost("gemini-2.5-flash", {"output_tokens": 1_000_000}) == exactly(2.50)
