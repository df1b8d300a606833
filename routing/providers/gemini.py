"""Gemini generateContent through the official `google-genai` SDK (async `client.aio`).

Structured output: `response_schema` with `response_mime_type="application/json"`.
Gemini's `prompt_token_count` includes cached tokens, which is `Usage`'s convention.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from routing.engine.pricing import Usage

from .base import (
    ChatProvider,
    Completion,
    Message,
    ProviderConfig,
    ProviderError,
    StreamDelta,
    StructuredResult,
    status_error,
)

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}
_UNSUPPORTED = {"additionalProperties"}


def gemini_schema(schema: Any) -> Any:
    """Gemini's `Schema` is an OpenAPI subset: drop the keywords it does not know."""
    if isinstance(schema, dict):
        return {k: gemini_schema(v) for k, v in schema.items() if k not in _UNSUPPORTED}
    if isinstance(schema, list):
        return [gemini_schema(v) for v in schema]
    return schema


def usage_from_gemini(meta: Any) -> Usage:
    if meta is None:
        return Usage()
    prompt = meta.prompt_token_count or 0
    cached = meta.cached_content_token_count or 0
    output = (meta.candidates_token_count or 0) + (getattr(meta, "thoughts_token_count", None) or 0)
    return Usage(input_tokens=prompt, output_tokens=output, cached_tokens=min(cached, prompt))


class GeminiProvider(ChatProvider):
    name = "gemini"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        http_options = types.HttpOptions(
            base_url=config.base_url,
            timeout=int(config.timeout_s * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self.client = genai.Client(api_key=config.api_key, http_options=http_options)

    def _error(self, exc: Exception) -> ProviderError:
        if isinstance(exc, genai_errors.APIError):
            return status_error(self.name, exc.code, getattr(getattr(exc, "response", None), "headers", None))
        text = type(exc).__name__
        if "Timeout" in text:
            return ProviderError("gemini: timeout", provider=self.name, retryable=True, kind="timeout")
        return ProviderError(f"gemini: {text}", provider=self.name, retryable=True, kind="connection")

    @staticmethod
    def _contents(messages: Sequence[Message]) -> list[types.Content]:
        return [
            types.Content(role="model" if m.role == "assistant" else "user", parts=[types.Part(text=m.content)])
            for m in messages
        ]

    def _config(self, system: str | None, max_tokens: int, timeout: float, **extra: Any) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=system or None,
            max_output_tokens=max_tokens,
            http_options=types.HttpOptions(timeout=int(timeout * 1000)),
            **extra,
        )

    async def complete(self, *, model, system, messages, max_tokens, timeout) -> Completion:
        try:
            response = await self.client.aio.models.generate_content(
                model=model, contents=self._contents(messages), config=self._config(system, max_tokens, timeout)
            )
        except Exception as exc:  # the SDK raises its own errors and the transport's
            raise self._error(exc) from exc
        finish = "stop"
        if response.candidates and response.candidates[0].finish_reason:
            finish = _FINISH.get(str(response.candidates[0].finish_reason.name), "stop")
        return Completion(
            text=response.text or "",
            usage=usage_from_gemini(response.usage_metadata),
            model_version=response.model_version or model,
            finish_reason=finish,
        )

    async def stream(self, *, model, system, messages, max_tokens, timeout) -> AsyncIterator[StreamDelta]:
        usage = Usage()
        version = model
        try:
            chunks = await self.client.aio.models.generate_content_stream(
                model=model, contents=self._contents(messages), config=self._config(system, max_tokens, timeout)
            )
            async for chunk in chunks:
                if chunk.usage_metadata is not None:
                    first = usage.input_tokens == 0
                    usage = usage_from_gemini(chunk.usage_metadata)
                    if first and usage.input_tokens:
                        yield StreamDelta(usage=Usage(usage.input_tokens, 0, usage.cached_tokens))
                version = chunk.model_version or version
                if chunk.text:
                    yield StreamDelta(text=chunk.text)
        except Exception as exc:  # noqa: BLE001 - normalised into ProviderError
            raise self._error(exc) from exc
        yield StreamDelta(final=Completion(text="", usage=usage, model_version=version))

    async def structured(self, *, model, system, messages, schema, schema_name, max_tokens, timeout) -> StructuredResult:
        try:
            response = await self.client.aio.models.generate_content(
                model=model,
                contents=self._contents(messages),
                config=self._config(
                    system,
                    max_tokens,
                    timeout,
                    response_mime_type="application/json",
                    response_schema=gemini_schema(schema),
                ),
            )
        except Exception as exc:  # noqa: BLE001 - normalised into ProviderError
            raise self._error(exc) from exc
        return StructuredResult(
            data=response.text or "",
            usage=usage_from_gemini(response.usage_metadata),
            model_version=response.model_version or model,
        )
