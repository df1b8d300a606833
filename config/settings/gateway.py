"""Gateway behaviour: body limits, caches, decision-log batching and spooling."""

from config.env import env_bool, env_int, env_str, env_url

from .core import VAR_DIR

GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 1_048_576, minimum=1024)
# Freeze the objects alive after startup out of the garbage collector's walks and make its
# collections rarer (config/asgi.py `tune_gc`); 0 keeps Python's defaults.
GATEWAY_GC_TUNING = env_bool("GATEWAY_GC_TUNING", True)
GATEWAY_MAX_JSON_DEPTH = env_int("GATEWAY_MAX_JSON_DEPTH", 32, minimum=4)
GATEWAY_CONFIG_REFRESH_S = env_int("GATEWAY_CONFIG_REFRESH_MS", 1000, minimum=0) / 1000
# A revoked key is refused by every process within this bound (issue 7: "within one second").
GATEWAY_API_KEY_CACHE_S = env_int("GATEWAY_API_KEY_CACHE_MS", 500, minimum=0) / 1000
# The writer flushes every DECISION_LOG_FLUSH_MS or at DECISION_LOG_BATCH_SIZE rows, whichever comes
# first: 2,000 rows is what 10,000 rows/s (the ingest goal) fill in 200 ms, and on PostgreSQL such a
# batch is written in ~150 ms, within the flush interval (bench/bench_ingest.py, recorder phase:
# 500 → 2,000 rows a batch is +30–45 % rows/s; 2,000 → 5,000 is within the run-to-run noise).
DECISION_LOG_BATCH_SIZE = env_int("DECISION_LOG_BATCH_SIZE", 2000, minimum=1)
DECISION_LOG_FLUSH_MS = env_int("DECISION_LOG_FLUSH_MS", 200, minimum=1)
DECISION_SPOOL_DIR = env_str("DECISION_SPOOL_DIR", str(VAR_DIR / "spool"))
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_BODY_BYTES
METRICS_TOKEN = env_str("METRICS_TOKEN")

# Semantic cache of routing decisions (never answers): per application, bounded, expiring,
# dropped when the active policy changes. Shared through Redis when REDIS_URL is set.
GATEWAY_DECISION_CACHE = env_bool("GATEWAY_DECISION_CACHE", True)
GATEWAY_DECISION_CACHE_SIZE = env_int("GATEWAY_DECISION_CACHE_SIZE", 10_000, minimum=1)
GATEWAY_DECISION_CACHE_TTL_S = env_int("GATEWAY_DECISION_CACHE_TTL_S", 600, minimum=1)
GATEWAY_DECISION_CACHE_REDIS_URL = env_url("GATEWAY_DECISION_CACHE_REDIS_URL", schemes=("redis", "rediss"))

# --- Abuse limits (issue 7): per-key rate limits and budgets, agentic caps -------------------------
# Enforced by routing/limits.py, atomically across processes in Redis when a URL is set (default:
# REDIS_URL), otherwise in this process's memory. The limits themselves are on each ApiKey row.
GATEWAY_LIMITS_REDIS_URL = env_url("GATEWAY_LIMITS_REDIS_URL", env_str("REDIS_URL"), schemes=("redis", "rediss"))
GATEWAY_LIMITS_KEY_PREFIX = env_str("GATEWAY_LIMITS_KEY_PREFIX", "gw:limits")
# A key with limits is refused (503) rather than let through when Redis does not answer in time.
GATEWAY_LIMITS_REDIS_TIMEOUT_MS = env_int("GATEWAY_LIMITS_REDIS_TIMEOUT_MS", 1000, minimum=50)
# Input tokens are estimated (about four characters a token) before the provider counts them:
# reservations add this much headroom so that the real count stays inside them.
GATEWAY_LIMITS_INPUT_HEADROOM_PCT = env_int("GATEWAY_LIMITS_INPUT_HEADROOM_PCT", 25, minimum=0, maximum=400)
# Agentic caps: tool-call rounds in one request's history, and tokens per client task (x-task-id).
GATEWAY_MAX_TOOL_ROUNDS = env_int("GATEWAY_MAX_TOOL_ROUNDS", 12, minimum=1)
GATEWAY_TASK_TOKEN_BUDGET = env_int("GATEWAY_TASK_TOKEN_BUDGET", 1_000_000, minimum=0)  # 0: no task budget
GATEWAY_TASK_TTL_S = env_int("GATEWAY_TASK_TTL_S", 86_400, minimum=60)  # a task's count lasts this long

# ---- Provider faults (issue 7): one retry layer, circuit breakers, the request deadline ----------
# Retries: 408/429/5xx, timeouts and connection errors, on the same provider+model, with exponential
# backoff and full jitter (uniform in [0, min(MAX_BACKOFF, BASE * 2^n)]); a provider's retry-after is
# honoured up to GATEWAY_RETRY_AFTER_CAP_S (a longer one is not waited for: the fallback answers).
GATEWAY_RETRY_MAX_ATTEMPTS = env_int("GATEWAY_RETRY_MAX_ATTEMPTS", 3, minimum=1, maximum=10)
GATEWAY_RETRY_BASE_MS = env_int("GATEWAY_RETRY_BASE_MS", 200, minimum=0)
GATEWAY_RETRY_MAX_BACKOFF_MS = env_int("GATEWAY_RETRY_MAX_BACKOFF_MS", 5000, minimum=0)
GATEWAY_RETRY_AFTER_CAP_S = env_int("GATEWAY_RETRY_AFTER_CAP_S", 30, minimum=0)
# A provider+model's circuit opens after this many consecutive failures and lets one probe
# through after the cool-down; while open, requests go straight to the route's fallback.
GATEWAY_BREAKER_FAILURES = env_int("GATEWAY_BREAKER_FAILURES", 5, minimum=1)
GATEWAY_BREAKER_COOLDOWN_MS = env_int("GATEWAY_BREAKER_COOLDOWN_MS", 30_000, minimum=1)
# Ceiling on the per-request deadline (the active policy's `request_deadline_ms` applies below it).
GATEWAY_REQUEST_DEADLINE_S = env_int("GATEWAY_REQUEST_DEADLINE_S", 120, minimum=1)
