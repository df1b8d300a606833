"""The one small interface every provider implements, and the one error type they raise.

A provider takes plain `Message`s and a system prompt and returns a `Completion`
(text, normalised `Usage`, the exact model version the provider reported), a
`StructuredResult` (the provider's native structured output), or a stream of
`StreamDelta`s. Every failure is a `ProviderError` whose `retryable` says whether
trying again can help.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2

from routing.engine.pricing import Usage


@dataclass(frozen=True)
class Message:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class ProviderConfig:
    api_key: str
    base_url: str | None = None
    simulated: bool = False
    timeout_s: float = 120.0
    # The SDKs' HTTP transport: "aiohttp" (their documented `DefaultAioHttpClient`, the `aiohttp`
    # extra) or "httpx" (their default). See PROVIDER_HTTP_BACKEND.
    http_backend: str = "httpx"
    # Seconds an idle pooled connection is kept for reuse; shorter than the servers' own idle
    # timeouts (5 s for uvicorn and gunicorn) so that a request rarely meets a connection the
    # server is closing at that moment. See PROVIDER_KEEPALIVE_MS.
    keepalive_s: float = 4.0


@dataclass
class Completion:
    text: str
    usage: Usage
    model_version: str
    finish_reason: str = "stop"


@dataclass
class StructuredResult:
    data: Any  # dict when the provider returned an object, str when it returned text
    usage: Usage
    model_version: str


@dataclass
class StreamDelta:
    """One piece of a stream: text, or (last) the final usage and version."""

    text: str = ""
    final: Completion | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Prompt usage as soon as the provider reports it (before the end), so that a stream cut
    # midway is still costed with the provider's own prompt count.
    usage: Usage | None = None


class ProviderError(Exception):
    """A provider call failed. `retryable` is True for 429/5xx/timeouts/connection errors."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        kind: str = "error",
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind = kind  # error, timeout, connection, malformed


# Retried by the gateway's one retry layer (routing/engine/resilience.py): rate limits, server
# errors (529 is Anthropic's "overloaded") and 408 (a timeout). No other 4xx is ever retried:
# the same request would fail the same way (409 included: our calls are not idempotent writes).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})


class JsonFields:
    """Attribute access over a JSON object, so that `usage_from_*` read SDK models and raw JSON alike
    (the non-streaming calls ask the SDK for the JSON as is: `cast_to=object`)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        value = self._data.get(name)
        return JsonFields(value) if isinstance(value, dict) else value


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from a `retry-after` header (delta-seconds form; an HTTP date is ignored)."""
    if headers is None:
        return None
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay


def status_error(provider: str, status: int, headers: Any = None) -> ProviderError:
    """The ProviderError for an HTTP error status: retryable per RETRYABLE_STATUSES; 408 is a timeout."""
    return ProviderError(
        f"{provider}: HTTP {status}",
        provider=provider,
        status=status,
        retryable=status in RETRYABLE_STATUSES,
        retry_after=parse_retry_after(headers),
        kind="timeout" if status == 408 else "error",
    )


def sdk_http_client(sdk: Any, config: ProviderConfig) -> Any:
    """The SDK's own documented HTTP client for `config.http_backend`, with our pool limits.

    `DefaultAioHttpClient` / `DefaultAsyncHttpxClient` keep the SDK's defaults (1,000
    connections, 100 kept idle); only the idle expiry is ours (`config.keepalive_s`).
    """
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=config.keepalive_s)
    factory = sdk.DefaultAioHttpClient if config.http_backend == "aiohttp" else sdk.DefaultAsyncHttpxClient
    return factory(timeout=config.timeout_s, limits=limits)


def closed_before_answer(exc: BaseException) -> bool:
    """Did the server close the connection after taking the request, before any answer?

    That is how a pooled keep-alive connection that the server closed at the same moment fails:
    aiohttp's `ServerDisconnectedError` (or `ClientOSError` when the request could not be
    written), httpcore's "Server disconnected without sending a response", or a reset socket
    (the request reached a connection the server had closed). The SDKs wrap it
    (the aiohttp transport even as a connect *timeout*), so the cause chain is searched.
    """
    seen = exc.__cause__ or exc.__context__
    for _ in range(6):
        if seen is None:
            return False
        name = type(seen).__name__
        if name in ("ServerDisconnectedError", "ClientOSError"):
            return True
        if name == "RemoteProtocolError" and "without sending a response" in str(seen):
            return True
        if isinstance(seen, (ConnectionResetError, BrokenPipeError)):  # the request met a closed socket
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def sdk_error(exc: Exception, *, provider: str, sdk: Any) -> ProviderError:
    """Map an `anthropic` or `openai` SDK exception (they share class names) to a ProviderError.

    `APITimeoutError` subclasses `APIConnectionError` in both SDKs, so it is checked first,
    after a connection the server closed before answering (kind "disconnected": retried at once
    on a fresh connection, see `RetryPolicy.delay`).
    """
    if isinstance(exc, sdk.APIConnectionError) and closed_before_answer(exc):
        return ProviderError(f"{provider}: connection closed before an answer", provider=provider, retryable=True,
                             kind="disconnected")
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderError(f"{provider}: timeout", provider=provider, retryable=True, kind="timeout")
    if isinstance(exc, sdk.APIStatusError):
        return status_error(provider, exc.status_code, exc.response.headers)
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(f"{provider}: connection failed", provider=provider, retryable=True, kind="connection")
    return ProviderError(f"{provider}: {type(exc).__name__}", provider=provider, kind="malformed")


def stream_broken(provider: str, exc: Exception) -> ProviderError:
    """A transport error that surfaced mid-stream (the SDKs let some escape unwrapped)."""
    return ProviderError(f"{provider}: stream broken ({type(exc).__name__})", provider=provider,
                         retryable=True, kind="connection")


class ChatProvider(abc.ABC):
    name: str = ""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    @property
    def simulated(self) -> bool:
        return self.config.simulated

    @abc.abstractmethod
    async def complete(
        self, *, model: str, system: str | None, messages: Sequence[Message], max_tokens: int, timeout: float
    ) -> Completion: ...

    @abc.abstractmethod
    def stream(
        self, *, model: str, system: str | None, messages: Sequence[Message], max_tokens: int, timeout: float
    ) -> AsyncIterator[StreamDelta]: ...

    @abc.abstractmethod
    async def structured(
        self,
        *,
        model: str,
        system: str,
        messages: Sequence[Message],
        schema: dict[str, Any],
        schema_name: str,
        max_tokens: int,
        timeout: float,
    ) -> StructuredResult: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connection pools."""
