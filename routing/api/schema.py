"""The OpenAPI 3.1 description of the gateway's API, and its browsable docs page.

Written by hand because the serving views are plain async Django views (DRF's
views are synchronous); `tests/api/test_schema.py` checks it matches the URLconf.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}}}},
}
TEXT_PART = {"type": "object", "required": ["type", "text"],
             "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
CHAT_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}]},
    },
}
METADATA = {"type": "object", "maxProperties": 32,
            "additionalProperties": {"type": ["string", "number", "boolean"]}}
ROUTE_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "message": {"type": "string", "minLength": 1, "description": "A single user message."},
        "messages": {"type": "array", "minItems": 1, "items": CHAT_MESSAGE,
                     "description": "A conversation in OpenAI shape (instead of `message`)."},
        "system": {"type": "string"},
        "metadata": METADATA,
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1000000},
    },
    "oneOf": [{"required": ["message"]}, {"required": ["messages"]}],
}
DECISION = {
    "type": ["object", "null"],
    "properties": {
        "route": {"type": "string"}, "confidence": {"type": "number"},
        "reasoning_depth_needed": {"type": "string", "enum": ["none", "shallow", "deep"]},
        "tools_required": {"type": "array", "items": {"type": "string"}},
        "estimated_output_tokens": {"type": "integer"}, "route_override_attempted": {"type": "boolean"},
    },
}
EXECUTOR = {"type": "object", "properties": {
    "provider": {"type": "string"}, "model": {"type": "string"}, "model_version": {"type": "string"}}}
ROUTE_RESPONSE = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string", "format": "uuid"}, "decision": DECISION,
        "sentinel": {"type": "object"}, "route": {"type": "string"}, "reason": {"type": "string"},
        "escalated": {"type": "boolean"}, "executor": EXECUTOR,
        "estimated_cost": {"type": "string", "description": "USD, decimal string"},
        "policy_version": {"type": "integer"},
    },
}
COMPLETE_RESPONSE = {
    "type": "object",
    "properties": {
        **ROUTE_RESPONSE["properties"],
        "output": {"type": "string"},
        "usage": {"type": "object"},
        "cost": {"type": "string"}, "baseline_cost": {"type": "string"},
        "latency": {"type": "object", "properties": {
            "sentinel_ms": {"type": "number"}, "executor_ms": {"type": "number"},
            "overhead_ms": {"type": "number"}, "total_ms": {"type": "number"}}},
        "simulated": {"type": "boolean"},
    },
}
FEEDBACK_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["request_id"],
    "properties": {
        "request_id": {"type": "string", "format": "uuid"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "thumbs": {"type": "string", "enum": ["up", "down"]},
        "comment": {"type": "string", "maxLength": 1000},
    },
    "oneOf": [{"required": ["score"]}, {"required": ["thumbs"]}],
}
CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "description": "\"auto\" routes; a catalog model name bypasses routing."},
        "messages": {"type": "array", "minItems": 1, "items": CHAT_MESSAGE},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "metadata": {"type": "object"},
    },
}
ANTHROPIC_MESSAGE = {
    "type": "object", "required": ["role", "content"],
    "properties": {"role": {"type": "string", "enum": ["user", "assistant"]},
                   "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}]}},
}
MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}]},
        "messages": {"type": "array", "minItems": 1, "items": ANTHROPIC_MESSAGE},
        "stream": {"type": "boolean"},
    },
}


def _op(summary: str, request: dict[str, Any], response: dict[str, Any], ok: str = "200",
        stream: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": response}}
    if stream:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}, {"apiKey": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                ok: {"description": "OK", "content": content},
                "400": {"description": "Invalid input", "content": {"application/json": {"schema": ERROR}}},
                "401": {"description": "Missing or invalid API key"},
                "404": {"description": "Unknown model"},
                "413": {"description": "Body too large"},
                "502": {"description": "The executor failed"},
                "503": {"description": "No executor configured"},
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "LLM routing gateway", "version": "1.0.0",
                 "description": "Classify every request with a cheap sentinel, execute on the right model, "
                                "record everything. Authenticate with `Authorization: Bearer KEY` or `x-api-key`."},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        }},
        "paths": {
            "/api/v1/route": _op("Decide the route only (nothing is generated)", ROUTE_REQUEST, ROUTE_RESPONSE),
            "/api/v1/complete": _op("Route, execute and answer", ROUTE_REQUEST, COMPLETE_RESPONSE),
            "/api/v1/feedback": _op("Record a quality signal for a request id", FEEDBACK_REQUEST,
                                    {"type": "object"}, ok="201"),
            "/v1/chat/completions": _op("OpenAI-compatible chat completions (model \"auto\" routes)",
                                        CHAT_REQUEST, {"type": "object"}, stream=True),
            "/v1/messages": _op("Anthropic-compatible messages (model \"auto\" routes)",
                                MESSAGES_REQUEST, {"type": "object"}, stream=True),
        },
    }


@require_GET
def schema_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi_document())


@require_GET
def docs_view(request: HttpRequest) -> HttpResponse:
    return render(request, "api/docs.html", {"schema_url": "/api/schema/"})
