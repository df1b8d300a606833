"""The decision cache: reuse a recent routing DECISION (never an answer) for the same or a similar request.

Scope and lifetime:
- entries belong to one application (the key includes it; there is no cross-tenant lookup);
- each application holds at most `max_entries` (least recently used goes first), and an
  entry older than `ttl_s` is never served;
- everything is dropped when the active policy version changes (`ensure_policy`).

Lookup, for one application:
1. exact: the hash of the normalised text (case-folded, whitespace collapsed);
2. semantic: the nearest stored embedding (the local sentinel's static sentence vector,
   L2-normalised) with cosine >= the policy's `cache_similarity_threshold`. Brute force
   over 100,000 x 256 float32 costs ~10 ms, so the index is two-stage:
   a. every vector also has a 256-bit sign hash (random hyperplanes, fixed seed); the
      query's Hamming distance to all codes is four XOR + popcount passes over uint64
      columns (~0.3 ms at 100k);
   b. candidates are the rows within the Hamming radius that cosine >= threshold implies
      (angle/pi * bits, plus 4 standard deviations), at most `max_candidates` nearest;
   c. their float16 vectors are scored exactly; the best one at or over the threshold wins.
   The radius makes misses of true neighbours rare (a row at exactly the threshold falls
   outside it with probability ~3e-5); `bench/bench_cache.py` measures recall against
   brute force.

`DecisionCache` is in-process. `SharedDecisionCache` (routing/runtime.py builds it when
`REDIS_URL` is set) adds Redis: entries are written there too (with the TTL), a per-app
Redis stream announces them, and every process pulls new stream items into its own
in-process index at most once a `sync_s`; an exact miss locally is tried in Redis. The
current policy version lives under one Redis key; a process that sees it change drops
its index. The similarity search always stays in process, over vectors.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decision import RouteDecision

HASH_BITS = 256
_WORDS = HASH_BITS // 64
_WHITESPACE = re.compile(r"\s+")


def normalised_key(text: str) -> str:
    return hashlib.blake2b(_WHITESPACE.sub(" ", text.casefold()).strip().encode(), digest_size=16).hexdigest()


def hamming_radius(threshold: float, bits: int = HASH_BITS, sigmas: float = 4.0) -> int:
    """Hamming distance below which a vector at cosine `threshold` falls, with a safety margin."""
    p = math.acos(max(-1.0, min(1.0, threshold))) / math.pi
    return min(bits, math.ceil(bits * p + sigmas * math.sqrt(bits * p * (1 - p))))


@dataclass
class CachedDecision:
    decision: RouteDecision
    kind: str  # the sentinel kind that produced it (llm, local, tiered-local, tiered-llm, chained)
    calls: int  # sentinel calls the original decision made (what a hit saves)
    created: float
    model: str = ""


@dataclass(frozen=True)
class CacheHit:
    entry: CachedDecision
    match: str  # exact or semantic
    similarity: float


@dataclass
class CacheStats:
    lookups: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    semantic_rejected: int = 0  # a near neighbour whose route the local classifier disagreed with
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0
    calls_saved: int = 0

    def to_dict(self) -> dict[str, Any]:
        hits = self.exact_hits + self.semantic_hits
        return {
            "lookups": self.lookups, "hits": hits, "exact_hits": self.exact_hits,
            "semantic_hits": self.semantic_hits, "semantic_rejected": self.semantic_rejected,
            "misses": self.misses, "hit_rate": round(hits / self.lookups, 4) if self.lookups else 0.0,
            "stores": self.stores, "evictions": self.evictions, "expirations": self.expirations,
            "invalidations": self.invalidations, "sentinel_calls_saved": self.calls_saved,
        }


class VectorIndex:
    """Fixed-capacity rows of (sign hash, float16 vector) with a free list; no Python loop per row."""

    def __init__(self, dims: int, capacity: int, projection: np.ndarray) -> None:
        self.dims = dims
        self.capacity = capacity
        self.projection = projection
        self.codes = np.zeros((_WORDS, 0), dtype=np.uint64)
        self.vectors = np.zeros((0, dims), dtype=np.float16)
        self.alive = np.zeros(0, dtype=bool)
        self.free: list[int] = []
        self.size = 0  # rows in use (alive or free)

    def code(self, vector: np.ndarray) -> np.ndarray:
        return np.packbits(vector @ self.projection > 0).view(np.uint64)

    def _grow(self) -> None:
        new = min(self.capacity, max(1024, 2 * len(self.alive)))
        codes = np.zeros((_WORDS, new), dtype=np.uint64)
        codes[:, : self.size] = self.codes[:, : self.size]
        vectors = np.zeros((new, self.dims), dtype=np.float16)
        vectors[: self.size] = self.vectors[: self.size]
        alive = np.zeros(new, dtype=bool)
        alive[: self.size] = self.alive[: self.size]
        self.codes, self.vectors, self.alive = codes, vectors, alive

    def add(self, vector: np.ndarray) -> int:
        if self.free:
            row = self.free.pop()
        else:
            if self.size == len(self.alive):
                self._grow()
            row = self.size
            self.size += 1
        self.codes[:, row] = self.code(vector)
        self.vectors[row] = vector
        self.alive[row] = True
        return row

    def remove(self, row: int) -> None:
        self.alive[row] = False
        self.free.append(row)

    def nearest(self, vector: np.ndarray, threshold: float, max_candidates: int) -> tuple[int, float] | None:
        n = self.size
        if not n:
            return None
        query = self.code(vector)
        distance = np.zeros(n, dtype=np.uint16)
        scratch = np.empty(n, dtype=np.uint64)
        for w in range(_WORDS):
            np.bitwise_xor(self.codes[w, :n], query[w], out=scratch)
            distance += np.bitwise_count(scratch).astype(np.uint16, copy=False)
        candidates = np.flatnonzero(distance <= hamming_radius(threshold))
        if not len(candidates):
            return None
        if len(candidates) > max_candidates:
            nearest = np.argpartition(distance[candidates], max_candidates)[:max_candidates]
            candidates = candidates[nearest]
        candidates = candidates[self.alive[candidates]]
        if not len(candidates):
            return None
        scores = self.vectors[candidates].astype(np.float32) @ vector.astype(np.float32)
        best = int(np.argmax(scores))
        if scores[best] < threshold:
            return None
        return int(candidates[best]), float(scores[best])


@dataclass
class _AppCache:
    index: VectorIndex
    entries: OrderedDict[str, tuple[CachedDecision, int]] = field(default_factory=OrderedDict)  # key -> (entry, row)
    by_row: dict[int, str] = field(default_factory=dict)
    stats: CacheStats = field(default_factory=CacheStats)


class DecisionCache:
    """In-process decision cache (see the module docstring). Not thread-safe: one event loop uses it."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl_s: float = 600.0,
        dims: int = 256,
        max_candidates: int = 64,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 20_260_501,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.dims = dims
        self.max_candidates = max_candidates
        self.clock = clock
        self.projection = np.random.default_rng(seed).standard_normal((dims, HASH_BITS)).astype(np.float32)
        self.policy_version: object = None
        self._apps: dict[object, _AppCache] = {}
        self.stats = CacheStats()

    # -- lifetime ----------------------------------------------------------------------------
    def ensure_policy(self, version: object) -> None:
        """Drop every entry when the active policy version is not the one the entries were made under."""
        if version != self.policy_version:
            if self._apps:
                self.stats.invalidations += 1
            self._apps.clear()
            self.policy_version = version

    def clear(self) -> None:
        self._apps.clear()

    def _app(self, app: object) -> _AppCache:
        cache = self._apps.get(app)
        if cache is None:
            cache = self._apps[app] = _AppCache(VectorIndex(self.dims, self.max_entries, self.projection))
        return cache

    def _drop(self, cache: _AppCache, key: str) -> None:
        _, row = cache.entries.pop(key)
        cache.index.remove(row)
        cache.by_row.pop(row, None)

    def __len__(self) -> int:
        return sum(len(c.entries) for c in self._apps.values())

    def app_size(self, app: object) -> int:
        cache = self._apps.get(app)
        return len(cache.entries) if cache else 0

    def app_stats(self, app: object) -> CacheStats:
        cache = self._apps.get(app)
        return cache.stats if cache else CacheStats()

    # -- lookup and store --------------------------------------------------------------------
    def _count(self, cache: _AppCache, name: str, by: int = 1) -> None:
        setattr(self.stats, name, getattr(self.stats, name) + by)
        setattr(cache.stats, name, getattr(cache.stats, name) + by)

    def _fresh(self, cache: _AppCache, key: str) -> CachedDecision | None:
        entry, _ = cache.entries[key]
        if self.clock() - entry.created > self.ttl_s:
            self._drop(cache, key)
            self._count(cache, "expirations")
            return None
        cache.entries.move_to_end(key)
        return entry

    def lookup(
        self,
        app: object,
        text: str,
        vector: np.ndarray | None,
        *,
        threshold: float,
        verify: Callable[[CachedDecision], bool] | None = None,
    ) -> CacheHit | None:
        """Exact, then semantic. `verify` can veto a semantic match (the exact one is the same text)."""
        cache = self._app(app)
        self._count(cache, "lookups")
        key = normalised_key(text)
        if key in cache.entries:
            entry = self._fresh(cache, key)
            if entry is not None:
                self._count(cache, "exact_hits")
                self._count(cache, "calls_saved", entry.calls)
                return CacheHit(entry, "exact", 1.0)
        if vector is not None and threshold <= 1.0 and cache.entries:
            found = cache.index.nearest(vector, threshold, self.max_candidates)
            if found is not None:
                row, similarity = found
                near_key = cache.by_row[row]
                entry = self._fresh(cache, near_key)
                if entry is not None:
                    if verify is None or verify(entry):
                        self._count(cache, "semantic_hits")
                        self._count(cache, "calls_saved", entry.calls)
                        return CacheHit(entry, "semantic", similarity)
                    self._count(cache, "semantic_rejected")
        self._count(cache, "misses")
        return None

    def store(self, app: object, text: str, vector: np.ndarray | None, entry: CachedDecision) -> str:
        cache = self._app(app)
        key = normalised_key(text)
        self.insert(app, key, vector, entry)
        self._count(cache, "stores")
        return key

    def insert(self, app: object, key: str, vector: np.ndarray | None, entry: CachedDecision) -> None:
        """Put an entry under an already-computed key (also used when syncing from Redis)."""
        cache = self._app(app)
        if key in cache.entries:
            self._drop(cache, key)
        while len(cache.entries) >= self.max_entries:
            oldest = next(iter(cache.entries))
            self._drop(cache, oldest)
            self._count(cache, "evictions")
        if vector is None:
            vector = np.zeros(self.dims, dtype=np.float32)  # never similar to anything (cosine 0)
        row = cache.index.add(vector)
        cache.entries[key] = (entry, row)
        cache.by_row[row] = key


# ---- the shared (Redis) layer ------------------------------------------------------------------

REDIS_PREFIX = "gw:dcache"


def entry_to_json(key: str, entry: CachedDecision, vector: np.ndarray | None, origin: str) -> str:
    return json.dumps({
        "key": key, "decision": entry.decision.to_dict(), "kind": entry.kind, "calls": entry.calls,
        "model": entry.model, "vector": vector.astype(np.float16).tobytes().hex() if vector is not None else None,
        "origin": origin, "age": 0.0,
    })


def entry_from_json(raw: str | bytes, routes: Any, created: float) -> tuple[str, CachedDecision, np.ndarray | None, str]:
    data = json.loads(raw)
    decision = RouteDecision.parse(data["decision"], routes=routes)
    vector = (
        np.frombuffer(bytes.fromhex(data["vector"]), dtype=np.float16).astype(np.float32)
        if data.get("vector") else None
    )
    entry = CachedDecision(decision, data["kind"], int(data["calls"]), created, data.get("model", ""))
    return data["key"], entry, vector, data.get("origin", "")


class SharedDecisionCache(DecisionCache):
    """The in-process cache plus Redis (entries with TTL, a per-app stream, the policy-version key).

    Redis errors never fail a request: the cache degrades to in-process and counts them.
    """

    def __init__(self, redis_factory: Callable[[], Any], *, origin: str, sync_s: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.redis_factory = redis_factory  # -> a redis.asyncio client bound to the running loop
        self.origin = origin
        self.sync_s = sync_s
        self._stream_ids: dict[object, str] = {}
        self._synced_at: dict[object, float] = {}
        self.redis_errors = 0

    def _k(self, *parts: object) -> str:
        return ":".join([REDIS_PREFIX, str(self.policy_version), *map(str, parts)])

    async def aensure_policy(self, version: object) -> None:
        """Publish/observe the policy version in Redis; a change anywhere drops this process's index."""
        self.ensure_policy(version)
        try:
            redis = self.redis_factory()
            shared = await redis.get(f"{REDIS_PREFIX}:policy_version")
            if shared is None or shared.decode() != str(version):
                await redis.set(f"{REDIS_PREFIX}:policy_version", str(version))
        except Exception:  # noqa: BLE001 - Redis trouble must not fail routing
            self.redis_errors += 1

    def ensure_policy(self, version: object) -> None:
        if version != self.policy_version:
            self._stream_ids.clear()
            self._synced_at.clear()
        super().ensure_policy(version)

    async def sync(self, app: object, routes: Any) -> None:
        """Pull entries other processes announced since the last pull (at most once a `sync_s`)."""
        now = self.clock()
        if now - self._synced_at.get(app, -math.inf) < self.sync_s:
            return
        self._synced_at[app] = now
        try:
            redis = self.redis_factory()
            last = self._stream_ids.get(app, "0-0")
            items = await redis.xrange(self._k(app, "stream"), min=f"({last}", count=self.max_entries)
        except Exception:  # noqa: BLE001
            self.redis_errors += 1
            return
        for item_id, fields in items:
            self._stream_ids[app] = item_id.decode() if isinstance(item_id, bytes) else item_id
            raw = fields.get(b"entry") or fields.get("entry")
            try:
                key, entry, vector, origin = entry_from_json(raw, routes, now)
            except (ValueError, KeyError, TypeError):
                continue
            if origin != self.origin:
                self.insert(app, key, vector, entry)

    async def alookup(
        self, app: object, text: str, vector: np.ndarray | None, *, threshold: float, routes: Any,
        verify: Callable[[CachedDecision], bool] | None = None,
    ) -> CacheHit | None:
        await self.sync(app, routes)
        hit = self.lookup(app, text, vector, threshold=threshold, verify=verify)
        if hit is not None:
            return hit
        key = normalised_key(text)
        try:
            raw = await self.redis_factory().get(self._k(app, key))
        except Exception:  # noqa: BLE001
            self.redis_errors += 1
            return None
        if raw is None:
            return None
        try:
            key, entry, stored_vector, _ = entry_from_json(raw, routes, self.clock())
        except (ValueError, KeyError, TypeError):
            return None
        self.insert(app, key, stored_vector, entry)
        cache = self._app(app)
        # The local lookup counted a miss; it was a (shared) exact hit after all.
        self._count(cache, "misses", -1)
        self._count(cache, "exact_hits")
        self._count(cache, "calls_saved", entry.calls)
        return CacheHit(entry, "exact", 1.0)

    async def astore(self, app: object, text: str, vector: np.ndarray | None, entry: CachedDecision) -> None:
        key = self.store(app, text, vector, entry)
        payload = entry_to_json(key, entry, vector, self.origin)
        try:
            redis = self.redis_factory()
            async with redis.pipeline(transaction=False) as pipe:
                pipe.set(self._k(app, key), payload, ex=max(1, int(self.ttl_s)))
                pipe.xadd(self._k(app, "stream"), {"entry": payload}, maxlen=self.max_entries, approximate=True)
                pipe.expire(self._k(app, "stream"), max(1, int(self.ttl_s)))
                await pipe.execute()
        except Exception:  # noqa: BLE001
            self.redis_errors += 1
