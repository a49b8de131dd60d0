"""LangChain's standard cache suites, run against GeminiDiskCache on a real directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.caches import BaseCache
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

from langchain_gemini_pool import GeminiDiskCache


class TestGeminiDiskCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, tmp_path: Path) -> BaseCache:
        return GeminiDiskCache(tmp_path / "sync")


class TestGeminiDiskCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, tmp_path: Path) -> BaseCache:
        return GeminiDiskCache(tmp_path / "async")
