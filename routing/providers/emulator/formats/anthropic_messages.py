"""Anthropic Messages API (`POST /v1/messages`) request parsing and response rendering.

Prompt caching follows Anthropic's explicit model: the prompt is laid out in
Anthropic's order (tools, then system, then messages) and everything up to the
last block carrying `cache_control` is the cacheable prefix. The reported
`input_tokens` excludes both cache writes and cache reads, as the real API does.
Structured output arrives either as a forced tool (`tool_choice` type "tool",
or "any" with a single tool) answered with a `tool_use` block, or as a
`output_format`/`output_config.format` JSON schema answered as JSON text.
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
    split_for_stream,
    sse,
    text_of_parts,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
    503: "overloaded_error",
}
_DEFAULT_MAX_TOKENS = 4096


def _schema_from_output_format(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fmt = body.get("output_format")
    config = body.get("output_config")
    if fmt is None and isinstance(config, Mapping):
        fmt = config.get("format")
    schema = fmt.get("schema") if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema" else None
    if isinstance(schema, Mapping):
        return schema
    return None


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping)]
    choice = body.get("tool_choice")
    if not isinstance(choice, Mapping):
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    if choice.get("type") == "any" and len(tools) == 1:
        return tools[0]
    return None


class AnthropicMessages(WireFormat):
    name = "anthropic"
    id_prefix = "msg_emu"
    routes = (("POST", re.compile(r"^/v1/messages$")),)

    def parse(self, body: Mapping[str, Any], path_match: re.Match[str], query: Mapping[str, str]) -> EmulatedRequest:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("model: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages: Field required")
        max_tokens = body.get("max_tokens", _DEFAULT_MAX_TOKENS)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("max_tokens: must be a positive integer")

        # 1. Lay the prompt out in Anthropic's cache order, remembering where the
        #    last cache_control breakpoint falls.
        pieces: list[str] = []
        breakpoint_at = 0
        for tool in body.get("tools") or []:
            if isinstance(tool, Mapping):
                pieces.append(json.dumps({k: v for k, v in tool.items() if k != "cache_control"}, sort_keys=True))
                if tool.get("cache_control"):
                    breakpoint_at = len(pieces)
        system = body.get("system")
        if isinstance(system, str) and system:
            pieces.append(system)
        elif isinstance(system, list):
            for block in system:
                if isinstance(block, Mapping) and isinstance(block.get("text"), str):
                    pieces.append(block["text"])
                    if block.get("cache_control"):
                        breakpoint_at = len(pieces)
        turns = []
        for message in messages:
            if not isinstance(message, Mapping):
                raise RequestError("messages: each message must be an object")
            role = "assistant" if message.get("role") == "assistant" else "user"
            content = message.get("content")
            blocks = content if isinstance(content, list) else [content]
            texts = []
            for block in blocks:
                text = block if isinstance(block, str) else text_of_parts([block])
                if isinstance(block, Mapping) and block.get("type") == "tool_use":
                    text = json.dumps(block.get("input", {}), sort_keys=True)
                if text:
                    texts.append(text)
                    pieces.append(text)
                if isinstance(block, Mapping) and block.get("cache_control"):
                    breakpoint_at = len(pieces)
            turns.append(Turn(role, "\n".join(texts)))

        # 2. Pick the structured-output channel, if any.
        tool = _forced_tool(body)
        schema = tool.get("input_schema") if tool else _schema_from_output_format(body)
        prefix = "\n".join(pieces[:breakpoint_at])
        rest = "\n".join(pieces[breakpoint_at:])
        return EmulatedRequest(
            provider=self.name,
            model=model,
            stream=bool(body.get("stream")),
            turns=tuple(turns),
            cache_prefix=prefix + ("\n" if prefix and rest else ""),
            uncached_text=rest,
            explicit_cache=breakpoint_at > 0,
            max_tokens=max_tokens,
            schema=schema if isinstance(schema, Mapping) else None,
            tool_name=str(tool["name"]) if tool else None,
        )

    def _usage(self, usage: Usage, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": usage.uncached_input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "service_tier": "standard",
        }

    def _block(self, out: Completion, meta: ReplyMeta, req: EmulatedRequest) -> dict[str, Any]:
        if req.tool_name and out.tool_input is not None:
            return {
                "type": "tool_use",
                "id": "toolu_" + meta.response_id.removeprefix("msg_"),
                "name": req.tool_name,
                "input": dict(out.tool_input),
            }
        return {"type": "text", "text": out.text}

    def _stop_reason(self, block: Mapping[str, Any], out: Completion) -> str:
        if block["type"] == "tool_use":
            return "tool_use"
        return "max_tokens" if out.truncated else "end_turn"

    def render(self, req: EmulatedRequest, out: Completion, usage: Usage, meta: ReplyMeta) -> dict[str, Any]:
        block = self._block(out, meta, req)
        return {
            "id": meta.response_id,
            "type": "message",
            "role": "assistant",
            "model": meta.model_version,
            "content": [block],
            "stop_reason": self._stop_reason(block, out),
            "stop_sequence": None,
            "usage": self._usage(usage, out.output_tokens),
        }

    def stream_frames(self, req: EmulatedRequest, out: Completion, usage: Usage, meta: ReplyMeta) -> list[bytes]:
        block = self._block(out, meta, req)
        start_message: dict[str, Any] = {
            "id": meta.response_id,
            "type": "message",
            "role": "assistant",
            "model": meta.model_version,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Like the real API, output_tokens starts at 1 and the total arrives in message_delta.
            "usage": self._usage(usage, 1),
        }
        frames = [
            sse({"type": "message_start", "message": start_message}, "message_start"),
            sse({"type": "ping"}, "ping"),
        ]
        if block["type"] == "tool_use":
            opening = dict(block, input={})
            delta_type, key = "input_json_delta", "partial_json"
            pieces = split_for_stream(json.dumps(block["input"]), words_per_chunk=3)
        else:
            opening = {"type": "text", "text": ""}
            delta_type, key = "text_delta", "text"
            pieces = split_for_stream(out.text)
        frames.append(sse({"type": "content_block_start", "index": 0, "content_block": opening}, "content_block_start"))
        for piece in pieces:
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": delta_type, key: piece}}
            frames.append(sse(delta, "content_block_delta"))
        frames.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason(block, out), "stop_sequence": None},
            "usage": {"output_tokens": out.output_tokens},
        }
        frames.append(sse(message_delta, "message_delta"))
        frames.append(sse({"type": "message_stop"}, "message_stop"))
        return frames

    def delta_text(self, payload: Mapping[str, Any]) -> str:
        delta = payload.get("delta") if payload.get("type") == "content_block_delta" else None
        if not isinstance(delta, Mapping):
            return ""
        return str(delta.get("text") or delta.get("partial_json") or "")

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
