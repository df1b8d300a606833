"""Database: `DATABASE_URL` (PostgreSQL in production); SQLite under var/ by default.

PostgreSQL connections are bounded so that a database that is down, hung or unreachable fails
fast instead of hanging a request or a writer thread (docs/RELIABILITY.md, "Infrastructure
faults"): `DB_CONNECT_TIMEOUT` (s), a server-side `DB_STATEMENT_TIMEOUT_MS` for serving processes
(management commands and Celery workers run long statements on purpose: none unless set), and TCP
keepalives plus `DB_TCP_USER_TIMEOUT_MS` so that a silent network partition breaks the connection.
The Redis cache gets short socket timeouts (`REDIS_TIMEOUT_MS`) for the same reason.
"""

import sys
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
    # Fail fast when PostgreSQL is away instead of hanging a request (libpq's minimum is 2 s).
    _db["OPTIONS"].setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 2, minimum=2))
    # A network partition: idle connections are probed, and data left unacknowledged this long
    # breaks the connection (Linux TCP_USER_TIMEOUT) rather than waiting for the kernel's ~15 min.
    _db["OPTIONS"].setdefault("keepalives", 1)
    _db["OPTIONS"].setdefault("keepalives_idle", 10)
    _db["OPTIONS"].setdefault("keepalives_interval", 3)
    _db["OPTIONS"].setdefault("keepalives_count", 3)
    _db["OPTIONS"].setdefault("tcp_user_timeout", env_int("DB_TCP_USER_TIMEOUT_MS", 10_000, minimum=0))
    # A slow or locked database: the server cancels a statement after this. Serving processes
    # only read small rows and write small batches; batch processes get no limit unless set.
    _program = Path(sys.argv[0]).name if sys.argv else ""
    _batch = _program in ("manage.py", "celery") or (_program == "__main__.py" and "celery" in sys.argv[0])
    _statement_ms = env_int("DB_STATEMENT_TIMEOUT_MS", 0 if _batch else 3000, minimum=0)
    if _statement_ms and "options" not in _db["OPTIONS"]:
        _db["OPTIONS"]["options"] = f"-c statement_timeout={_statement_ms}"
    _db["CONN_HEALTH_CHECKS"] = True

DATABASES = {"default": _db}

if env_str("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env_str("REDIS_URL"),
            "KEY_PREFIX": "gw",
            # A Redis that is away must not hang a request: fail in this bound (callers degrade).
            "OPTIONS": {
                "socket_connect_timeout": env_int("REDIS_TIMEOUT_MS", 500, minimum=50) / 1000,
                "socket_timeout": env_int("REDIS_TIMEOUT_MS", 500, minimum=50) / 1000,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
