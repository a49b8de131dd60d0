"""ChatGeminiPool inside LangChain: tools, structured output, LCEL, fallbacks, batch, agents."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from pydantic import BaseModel

from langchain_gemini_pool import ChatGeminiPool
from langchain_gemini_pool.testing import FakeGeminiServer, Faults

from .conftest import KEYS

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"It is sunny in {city}."


class Person(BaseModel):
    name: str
    age: int


def test_tool_calls_fail_over_like_any_request(emulator: Emulator, make_pool: MakePool) -> None:
    server = emulator(bad_keys={KEYS[0]: "leaked"})
    pool = make_pool(server)
    bound = pool.bind_tools([get_weather], tool_choice="any")
    message = bound.invoke("What is the weather in 'Paris'?")
    assert isinstance(message, AIMessage)
    assert message.tool_calls[0]["name"] == "get_weather"
    assert isinstance(message.tool_calls[0]["args"]["city"], str)
    assert message.response_metadata["key_index"] == 1


def test_structured_output(emulator: Emulator, make_pool: MakePool) -> None:
    pool = make_pool(emulator())
    person = pool.with_structured_output(Person).invoke("Make up a person called 'Ada'.")
    assert isinstance(person, Person)
    assert isinstance(person.age, int)


def test_lcel_chain_streams_through_the_pool(emulator: Emulator, make_pool: MakePool) -> None:
    pool = make_pool(emulator())
    chain = ChatPromptTemplate.from_template("Say {word}") | pool | StrOutputParser()
    assert chain.invoke({"word": "hello"}) == pool.invoke("Say hello").content
    assert "".join(chain.stream({"word": "again"})) == pool.invoke("Say again").content


def test_with_fallbacks_takes_over_when_every_key_is_invalid(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator(bad_keys=dict.fromkeys(KEYS[:3], "invalid"))
    pool = make_pool(server)
    backup = RunnableLambda(lambda _: AIMessage(content="from the fallback"))
    assert pool.with_fallbacks([backup]).invoke("hi").content == "from the fallback"


def test_batch_with_max_concurrency_spreads_and_survives_faults(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator(faults=Faults(unavailable_rate=0.1, seed=7))
    pool = make_pool(server, max_attempts=6)
    results = pool.batch([f"q{i}" for i in range(60)], config={"max_concurrency": 8})
    assert len(results) == 60
    assert set(Counter(m.response_metadata["key_index"] for m in results)) == {0, 1, 2}
    assert server.stats()["total"]["server_errors"] > 0  # faults happened and were absorbed


async def test_abatch(emulator: Emulator, make_pool: MakePool) -> None:
    pool = make_pool(emulator())
    prompts = ["alpha one", "bravo two", "charlie three", "delta four"]
    results = await pool.abatch(prompts, config={"max_concurrency": 2})
    assert [m.content for m in results] == [f"Echo: {p}" for p in prompts]  # each its own, in order
    assert {m.response_metadata["key_index"] for m in results} == {0, 1, 2}


def test_manual_tool_loop(emulator: Emulator, make_pool: MakePool) -> None:
    pool = make_pool(emulator())
    bound = pool.bind_tools([get_weather])
    history: list = [HumanMessage("Use the get_weather tool for 'Rome'.")]
    first = bound.invoke(history)
    assert first.tool_calls
    call = first.tool_calls[0]
    history += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = bound.invoke(history)
    assert isinstance(final.content, str)
    assert final.content
    assert not final.tool_calls


def test_agent_loop_with_create_agent(emulator: Emulator, make_pool: MakePool) -> None:
    from langchain.agents import create_agent

    server = emulator(faults=Faults(schedule=[503]))
    pool = make_pool(server)
    agent = create_agent(pool, tools=[get_weather])
    result = agent.invoke({"messages": [HumanMessage("Call get_weather for 'Oslo' and tell me.")]})
    messages = result["messages"]
    assert any(isinstance(m, ToolMessage) and "Oslo" in str(m.content) for m in messages)
    assert isinstance(messages[-1], AIMessage)
    assert not messages[-1].tool_calls
    served = [m.response_metadata["key_index"] for m in messages if isinstance(m, AIMessage)]
    assert len(served) == 2
