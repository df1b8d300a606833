"""Gateway behaviour: body limits, caches, decision-log batching and spooling."""

from config.env import env_bool, env_int, env_str, env_url

from .core import VAR_DIR

GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 1_048_576, minimum=1024)
GATEWAY_MAX_JSON_DEPTH = env_int("GATEWAY_MAX_JSON_DEPTH", 32, minimum=4)
GATEWAY_CONFIG_REFRESH_S = env_int("GATEWAY_CONFIG_REFRESH_MS", 1000, minimum=0) / 1000
GATEWAY_API_KEY_CACHE_S = env_int("GATEWAY_API_KEY_CACHE_MS", 1000, minimum=0) / 1000
DECISION_LOG_BATCH_SIZE = env_int("DECISION_LOG_BATCH_SIZE", 500, minimum=1)
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
