"""The redis-py clients of ``RedisState``: one Redis, or a Redis Cluster.

A ``RedisState`` URL names one Redis, or any node of a Redis Cluster: at construction one
``INFO cluster`` tells which (``cluster_enabled:1``), and a Cluster gets redis-py's
``RedisCluster`` (sync) or ``redis.asyncio.cluster.RedisCluster`` (async). Every key of one
deployment shares the hash tag ``{prefix}`` (``_state_redis_codec.tag``), so every script
runs on the one node that owns that slot; scripts are routed by ``salt_key(prefix)``.
"""

from __future__ import annotations

from typing import Any


def options(timeout: float) -> dict[str, Any]:
    """Short timeouts and no hidden retries: the outage policy decides what a failure means."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }


def is_cluster(url: str, timeout: float) -> bool:
    """Whether ``url`` names a node of a Redis Cluster (one round trip).

    Raises what redis-py raises for an unreachable server or a refused password; a server
    that refuses ``INFO`` itself (an ACL, a renamed command) is taken for a single Redis.
    """
    import redis

    probe = redis.Redis.from_url(url, **options(timeout))
    try:
        info = probe.info("cluster")
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise
        return False
    finally:
        probe.close()
    return bool(info.get("cluster_enabled"))


def sync_client(url: str, timeout: float, cluster: bool) -> Any:
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, **options(timeout))
    import redis

    return redis.Redis.from_url(url, **options(timeout))


def async_client(url: str, timeout: float, cluster: bool) -> Any:
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **options(timeout))
    import redis.asyncio as aredis

    return aredis.Redis.from_url(url, **options(timeout))


def outage_errors(*more: type[BaseException]) -> tuple[type[BaseException], ...]:
    """What redis-py raises when the server (or the Cluster's node for our slot) is gone;
    and ``more``."""
    import redis
    from redis.exceptions import ClusterDownError, SlotNotCoveredError

    return (redis.ConnectionError, redis.TimeoutError, ClusterDownError, SlotNotCoveredError, *more)
