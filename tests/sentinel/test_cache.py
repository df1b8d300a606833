"""The decision cache: exact and semantic hits, tenant scope, LRU bound, TTL, policy changes, Redis sharing."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from routing.engine.cache import (
    CachedDecision,
    DecisionCache,
    SharedDecisionCache,
    hamming_radius,
)
from routing.engine.decision import RouteDecision
from routing.engine.local_sentinel.model import DEFAULT_ROUTES
from routing.engine.sentinel import shared_local_model

SIMPLE = RouteDecision("simple_qa", 0.95, "none", (), 100, False)


@pytest.fixture(scope="module")
def model():
    return shared_local_model().get()


def vec(model, text):
    return model.analyse(text).embedding


def entry(decision=SIMPLE, created=None):
    return CachedDecision(decision, "llm", 1, time.monotonic() if created is None else created,
                          "claude-haiku-4-5-20251001")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_it_hits_on_the_same_text_after_normalising_case_and_spaces(model):
    cache = DecisionCache()
    cache.store(1, "What is the capital of France?", vec(model, "What is the capital of France?"), entry())
    hit = cache.lookup(1, "  what is the CAPITAL of   france?", None, threshold=0.92)
    assert hit is not None and hit.match == "exact" and hit.entry.decision == SIMPLE
    assert cache.stats.exact_hits == 1 and cache.stats.calls_saved == 1


def test_it_hits_a_paraphrase_semantically_and_misses_an_unrelated_request(model):
    cache = DecisionCache()
    cache.store(1, "What is the capital of France?", vec(model, "What is the capital of France?"), entry())
    hit = cache.lookup(1, "What's the capital city of France?", vec(model, "What's the capital city of France?"),
                       threshold=0.92)
    assert hit is not None and hit.match == "semantic" and hit.similarity >= 0.92
    text = "Write a Rust async HTTP server with graceful shutdown and tests."
    assert cache.lookup(1, text, vec(model, text), threshold=0.92) is None


def test_a_semantic_hit_is_vetoed_when_the_verifier_disagrees(model):
    cache = DecisionCache()
    cache.store(1, "What is the capital of France?", vec(model, "What is the capital of France?"), entry())
    text = "What's the capital city of France?"
    assert cache.lookup(1, text, vec(model, text), threshold=0.92, verify=lambda e: False) is None
    assert cache.stats.semantic_rejected == 1


def test_entries_never_cross_applications(model):
    cache = DecisionCache()
    cache.store("app-a", "What is the capital of France?", vec(model, "What is the capital of France?"), entry())
    assert cache.lookup("app-b", "What is the capital of France?", vec(model, "What is the capital of France?"),
                        threshold=0.5) is None


def test_it_keeps_at_most_max_entries_per_application_dropping_the_least_recently_used():
    cache = DecisionCache(max_entries=3)
    rng = np.random.default_rng(0)
    for i in range(3):
        cache.store(1, f"prompt {i}", rng.standard_normal(256).astype(np.float32), entry())
    cache.lookup(1, "prompt 0", None, threshold=2.0)  # touch 0: 1 is now the oldest
    cache.store(1, "prompt 3", rng.standard_normal(256).astype(np.float32), entry())
    assert cache.app_size(1) == 3 and cache.stats.evictions == 1
    assert cache.lookup(1, "prompt 1", None, threshold=2.0) is None
    assert cache.lookup(1, "prompt 0", None, threshold=2.0) is not None


def test_an_entry_older_than_the_ttl_is_never_served():
    clock = Clock()
    cache = DecisionCache(ttl_s=60, clock=clock)
    cache.store(1, "hello", None, entry(created=clock.now))
    clock.now += 61
    assert cache.lookup(1, "hello", None, threshold=0.92) is None
    assert cache.stats.expirations == 1 and cache.app_size(1) == 0


def test_a_policy_version_change_drops_everything():
    cache = DecisionCache()
    cache.ensure_policy(1)
    cache.store(1, "hello", None, entry())
    cache.ensure_policy(1)
    assert len(cache) == 1
    cache.ensure_policy(2)
    assert len(cache) == 0 and cache.stats.invalidations == 1


def test_the_hamming_radius_grows_as_the_threshold_falls():
    assert hamming_radius(0.99) < hamming_radius(0.92) < hamming_radius(0.8) <= 256


def test_semantic_lookup_finds_the_true_nearest_neighbour_among_20k_entries():
    rng = np.random.default_rng(1)
    cache = DecisionCache(max_entries=20_000)
    vectors = rng.standard_normal((20_000, 256)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, v in enumerate(vectors):
        cache.insert(1, f"k{i}", v, entry())
    found = 0
    for i in range(50):
        q = vectors[i * 7] + 0.015 * rng.standard_normal(256).astype(np.float32)
        q /= np.linalg.norm(q)
        hit = cache.lookup(1, f"query {i}", q, threshold=0.92)
        found += hit is not None and hit.similarity > 0.92
    assert found == 50


def _redis_url():
    try:
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/15", socket_connect_timeout=0.2)
        client.ping()
        client.flushdb()
        return "redis://127.0.0.1:6379/15"
    except Exception:  # noqa: BLE001 - no Redis here: skip
        return None


def test_two_processes_share_decisions_through_redis(model):
    url = _redis_url()
    if url is None:
        if os.environ.get("CI"):
            pytest.fail("Redis on 127.0.0.1:6379 is required in CI")
        pytest.skip("no Redis on 127.0.0.1:6379")
    import redis.asyncio as aioredis

    async def run():
        client = aioredis.Redis.from_url(url)
        a = SharedDecisionCache(lambda: client, origin="a", sync_s=0.0)
        b = SharedDecisionCache(lambda: client, origin="b", sync_s=0.0)
        for cache in (a, b):
            await cache.aensure_policy(7)
        text = "What is the capital of France?"
        await a.astore(1, text, vec(model, text), entry(created=time.monotonic()))
        exact = await b.alookup(1, text, vec(model, text), threshold=0.92, routes=DEFAULT_ROUTES)
        para = "What's the capital city of France?"
        c = SharedDecisionCache(lambda: client, origin="c", sync_s=0.0)
        await c.aensure_policy(7)
        semantic = await c.alookup(1, para, vec(model, para), threshold=0.92, routes=DEFAULT_ROUTES)
        other_app = await c.alookup(2, text, vec(model, text), threshold=0.92, routes=DEFAULT_ROUTES)
        await client.flushdb()
        await client.aclose()
        return exact, semantic, other_app

    exact, semantic, other_app = asyncio.run(run())
    assert exact is not None and exact.match == "exact"
    assert semantic is not None and semantic.match == "semantic"
    assert other_app is None
