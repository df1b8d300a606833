"""Celery: a broker when `CELERY_BROKER_URL` (or `REDIS_URL`) is set, otherwise tasks run in-process.

Tasks acknowledge late and are rejected (requeued) when their worker is lost, so a killed worker's
task runs again; every task claims its rows, so that is safe. The broker is bounded the same way
as the database (docs/RELIABILITY.md, "Infrastructure faults"): a connect or socket timeout of
`CELERY_BROKER_TIMEOUT_S`, and publishing retries once, briefly, so that a web process never waits
long on a broker that is down (and the sampler's rows are an outbox either way).
"""

from config.env import env_bool, env_int, env_str

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or env_str("REDIS_URL")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", CELERY_BROKER_URL is None)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND")
CELERY_TIMEZONE = "UTC"
# One queue name per deployment (or test run) sharing a broker.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
_BROKER_TIMEOUT_S = env_int("CELERY_BROKER_TIMEOUT_S", 2, minimum=1)
CELERY_BROKER_CONNECTION_TIMEOUT = _BROKER_TIMEOUT_S
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, float] = {
    # Redis: a message a worker took and never acknowledged (the whole worker was killed) is given
    # to another worker after this. Keep it above the longest task (judge calls take seconds;
    # retries wait in new messages), or a slow task is run twice (its claim keeps it harmless).
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_S", 3600, minimum=1),
}
if (CELERY_BROKER_URL or "").startswith(("redis://", "rediss://")):
    # A broker that hangs without closing the connection: a publish fails instead of waiting forever.
    CELERY_BROKER_TRANSPORT_OPTIONS["socket_connect_timeout"] = _BROKER_TIMEOUT_S
    CELERY_BROKER_TRANSPORT_OPTIONS["socket_timeout"] = _BROKER_TIMEOUT_S + 1  # above the 1 s BRPOP poll
