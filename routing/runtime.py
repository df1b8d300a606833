"""The per-process serving runtime: cached catalog, policy and API keys; provider clients; recorder.

Nothing here is read from the database on every request. The catalog, the active
policy and API keys are cached in process and reloaded when the shared config
version (in the Django cache: Redis when configured) changes, checked at most
every `GATEWAY_CONFIG_REFRESH_MS`; key lookups are cached for
`GATEWAY_API_KEY_CACHE_MS` (500 ms), so a revoked key stops working within that bound.
Provider SDK clients are bound to an event loop, so they are kept per loop.

When the database is down or hung (docs/RELIABILITY.md, "Infrastructure faults"): every
serving read is cut after `SERVING_DB_DEADLINE_S`; after a failed read the database is left
alone for `DB_BACKOFF_S`; the keys and the config read last keep serving for up to
`STALE_IF_ERROR_S` after their last good read (stale-if-error); with nothing cached the request
gets `DatabaseUnavailable` (503 `database_unavailable`, `Retry-After: 2`). A Redis that is away
makes the shared config version unknown, so the config is reloaded from the database.

The decision cache lives here too (one per process; shared through Redis when
`REDIS_URL` is set, see routing/engine/cache.py), with the policy's cache and
execution-mode settings (`ModeSettings`) loaded beside the active policy. The local
classifier is loaded lazily, once per process (`routing.engine.sentinel.shared_local_model`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from routing.engine.cache import DecisionCache, SharedDecisionCache
from routing.engine.catalog import Catalog, PolicySettings
from routing.engine.dispatch import Gateway
from routing.engine.policy import ModeSettings
from routing.engine.resilience import BreakerRegistry, RetryPolicy
from routing.engine.sentinel import shared_local_model
from routing.providers.base import ChatProvider, ProviderConfig
from routing.providers.registry import build_provider

from . import selectors
from .recorder import DecisionRecorder
from .services import CONFIG_VERSION_KEY, hash_api_key

PROVIDER_KEYS = {
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", ""),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "/v1"),
    "gemini": ("GEMINI_API_KEY", "GEMINI_BASE_URL", ""),
}


def provider_configs() -> dict[str, ProviderConfig]:
    """Real credentials where a key is set; otherwise the loopback emulator, marked simulated."""
    timeout = float(settings.PROVIDER_TIMEOUT_S)
    backend = settings.PROVIDER_HTTP_BACKEND
    keepalive = settings.PROVIDER_KEEPALIVE_MS / 1000
    configs: dict[str, ProviderConfig] = {}
    for name, (key_setting, url_setting, emulator_suffix) in PROVIDER_KEYS.items():
        key = getattr(settings, key_setting)
        if key:
            configs[name] = ProviderConfig(api_key=key, base_url=getattr(settings, url_setting), timeout_s=timeout,
                                           http_backend=backend, keepalive_s=keepalive)
        else:
            configs[name] = ProviderConfig(
                api_key="emulated", base_url=settings.EMULATOR_URL + emulator_suffix, simulated=True, timeout_s=timeout,
                http_backend=backend, keepalive_s=keepalive,
            )
    if settings.OPENAI_COMPATIBLE_BASE_URL:
        configs["openai_compatible"] = ProviderConfig(
            api_key=settings.OPENAI_COMPATIBLE_API_KEY or "none",
            base_url=settings.OPENAI_COMPATIBLE_BASE_URL,
            timeout_s=timeout,
            http_backend=backend, keepalive_s=keepalive,
        )
    configs["guardrail"] = ProviderConfig(api_key="")
    return configs


def simulated_providers() -> list[str]:
    return [name for name, cfg in provider_configs().items() if cfg.simulated]


T = TypeVar("T")

SERVING_DB_DEADLINE_S = 2.5  # a serving read on a silent connection is cut after this
DB_BACKOFF_S = 2.0  # after a failed read, the database is left alone this long
STALE_IF_ERROR_S = 900.0  # cached keys and config keep serving this long after their last good read
_UNKNOWN_VERSION = object()  # the shared config version could not be read (Redis away)


class DatabaseUnavailable(Exception):
    """The database did not answer a serving read (down, hung, or backing off after a failure)."""

    retry_after_s = int(DB_BACKOFF_S)


def _config_version() -> object:
    try:
        return cache.get(CONFIG_VERSION_KEY)
    except Exception:  # noqa: BLE001 — a cache that is away: the version is unknown, reload from the DB
        return _UNKNOWN_VERSION


# Database reads on the serving path run here: a few threads, so a few connections, however many
# requests are in flight (a thread per request would open a connection per request).
_DB_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gateway-db")


async def run_db(fn: Callable[..., T], *args: Any) -> T:
    from django.db import close_old_connections

    def call() -> T:
        close_old_connections()
        return fn(*args)

    return await asyncio.get_running_loop().run_in_executor(_DB_POOL, call)


def close_db_connections() -> None:
    """Close the serving pool's database connections (shutdown, tests)."""
    import threading

    from django.db import connections

    workers = _DB_POOL._max_workers
    barrier = threading.Barrier(workers, timeout=5)

    def close() -> None:
        connections.close_all()
        try:
            barrier.wait()  # hold this thread so that every worker thread gets one call
        except threading.BrokenBarrierError:
            pass

    for future in [_DB_POOL.submit(close) for _ in range(workers)]:
        future.result(timeout=10)


def mode_settings() -> ModeSettings:
    """Cache and execution-mode settings of the active policy version (defaults without one)."""
    from .models import PolicyStatus, PolicyVersion

    enabled = bool(getattr(settings, "GATEWAY_DECISION_CACHE", True))
    row = (PolicyVersion.objects.filter(status=PolicyStatus.ACTIVE)
           .values("cache_similarity_threshold", "speculative", "chained").first())
    if row is None:
        return ModeSettings(cache_enabled=enabled)
    return ModeSettings(
        cache_similarity_threshold=float(row["cache_similarity_threshold"]),
        speculative=row["speculative"],
        chained=row["chained"],
        cache_enabled=enabled,
    )


def decision_cache_redis_url() -> str | None:
    """Where the shared decision cache lives: GATEWAY_DECISION_CACHE_REDIS_URL, else the Redis
    of the default cache (REDIS_URL, as config/settings/database.py reads it), else nowhere."""
    url = getattr(settings, "GATEWAY_DECISION_CACHE_REDIS_URL", None)
    default_cache = settings.CACHES.get("default", {})
    if url is None and default_cache.get("BACKEND", "").endswith("RedisCache"):
        url = default_cache.get("LOCATION")
    return url or None


def build_decision_cache() -> DecisionCache:
    """In-process; with `REDIS_URL`, shared through Redis (a redis.asyncio client per event loop)."""
    size = int(getattr(settings, "GATEWAY_DECISION_CACHE_SIZE", 10_000))
    ttl = float(getattr(settings, "GATEWAY_DECISION_CACHE_TTL_S", 600.0))
    url = decision_cache_redis_url()
    if not url:
        return DecisionCache(max_entries=size, ttl_s=ttl)
    import redis.asyncio as aioredis

    clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def client() -> Any:
        loop = asyncio.get_running_loop()
        if loop not in clients:
            clients[loop] = aioredis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        return clients[loop]

    return SharedDecisionCache(client, origin=uuid.uuid4().hex, max_entries=size, ttl_s=ttl)


@dataclass(frozen=True)
class KeyInfo:
    """An authenticated key as the serving path sees it, with its abuse limits (None: unlimited)."""

    key_id: int
    prefix: str
    application_id: int
    application_name: str
    active: bool
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    daily_budget: Decimal | None = None
    monthly_budget: Decimal | None = None


class Runtime:
    def __init__(self) -> None:
        self.catalog: Catalog | None = None
        self.policy: PolicySettings | None = None
        self.modes = ModeSettings()
        self.decision_cache = build_decision_cache()
        # Circuit breakers per provider+model (issue 7); reset on invalidate().
        from .metrics import circuit_changed

        self.breakers = BreakerRegistry.from_settings(settings, on_change=circuit_changed)
        self._config_version: object = None
        self._checked_at = 0.0
        self._force_reload = False
        self._loaded_at = 0.0
        self._keys: dict[str, tuple[float, KeyInfo | None]] = {}
        self._db_retry_at = 0.0  # serving reads are refused at once until then (after a failure)
        self._providers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ChatProvider]] = (
            weakref.WeakKeyDictionary()
        )
        # Single flight: concurrent requests share one in-flight reload or key lookup.
        self._reload: asyncio.Future[Any] | None = None
        self._lookups: dict[str, asyncio.Future[KeyInfo | None]] = {}
        self.recorder = DecisionRecorder(
            spool_dir=settings.DECISION_SPOOL_DIR,
            batch_size=settings.DECISION_LOG_BATCH_SIZE,
            flush_ms=settings.DECISION_LOG_FLUSH_MS,
        )

    # -- configuration ---------------------------------------------------------------------
    def _load_sync(self) -> tuple[Catalog, PolicySettings, object, ModeSettings]:
        version = _config_version()
        return selectors.catalog_snapshot(), selectors.active_policy(), version, mode_settings()

    async def serving_read(self, fn: Callable[..., T], *args: Any) -> T:
        """A database read on the serving path: bounded, and refused at once while backing off."""
        from django.db import InterfaceError, OperationalError

        from .recorder import db_deadline

        if time.monotonic() < self._db_retry_at:
            raise DatabaseUnavailable("the database did not answer a moment ago")

        def bounded() -> T:
            with db_deadline(SERVING_DB_DEADLINE_S):
                return fn(*args)

        try:
            return await run_db(bounded)
        except (OperationalError, InterfaceError) as exc:
            self._db_retry_at = time.monotonic() + DB_BACKOFF_S
            raise DatabaseUnavailable(str(exc).splitlines()[0] if str(exc) else "database error") from exc

    async def ensure_config(self) -> tuple[Catalog, PolicySettings]:
        now = time.monotonic()
        stale = self.catalog is None or self._force_reload or now - self._loaded_at > 30
        if not stale and now - self._checked_at >= settings.GATEWAY_CONFIG_REFRESH_S:
            self._checked_at = now
            version = await run_db(_config_version)
            stale = version is _UNKNOWN_VERSION or version != self._config_version
        if stale:
            try:
                await self._reload_once()
            except DatabaseUnavailable:
                # Stale-if-error: the config read last keeps serving while the database is away.
                if self.catalog is None or self.policy is None or now - self._loaded_at > STALE_IF_ERROR_S:
                    raise
                self._checked_at = now
        assert self.catalog is not None and self.policy is not None
        return self.catalog, self.policy

    async def _reload_once(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self._reload
        if pending is not None and not pending.done() and pending.get_loop() is loop:
            await pending
            return
        future: asyncio.Future[Any] = loop.create_future()
        self._reload = future
        try:
            self._force_reload = False
            catalog, policy, version, modes = await self.serving_read(self._load_sync)
            self.catalog, self.policy, self._config_version, self.modes = catalog, policy, version, modes
            self._loaded_at = self._checked_at = time.monotonic()
            self._keys.clear()
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise

    def invalidate(self) -> None:
        """Force a reload on the next request (tests and admin actions in this process).

        The current snapshot stays in place until the reload lands, so a request already
        running in another thread never sees a half-reset runtime."""
        self._force_reload = True
        self._keys.clear()
        self.decision_cache.clear()
        fresh = BreakerRegistry.from_settings(settings)
        self.breakers.reset(failures=fresh.failures, cooldown_s=fresh.cooldown_s)

    # -- API keys --------------------------------------------------------------------------
    @staticmethod
    def _lookup_sync(key_hash: str) -> KeyInfo | None:
        key = selectors.api_key_by_hash(key_hash)
        if key is None:
            return None
        return KeyInfo(
            key.pk, key.prefix, key.application_id, key.application.name, key.is_active,
            requests_per_minute=key.requests_per_minute, tokens_per_minute=key.tokens_per_minute,
            daily_budget=key.daily_budget, monthly_budget=key.monthly_budget,
        )

    async def authenticate(self, raw_key: str) -> KeyInfo | None:
        """The key's info, or None when it is unknown or revoked.

        Lookups are cached for `GATEWAY_API_KEY_CACHE_MS` (500 ms) from *before* the read, so a
        revocation (or a limit changed in the admin) reaches every process within that bound;
        `api_key_revoke` also bumps the config version, which clears this cache at the next check.
        """
        key_hash = hash_api_key(raw_key)
        cached = self._keys.get(key_hash)
        now = time.monotonic()
        if cached is not None and now - cached[0] < settings.GATEWAY_API_KEY_CACHE_S:
            info = cached[1]
        else:
            try:
                info = await self._lookup_once(key_hash)
            except DatabaseUnavailable:
                # Stale-if-error: a key read recently enough keeps its last known state.
                if cached is None or now - cached[0] > STALE_IF_ERROR_S:
                    raise
                return cached[1] if cached[1] is not None and cached[1].active else None
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[key_hash] = (now, info)
        return info if info is not None and info.active else None

    async def _lookup_once(self, key_hash: str) -> KeyInfo | None:
        loop = asyncio.get_running_loop()
        pending = self._lookups.get(key_hash)
        if pending is not None and pending.get_loop() is loop:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyInfo | None] = loop.create_future()
        self._lookups[key_hash] = future
        try:
            info = await self.serving_read(self._lookup_sync, key_hash)
            future.set_result(info)
            return info
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            if self._lookups.get(key_hash) is future:
                del self._lookups[key_hash]

    # -- providers and the gateway ---------------------------------------------------------
    def providers(self) -> dict[str, ChatProvider]:
        loop = asyncio.get_running_loop()
        providers = self._providers.get(loop)
        if providers is None:
            providers = {name: build_provider(name, cfg) for name, cfg in provider_configs().items()}
            self._providers[loop] = providers
        return providers

    async def close_providers(self) -> None:
        """Close the providers built for the running event loop (their connection pools)."""
        providers = self._providers.pop(asyncio.get_running_loop(), None) or {}
        for provider in providers.values():
            await provider.aclose()

    async def gateway(self) -> Gateway:
        catalog, policy = await self.ensure_config()
        return Gateway(catalog=catalog, policy=policy, providers=self.providers(), now=timezone.now,
                       modes=self.modes, cache=self.decision_cache, local_model=shared_local_model(),
                       retry=RetryPolicy.from_settings(settings), breakers=self.breakers,
                       deadline_cap_s=settings.GATEWAY_REQUEST_DEADLINE_S, abandoned=self.recorder.record)


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's runtime, created on first use (after settings are loaded)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime
