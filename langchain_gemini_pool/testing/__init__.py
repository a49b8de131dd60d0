"""A local emulator of the Gemini Developer API, for tests, demos and benchmarks.

The real google-genai SDK (and so ``ChatGoogleGenerativeAI``) talks to it over loopback
HTTP exactly as it talks to Google: same paths under ``/v1/`` and ``/v1beta/``, same JSON,
same SSE streams, same error bodies (429 with QuotaFailure and RetryInfo, bad keys, 404s,
500/503), per-project quotas on an injectable clock, and seeded faults.

Example:
    ```python
    from langchain_google_genai import ChatGoogleGenerativeAI
    from langchain_gemini_pool import ManualClock
    from langchain_gemini_pool.testing import FakeGeminiServer, Quota

    clock = ManualClock()
    with FakeGeminiServer(keys=["key-aaaa"], quotas=Quota(rpm=2), clock=clock) as server:
        llm = ChatGoogleGenerativeAI(
            model="gemini-2.5-flash",
            base_url=server.base_url,
            google_api_key="key-aaaa",
            max_retries=1,
        )
        llm.invoke("Hello")          # "Echo: Hello"
        server.stats()["total"]["ok"]  # 1
    ```

Token counts follow :func:`count_tokens` (``ceil(len(text) / 4)``); ``_replies.py`` spells out
what a prompt counts. Stats are exact ground truth; see ``_stats.py`` for what is billed.
"""

from langchain_gemini_pool.testing._faults import Faults
from langchain_gemini_pool.testing._quota import Quota
from langchain_gemini_pool.testing._replies import count_tokens, prompt_tokens
from langchain_gemini_pool.testing._server import FakeGeminiServer

__all__ = ["FakeGeminiServer", "Faults", "Quota", "count_tokens", "prompt_tokens"]
