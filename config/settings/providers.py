"""Provider credentials and endpoints.

A provider with an API key is called for real (base URL overridable); a provider
without one is sent to the loopback provider emulator, and everything it answers
is marked simulated.
"""

from django.core.exceptions import ImproperlyConfigured

from config.env import env_int, env_str, env_url

ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
GEMINI_API_KEY = env_str("GEMINI_API_KEY")
ANTHROPIC_BASE_URL = env_url("ANTHROPIC_BASE_URL")
OPENAI_BASE_URL = env_url("OPENAI_BASE_URL")
GEMINI_BASE_URL = env_url("GEMINI_BASE_URL")
# OpenAI-compatible servers (vLLM, Ollama): base URL including /v1, key optional.
OPENAI_COMPATIBLE_BASE_URL = env_url("OPENAI_COMPATIBLE_BASE_URL")
OPENAI_COMPATIBLE_API_KEY = env_str("OPENAI_COMPATIBLE_API_KEY")

EMULATOR_URL = env_url("EMULATOR_URL", "http://127.0.0.1:8765")
PROVIDER_TIMEOUT_S = env_int("PROVIDER_TIMEOUT_S", 120, minimum=1)
# The official SDKs' HTTP transport: "aiohttp" (the SDKs' documented DefaultAioHttpClient, from
# their `aiohttp` extra; about half the CPU per call of their default) or "httpx" (their default).
PROVIDER_HTTP_BACKEND = env_str("PROVIDER_HTTP_BACKEND", "aiohttp")
if PROVIDER_HTTP_BACKEND not in ("aiohttp", "httpx"):
    raise ImproperlyConfigured(f"PROVIDER_HTTP_BACKEND must be aiohttp or httpx, not {PROVIDER_HTTP_BACKEND!r}")
# Milliseconds an idle connection to a provider is kept for reuse. Below the servers' own idle
# timeout (5 s for uvicorn/gunicorn) a request rarely meets a connection being closed under it;
# when one does, it is retried at once on a fresh connection.
PROVIDER_KEEPALIVE_MS = env_int("PROVIDER_KEEPALIVE_MS", 4000, minimum=0, maximum=600_000)
