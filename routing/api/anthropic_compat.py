"""POST /v1/messages — the Anthropic Messages API, plain and streamed, so the official
`anthropic` SDK (and tools built on it) can point at the gateway and be routed.

`tool_use` and `tool_result` blocks in the history are flattened to text for the executor,
at most `GATEWAY_MAX_TOOL_ROUNDS` rounds; `x-task-id` (or `metadata.task_id`) names the task
whose token budget the request counts against."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from routing.engine.dispatch import Executed, Routed
from routing.providers.base import Completion
from routing.runtime import KeyInfo, get_runtime

from .common import (
    admission,
    anthropic_error,
    execute,
    explicit_model,
    gateway_endpoint,
    gateway_request,
    route_admitted,
    routing_headers,
    stream_response,
)
from .inputs import _text_of, parse_max_tokens, parse_messages, parse_task_id
from .parsing import BadRequest, parse_json_body
from .streaming import sse, upstream_failure

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def _usage(completion: Completion | None) -> dict[str, int]:
    if completion is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    u = completion.usage
    return {
        "input_tokens": u.uncached_input_tokens,  # Anthropic's input_tokens excludes cache reads and writes
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
    }


class MessageEventEncoder:
    def __init__(self, routed: Routed) -> None:
        self.routed = routed
        self.id = f"msg_{routed.request_id.hex}"

    def start(self) -> list[str]:
        message = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.routed.route.model_version,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.routed.estimated_input_tokens, "output_tokens": 0},
        }
        return [
            sse({"type": "message_start", "message": message}, "message_start"),
            sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start"),
        ]

    def delta(self, text: str) -> str:
        return sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
                   "content_block_delta")

    def end(self, completion: Completion | None, executed: Executed) -> list[str]:
        stop = _STOP.get(completion.finish_reason if completion else "stop", "end_turn")
        return [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                 "usage": {"output_tokens": completion.usage.output_tokens if completion else 0}}, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ]

    def error(self, message: str) -> str:
        return sse({"type": "error", "error": {"type": "api_error", "message": message}}, "error")


def _system_text(raw: Any) -> str | None:
    if raw is None:
        return None
    return _text_of(raw, "system")


@gateway_endpoint(anthropic_error)
async def messages_api(request: HttpRequest, key: KeyInfo) -> HttpResponse:
    data = parse_json_body(request)
    explicit = await explicit_model(data.get("model"))
    max_tokens = parse_max_tokens(data.get("max_tokens"), "max_tokens", required=True)
    raw_messages = data.get("messages")
    if isinstance(raw_messages, list):
        for i, m in enumerate(raw_messages):
            if isinstance(m, dict) and m.get("role") not in ("user", "assistant"):
                raise BadRequest("role must be 'user' or 'assistant' (put instructions in 'system')",
                                 field=f"messages[{i}].role")
    system_in_messages, messages, tool_rounds = parse_messages(raw_messages)
    system = _system_text(data.get("system")) or system_in_messages
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean", field="stream")
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object", field="metadata")
    task_id = parse_task_id(request.headers.get("x-task-id"), metadata)

    gateway = await get_runtime().gateway()
    greq = gateway_request(key, "messages", system=system, messages=messages, explicit_model=explicit,
                           max_tokens=max_tokens, stream=stream)
    async with admission(key, tool_rounds=tool_rounds, task_id=task_id) as admitted:
        routed = await route_admitted(gateway, greq, admitted)
        headers = routing_headers(routed)
        if stream:
            return await stream_response(gateway, routed, greq, MessageEventEncoder(routed), admitted, headers,
                                         anthropic_error)
        executed, _ = await execute(gateway, routed, greq, admitted)
    completion = executed.completion
    if completion is None:
        return upstream_failure(anthropic_error, executed, headers)
    return JsonResponse(
        {
            "id": f"msg_{routed.request_id.hex}", "type": "message", "role": "assistant",
            "model": completion.model_version,
            "content": [{"type": "text", "text": completion.text}],
            "stop_reason": _STOP.get(completion.finish_reason, "end_turn"), "stop_sequence": None,
            "usage": _usage(completion),
        },
        headers=headers,
    )
