"""GET /healthz — the database and the broker (and, for information, the Redis cache), each bounded.

1. Every check runs in a thread of its own and is awaited at most `CHECK_TIMEOUT_S`; the checks
   run side by side, so the endpoint answers within about that bound even when the database
   and the broker are both black-holed (accepting connections and never answering).
2. The database check opens a fresh connection (the request threads' connections are not
   touched, so a hung one cannot hang this) with a 2 s connect timeout and runs `SELECT 1` under
   `db_deadline`; the broker check pings Redis with short socket timeouts (other brokers: a
   kombu connection with the same connect timeout); the cache check pings the cache's Redis.
3. While a check's previous run is still stuck, it is not started again: it reports a timeout,
   so a hung dependency never piles up threads.
4. 200 with `"status": "ok"` when the database and the broker answer; otherwise 503 with
   `"degraded"`. The cache is reported only: requests are served without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, JsonResponse

from .recorder import db_deadline

CHECK_TIMEOUT_S = 2.0
_SOCKET_TIMEOUT_S = 1.5


class _Probe:
    """One kind of check, never more than one run of it at a time."""

    def __init__(self, check: Callable[[], str]) -> None:
        self.check = check
        self._lock = threading.Lock()
        self._running = False

    async def __call__(self) -> str:
        with self._lock:
            if self._running:
                return "error: timeout (the previous check has not returned)"
            self._running = True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()

        def run() -> None:
            try:
                result = self.check()
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                result = f"error: {type(exc).__name__}"
            finally:
                with self._lock:
                    self._running = False
            with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody is waiting
                loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

        threading.Thread(target=run, name="healthz-check", daemon=True).start()
        try:
            return await asyncio.wait_for(asyncio.shield(future), CHECK_TIMEOUT_S)
        except TimeoutError:
            return "error: timeout"


def _check_database() -> str:
    conn = connections.create_connection(DEFAULT_DB_ALIAS)
    if conn.vendor == "postgresql":
        options = {**conn.settings_dict.get("OPTIONS", {}), "connect_timeout": 2}
        conn.settings_dict = {**conn.settings_dict, "OPTIONS": options}
    try:
        with db_deadline(CHECK_TIMEOUT_S, wrapper=conn), conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    finally:
        conn.close()


def _ping_redis(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=_SOCKET_TIMEOUT_S, socket_connect_timeout=_SOCKET_TIMEOUT_S)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _check_broker() -> str:
    url = settings.CELERY_BROKER_URL
    if not url or settings.CELERY_TASK_ALWAYS_EAGER:
        return "in-process"
    if url.startswith(("redis://", "rediss://")):
        return _ping_redis(url)
    from kombu import Connection

    with Connection(url, connect_timeout=_SOCKET_TIMEOUT_S) as conn:
        conn.connect()
    return "ok"


def _check_cache() -> str:
    backend = settings.CACHES.get("default", {})
    if not backend.get("BACKEND", "").endswith("RedisCache"):
        return "local"
    return _ping_redis(backend["LOCATION"])


_database, _broker, _cache = _Probe(_check_database), _Probe(_check_broker), _Probe(_check_cache)


async def healthz(request: HttpRequest) -> JsonResponse:
    database, broker, cache = await asyncio.gather(_database(), _broker(), _cache())
    ok = database == "ok" and not broker.startswith("error")
    return JsonResponse(
        {"status": "ok" if ok else "degraded", "database": database, "broker": broker, "cache": cache},
        status=200 if ok else 503)
