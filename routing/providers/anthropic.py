"""Anthropic Messages API through the official `anthropic` SDK (async client).

Structured output: a tool whose `input_schema` is the schema, forced with
`tool_choice`. The system prompt is marked for prompt caching. Anthropic's
`input_tokens` excludes cache reads and writes; `Usage` includes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anthropic

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

_STOP = {"end_turn": "stop", "max_tokens": "length", "stop_sequence": "stop", "tool_use": "tool_calls"}


def usage_from_anthropic(usage: Any) -> Usage:
    cache_read = getattr(usage, "cache_read_input_tokens", None) or 0
    cache_write = getattr(usage, "cache_creation_input_tokens", None) or 0
    uncached = getattr(usage, "input_tokens", None) or 0
    return Usage(
        input_tokens=uncached + cache_read + cache_write,
        output_tokens=getattr(usage, "output_tokens", None) or 0,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


class AnthropicProvider(ChatProvider):
    name = "anthropic"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        # Our gateway owns retries (one layer only), so the SDK's are off.
        self.client = anthropic.AsyncAnthropic(
            api_key=config.api_key, base_url=config.base_url, max_retries=0, timeout=config.timeout_s,
            http_client=sdk_http_client(anthropic, config),
        )

    def _error(self, exc: Exception) -> ProviderError:
        return sdk_error(exc, provider=self.name, sdk=anthropic)

    @staticmethod
    def _system(system: str | None) -> Any:
        if not system:
            return anthropic.omit
        return [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]

    @staticmethod
    def _messages(messages: Sequence[Message]) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in messages]

    async def complete(self, *, model, system, messages, max_tokens, timeout) -> Completion:
        # The hot path: the SDK's own client (auth, base URL, errors, timeout), asked for the JSON
        # as is (`cast_to=object`) rather than a typed `Message`, which costs more CPU than the
        # rest of the gateway's routing; `messages.create` serves structured output.
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": self._messages(messages)}
        if system:
            body["system"] = self._system(system)
        try:
            response = await self.client.post("/v1/messages", body=body, cast_to=object,
                                              options={"timeout": timeout})
        except anthropic.AnthropicError as exc:
            raise self._error(exc) from exc
        if not isinstance(response, dict):
            raise ProviderError(f"{self.name}: unexpected response body", provider=self.name)
        content = response.get("content") or []
        text = "".join(block.get("text") or "" for block in content if block.get("type") == "text")
        return Completion(
            text=text,
            usage=usage_from_anthropic(JsonFields(response.get("usage") or {})),
            model_version=response.get("model") or model,
            finish_reason=_STOP.get(response.get("stop_reason") or "", "stop"),
        )

    async def stream(self, *, model, system, messages, max_tokens, timeout) -> AsyncIterator[StreamDelta]:
        # As in `complete`: the SDK's own client and its own SSE stream (`AsyncStream`, which also
        # raises the provider's `error` events), each event taken as JSON rather than a typed model.
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": self._messages(messages),
                                "stream": True}
        if system:
            body["system"] = self._system(system)
        input_usage: Any = None
        output_tokens = 0
        version = model
        finish = "stop"
        try:
            events = await self.client.post("/v1/messages", body=body, cast_to=object, stream=True,
                                            stream_cls=anthropic.AsyncStream[object], options={"timeout": timeout})
            async for event in events:
                if not isinstance(event, dict):
                    continue
                kind = event.get("type")
                if kind == "content_block_delta":
                    delta = event.get("delta") or {}
                    if delta.get("type") == "text_delta":
                        yield StreamDelta(text=delta.get("text") or "")
                elif kind == "message_start":
                    message = event.get("message") or {}
                    input_usage = JsonFields(message.get("usage") or {})
                    version = message.get("model") or version
                    yield StreamDelta(usage=dataclasses.replace(usage_from_anthropic(input_usage), output_tokens=0))
                elif kind == "message_delta":
                    output_tokens = (event.get("usage") or {}).get("output_tokens") or 0
                    finish = _STOP.get((event.get("delta") or {}).get("stop_reason") or "", "stop")
        except anthropic.AnthropicError as exc:
            raise self._error(exc) from exc
        except Exception as exc:  # noqa: BLE001 - the transport's own errors surface mid-stream
            raise stream_broken(self.name, exc) from exc
        base = usage_from_anthropic(input_usage) if input_usage is not None else Usage()
        usage = Usage(base.input_tokens, output_tokens, base.cached_tokens, base.cache_write_tokens)
        yield StreamDelta(final=Completion(text="", usage=usage, model_version=version, finish_reason=finish))

    async def structured(self, *, model, system, messages, schema, schema_name, max_tokens, timeout) -> StructuredResult:
        try:
            response = await self.client.messages.create(
                model=model,
                max_tokens=max_tokens,
                system=self._system(system),
                messages=self._messages(messages),
                tools=[{"name": schema_name, "description": "Record the routing decision.", "input_schema": schema}],
                tool_choice={"type": "tool", "name": schema_name},
                timeout=timeout,
            )
        except anthropic.AnthropicError as exc:
            raise self._error(exc) from exc
        data: Any = None
        for block in response.content:
            if block.type == "tool_use" and block.name == schema_name:
                data = block.input
                break
        if data is None:
            data = "".join(getattr(block, "text", "") for block in response.content)
        return StructuredResult(data=data, usage=usage_from_anthropic(response.usage), model_version=response.model)

    async def aclose(self) -> None:
        await self.client.close()
