"""The stored-response index behaves the same in memory and in Redis, and refuses ids that are not the caller's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.api.stored import MemoryResponseIndex, Owner, RedisResponseIndex, owned
from gateway.errors import InvalidRequest, NotFound, Unavailable
from tests.contract.test_backends import prefix  # noqa: F401  (fixture)


@pytest.fixture(params=["memory", "redis"])
async def index(
    request: pytest.FixtureRequest,
    redis_url: str,
    prefix: str,  # noqa: F811
) -> AsyncIterator[MemoryResponseIndex | RedisResponseIndex]:
    if request.param == "memory":
        yield MemoryResponseIndex(max_entries=3)
        return
    backend = RedisResponseIndex(redis_url, prefix)
    yield backend
    await backend.aclose()


async def test_remember_lookup_forget(index: MemoryResponseIndex | RedisResponseIndex) -> None:
    await index.remember("resp_1", Owner("openai", "crm-app"))
    assert await index.owner("resp_1") == Owner("openai", "crm-app")
    assert await owned(index, "resp_1", "crm-app") == Owner("openai", "crm-app")
    await index.forget("resp_1")
    assert await index.owner("resp_1") is None


async def test_other_keys_and_malformed_ids_are_not_found(index: MemoryResponseIndex | RedisResponseIndex) -> None:
    await index.remember("resp_2", Owner("openai", "crm-app"))
    with pytest.raises(NotFound):
        await owned(index, "resp_2", "billing-app")
    with pytest.raises(InvalidRequest) as caught:
        await owned(index, "resp_2", "billing-app", param="previous_response_id")
    assert caught.value.param == "previous_response_id"
    with pytest.raises(NotFound):
        await owned(index, "../resp_2", "crm-app")


async def test_memory_index_is_bounded() -> None:
    index = MemoryResponseIndex(max_entries=2)
    for n in range(3):
        await index.remember(f"resp_{n}", Owner("p", "k"))
    assert await index.owner("resp_0") is None
    assert await index.owner("resp_2") == Owner("p", "k")


async def test_redis_down_is_a_clear_503() -> None:
    index = RedisResponseIndex("redis://127.0.0.1:1/0", "down")
    with pytest.raises(Unavailable) as caught:
        await owned(index, "resp_1", "crm-app")
    assert caught.value.status == 503
    await index.aclose()
