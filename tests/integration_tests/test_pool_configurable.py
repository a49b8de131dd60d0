"""LangChain rebuilds a model from its fields for ``configurable_fields`` and
``configurable_alternatives``: a rebuilt pool must keep every key (not only the first), and
keep the pool's books when its scheduling settings are the same."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.runnables import ConfigurableField

from langchain_gemini_pool import ChatGeminiPool, mask_key
from langchain_gemini_pool.testing import FakeGeminiServer

from .conftest import KEYS

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]
PROJECTS = {"alpha": KEYS[:1], "beta": KEYS[1:3]}


def test_a_configured_call_rotates_over_every_key_with_the_pools_books(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator()
    pool = make_pool(server, api_keys=PROJECTS)
    llm = pool.configurable_fields(temperature=ConfigurableField(id="temperature"))
    config: Any = {"configurable": {"temperature": 0.25}}
    served = [llm.invoke("hi", config=config).response_metadata["key_index"] for _ in range(3)]
    assert sorted(served) == [0, 1, 2]  # the rotation went on from call to call
    assert [r["key"] for r in server.received()] == [mask_key(k) for k in KEYS[:3]]
    assert all(r["body"]["generationConfig"]["temperature"] == 0.25 for r in server.received())
    assert [row["requests"] for row in pool.pool_status()] == [1, 1, 1]  # the pool's books
    assert [row["project"] for row in pool.pool_status()] == ["alpha", "beta", "beta"]


def test_a_configured_model_gets_every_key_and_its_own_books(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator()
    pool = make_pool(server, api_keys=PROJECTS)
    llm = pool.configurable_fields(model=ConfigurableField(id="model"))
    config: Any = {"configurable": {"model": "gemini-2.5-pro"}}
    answers = [llm.invoke("hi", config=config) for _ in range(3)]
    assert {a.response_metadata["model_name"] for a in answers} == {"gemini-2.5-pro"}
    assert {a.response_metadata["project"] for a in answers} == {"alpha", "beta"}
    assert [row["requests"] for row in pool.pool_status()] == [0, 0, 0]  # another model's


def test_the_key_set_shows_no_key_and_cannot_be_pickled(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator()
    pool = make_pool(server, api_keys=PROJECTS)
    assert repr(pool.api_keys) == "PoolKeySet({'alpha': 1, 'beta': 2})"
    assert all(k not in repr(pool.api_keys) + str(pool.model_dump()) for k in KEYS)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(pool.api_keys)
    pool.remove_key(0)
    assert dict(pool.api_keys) == {"beta": [pool._members.secret_of(1), pool._members.secret_of(2)]}
