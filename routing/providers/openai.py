"""OpenAI Chat Completions through the official `openai` SDK (async client).

Structured output: `response_format` with a strict JSON schema. OpenAI's
`prompt_tokens` already includes cached tokens, which is `Usage`'s convention.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from routing.engine.pricing import Usage

from .base import (
    ChatProvider,
    JsonFields,
    Completion,
    Message,
    ProviderConfig,
    ProviderError,
    StreamDelta,
    StructuredResult,
    sdk_error,
    sdk_http_client,
    stream_broken,
)

# Keywords strict mode may refuse; the policy validates ranges itself anyway.
_UNSUPPORTED_STRICT = {"minimum", "maximum"}


def strict_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: strict_schema(v) for k, v in schema.items() if k not in _UNSUPPORTED_STRICT}
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    return schema


def usage_from_openai(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
    prompt = usage.prompt_tokens or 0
    return Usage(input_tokens=prompt, output_tokens=usage.completion_tokens or 0, cached_tokens=min(cached, prompt))


class OpenAIProvider(ChatProvider):
    name = "openai"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self.client = openai.AsyncOpenAI(
            api_key=config.api_key, base_url=config.base_url, max_retries=0, timeout=config.timeout_s,
            http_client=sdk_http_client(openai, config),
        )

    def _error(self, exc: Exception) -> ProviderError:
        return sdk_error(exc, provider=self.name, sdk=openai)

    @staticmethod
    def _messages(system: str | None, messages: Sequence[Message]) -> list[dict[str, str]]:
        out = [{"role": "system", "content": system}] if system else []
        out.extend({"role": m.role, "content": m.content} for m in messages)
        return out

    async def complete(self, *, model, system, messages, max_tokens, timeout) -> Completion:
        # The hot path: the SDK's own client (auth, base URL, errors, timeout), asked for the JSON
        # as is (`cast_to=object`) rather than a typed `ChatCompletion`, which costs more CPU than
        # the rest of the gateway's routing; `chat.completions.create` serves structured output.
        body = {"model": model, "messages": self._messages(system, messages), "max_completion_tokens": max_tokens}
        try:
            response = await self.client.post("/chat/completions", body=body, cast_to=object,
                                              options={"timeout": timeout})
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        if not isinstance(response, dict):
            raise ProviderError(f"{self.name}: unexpected response body", provider=self.name)
        choices = response.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        usage = response.get("usage")
        return Completion(
            text=(choice.get("message") or {}).get("content") or "",
            usage=usage_from_openai(JsonFields(usage) if isinstance(usage, dict) else None),
            model_version=response.get("model") or model,
            finish_reason=choice.get("finish_reason") or "stop",
        )

    async def stream(self, *, model, system, messages, max_tokens, timeout) -> AsyncIterator[StreamDelta]:
        # As in `complete`: the SDK's own client and its own SSE stream (`AsyncStream`, which also
        # raises error events), each chunk taken as JSON rather than a typed `ChatCompletionChunk`.
        body = {"model": model, "messages": self._messages(system, messages), "max_completion_tokens": max_tokens,
                "stream": True, "stream_options": {"include_usage": True}}
        usage = Usage()
        version = model
        finish = "stop"
        try:
            chunks = await self.client.post("/chat/completions", body=body, cast_to=object, stream=True,
                                            stream_cls=openai.AsyncStream[object], options={"timeout": timeout})
            async for chunk in chunks:
                if not isinstance(chunk, dict):
                    continue
                version = chunk.get("model") or version
                reported = chunk.get("usage")
                if isinstance(reported, dict):
                    usage = usage_from_openai(JsonFields(reported))
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, dict):
                        continue
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        yield StreamDelta(text=content)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        except Exception as exc:  # noqa: BLE001 - the transport's own errors surface mid-stream
            raise stream_broken(self.name, exc) from exc
        yield StreamDelta(final=Completion(text="", usage=usage, model_version=version, finish_reason=finish))

    async def structured(self, *, model, system, messages, schema, schema_name, max_tokens, timeout) -> StructuredResult:
        try:
            response = await self.client.chat.completions.create(
                model=model,
                messages=self._messages(system, messages),
                max_completion_tokens=max_tokens,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "schema": strict_schema(schema), "strict": True},
                },
                timeout=timeout,
            )
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        content = response.choices[0].message.content if response.choices else ""
        return StructuredResult(data=content or "", usage=usage_from_openai(response.usage), model_version=response.model)

    async def aclose(self) -> None:
        await self.client.close()


class OpenAICompatibleProvider(OpenAIProvider):
    """vLLM, Ollama and other servers speaking the OpenAI API, reached by base URL."""

    name = "openai_compatible"
