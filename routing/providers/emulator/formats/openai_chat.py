"""OpenAI Chat Completions (`POST /v1/chat/completions`, `GET /v1/models`) parsing and rendering.

Caching follows OpenAI's implicit model, simplified: the leading system/developer
messages form the cacheable prefix, and when the same prefix was already seen
for the same model its tokens are reported as `prompt_tokens_details.cached_tokens`
(the real API also needs >= 1024 tokens; the emulator does not, so short test
prompts exercise the path). `prompt_tokens` includes cached tokens.
Structured output comes from `response_format` (json_schema, or json_object);
`tools` are accepted but executors answer in plain text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .base import (
    Completion,
    EmulatedRequest,
    ReplyMeta,
    RequestError,
    Turn,
    Usage,
    WireFormat,
    schema_of_json_mode,
    split_for_stream,
    sse,
    text_of_parts,
)

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_PREFIX_ROLES = ("system", "developer")


def _schema_of(response_format: Any) -> Mapping[str, Any] | None:
    if not isinstance(response_format, Mapping):
        return None
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, Mapping):
            return schema
        raise RequestError("response_format.json_schema.schema: Field required")
    if response_format.get("type") == "json_object":
        return schema_of_json_mode()
    return None


class OpenAIChat(WireFormat):
    name = "openai"
    id_prefix = "chatcmpl-emu"
    routes = (("POST", re.compile(r"^/v1/chat/completions$")),)

    def parse(self, body: Mapping[str, Any], path_match: re.Match[str], query: Mapping[str, str]) -> EmulatedRequest:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages: expected a non-empty array")

        prefix_parts: list[str] = []
        rest_parts: list[str] = []
        turns = []
        in_prefix = True
        for message in messages:
            if not isinstance(message, Mapping):
                raise RequestError("messages: each message must be an object")
            role = message.get("role")
            text = text_of_parts(message.get("content"))
            if role == "assistant" and message.get("tool_calls"):
                text = "\n".join([text, json.dumps(message["tool_calls"], sort_keys=True)]).strip()
            in_prefix = in_prefix and role in _PREFIX_ROLES
            (prefix_parts if in_prefix else rest_parts).append(text)
            if role in ("user", "assistant"):
                turns.append(Turn(role, text))
            elif role == "tool":
                turns.append(Turn("user", text))
        if body.get("tools"):
            rest_parts.append(json.dumps(body["tools"], sort_keys=True))

        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
            raise RequestError("max_completion_tokens: expected an integer")
        prefix = "\n".join(prefix_parts)
        rest = "\n".join(rest_parts)
        stream_options = body.get("stream_options")
        return EmulatedRequest(
            provider=self.name,
            model=model,
            stream=bool(body.get("stream")),
            turns=tuple(turns),
            cache_prefix=prefix + ("\n" if prefix and rest else ""),
            uncached_text=rest,
            max_tokens=max_tokens,
            schema=_schema_of(body.get("response_format")),
            include_stream_usage=isinstance(stream_options, Mapping) and bool(stream_options.get("include_usage")),
        )

    def _usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def render(self, req: EmulatedRequest, out: Completion, usage: Usage, meta: ReplyMeta) -> dict[str, Any]:
        return {
            "id": meta.response_id,
            "object": "chat.completion",
            "created": meta.created,
            "model": meta.model_version,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": out.text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "length" if out.truncated else "stop",
                }
            ],
            "usage": self._usage(usage),
            "service_tier": "default",
            "system_fingerprint": "fp_emulator",
        }

    def stream_frames(self, req: EmulatedRequest, out: Completion, usage: Usage, meta: ReplyMeta) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            payload: dict[str, Any] = {
                "id": meta.response_id,
                "object": "chat.completion.chunk",
                "created": meta.created,
                "model": meta.model_version,
                "system_fingerprint": "fp_emulator",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if req.include_stream_usage:
                payload["usage"] = None  # the real API sends null usage on every chunk but the last
            return sse(payload)

        frames = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        frames += [chunk({"content": piece}, None) for piece in split_for_stream(out.text)]
        frames.append(chunk({}, "length" if out.truncated else "stop"))
        if req.include_stream_usage:
            frames.append(
                sse(
                    {
                        "id": meta.response_id,
                        "object": "chat.completion.chunk",
                        "created": meta.created,
                        "model": meta.model_version,
                        "system_fingerprint": "fp_emulator",
                        "choices": [],
                        "usage": self._usage(usage),
                    }
                )
            )
        frames.append(sse("[DONE]"))
        return frames

    def delta_text(self, payload: Mapping[str, Any]) -> str:
        return "".join(
            str((choice.get("delta") or {}).get("content") or "")
            for choice in payload.get("choices") or () if isinstance(choice, Mapping)
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind, code = _ERROR_TYPES.get(status, ("server_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def models_list(model_ids: list[str], created: int) -> dict[str, Any]:
    """Body of `GET /v1/models`."""
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": "emulator"} for m in model_ids],
    }
