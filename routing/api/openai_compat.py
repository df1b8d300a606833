"""POST /v1/chat/completions — the OpenAI Chat Completions API, plain and streamed (SSE).

`model: "auto"` routes; a catalog model name (or a pinned version id) bypasses
routing. Unknown request fields that the OpenAI API defines are accepted and
ignored; the ones we use are validated. Tool-call history (assistant `tool_calls`,
`tool` messages) is flattened to text for the executor, at most
`GATEWAY_MAX_TOOL_ROUNDS` rounds of it; `x-task-id` (or `metadata.task_id`) names the
task whose token budget the request counts against.
"""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from routing.engine.dispatch import Executed, Routed
from routing.providers.base import Completion
from routing.runtime import KeyInfo, get_runtime

from .common import (
    admission,
    execute,
    explicit_model,
    gateway_endpoint,
    gateway_request,
    openai_error,
    route_admitted,
    routing_headers,
    stream_response,
)
from .inputs import parse_max_tokens, parse_messages, parse_task_id
from .parsing import BadRequest, parse_json_body
from .streaming import sse, upstream_failure


def _usage(executed: Executed, completion: Completion | None) -> dict[str, Any]:
    usage = completion.usage if completion else None
    prompt = usage.input_tokens if usage else 0
    output = usage.output_tokens if usage else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens if usage else 0},
    }


class ChatChunkEncoder:
    def __init__(self, routed: Routed, include_usage: bool) -> None:
        self.id = f"chatcmpl-{routed.request_id.hex}"
        self.created = int(time.time())
        self.model = routed.route.model_version
        self.include_usage = include_usage

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def start(self) -> list[str]:
        return [sse(self._chunk({"role": "assistant", "content": ""}))]

    def delta(self, text: str) -> str:
        return sse(self._chunk({"content": text}))

    def end(self, completion: Completion | None, executed: Executed) -> list[str]:
        if completion is not None:
            self.model = completion.model_version or self.model
        out = [sse(self._chunk({}, completion.finish_reason if completion else "stop"))]
        if self.include_usage:
            out.append(sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [], "usage": _usage(executed, completion)}))
        out.append(sse("[DONE]"))
        return out

    def error(self, message: str) -> str:
        return sse({"error": {"message": message, "type": "api_error", "param": None, "code": "upstream_error"}})


@gateway_endpoint(openai_error)
async def chat_completions_api(request: HttpRequest, key: KeyInfo) -> HttpResponse:
    data = parse_json_body(request)
    explicit = await explicit_model(data.get("model"))
    system, messages, tool_rounds = parse_messages(data.get("messages"))
    max_tokens = parse_max_tokens(data.get("max_completion_tokens"), "max_completion_tokens")
    if max_tokens is None:
        max_tokens = parse_max_tokens(data.get("max_tokens"), "max_tokens")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean", field="stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", field="stream_options")
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object", field="metadata")
    task_id = parse_task_id(request.headers.get("x-task-id"), metadata)

    gateway = await get_runtime().gateway()
    greq = gateway_request(key, "chat_completions", system=system, messages=messages, explicit_model=explicit,
                           max_tokens=max_tokens, stream=stream, metadata=metadata or {})
    async with admission(key, tool_rounds=tool_rounds, task_id=task_id) as admitted:
        routed = await route_admitted(gateway, greq, admitted)
        headers = routing_headers(routed)
        if stream:
            encoder = ChatChunkEncoder(routed, include_usage=bool(options.get("include_usage")))
            return await stream_response(gateway, routed, greq, encoder, admitted, headers, openai_error)
        executed, _ = await execute(gateway, routed, greq, admitted)
    completion = executed.completion
    if completion is None:
        return upstream_failure(openai_error, executed, headers)
    return JsonResponse(
        {
            "id": f"chatcmpl-{routed.request_id.hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": completion.model_version,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                         "finish_reason": completion.finish_reason, "logprobs": None}],
            "usage": _usage(executed, completion),
        },
        headers=headers,
    )
