"""Database: `DATABASE_URL` (PostgreSQL in production); SQLite under var/ by default."""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_int, env_str

from .core import VAR_DIR

_url = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
try:
    _db = dj_database_url.parse(_url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0))
except Exception as exc:  # dj_database_url raises several types for bad URLs
    raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from None
if not _db.get("ENGINE"):
    raise ImproperlyConfigured(f"DATABASE_URL has an unsupported scheme: {_url.split(':', 1)[0]!r}")

if _db["ENGINE"] == "django.db.backends.sqlite3":
    if _db["NAME"] and _db["NAME"] != ":memory:":
        Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets the decision-log writer thread and request threads work side by side.
    _db.setdefault("OPTIONS", {})
    # IMMEDIATE: a write transaction takes the write lock up front, so concurrent writers wait
    # (up to `timeout`) instead of failing on lock upgrade.
    _db["OPTIONS"].update({"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;"})
    _db["CONN_MAX_AGE"] = 0
    # Tests use a file, not SQLite's in-memory shared cache: there, a writer that meets another
    # thread's lock fails at once ("table is locked") instead of waiting, and the gateway writes
    # from background threads (decision log, audit sampler) while requests are served.
    _db["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db.setdefault("OPTIONS", {})
    # Fail fast when PostgreSQL is away instead of hanging a request (see README, Operations).
    _db["OPTIONS"].setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 3, minimum=1))
    _db["CONN_HEALTH_CHECKS"] = True

DATABASES = {"default": _db}

if env_str("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env_str("REDIS_URL"),
            "KEY_PREFIX": "gw",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
