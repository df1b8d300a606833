"""The native REST API: decide only, route and execute, feedback, decision-cache stats."""

from __future__ import annotations

from functools import partial

from django.http import HttpRequest, JsonResponse

from routing.engine.dispatch import Routed
from routing.runtime import KeyInfo, get_runtime, run_db
from routing.services import feedback_record

from .common import (
    admission,
    bearer_or_api_key,
    execute,
    gateway_endpoint,
    gateway_request,
    native_error,
    record,
    route_admitted,
    routing_headers,
)
from .inputs import parse_feedback_input, parse_route_input, parse_task_id
from .parsing import parse_json_body
from .streaming import upstream_failure


def _decision_payload(routed: Routed) -> dict:
    sentinel = routed.sentinel
    return {
        "request_id": str(routed.request_id),
        "decision": sentinel.decision.to_dict() if sentinel and sentinel.decision else None,
        "sentinel": {
            "kind": sentinel.kind if sentinel else "bypass",
            "model": sentinel.model if sentinel else None,
            "error": sentinel.failure if sentinel else None,
        },
        "route": routed.outcome.route,
        "reason": routed.outcome.reason,
        "escalated": routed.outcome.escalated,
        "executor": {
            "provider": routed.route.provider,
            "model": routed.route.model,
            "model_version": routed.route.model_version,
        },
        "guard_flags": list(routed.guard_flags),
        "cache": {"hit": routed.cache_hit or None, "sentinel_calls_saved": routed.sentinel_calls_saved},
    }


@gateway_endpoint(native_error)
async def route_api(request: HttpRequest, key: KeyInfo) -> JsonResponse:
    """POST /api/v1/route — classify and apply the policy; nothing is generated.

    Counts as a request, and its sentinel's cost against the key's budgets (no tokens)."""
    data = parse_route_input(parse_json_body(request))
    task_id = parse_task_id(request.headers.get("x-task-id"), data.metadata)
    gateway = await get_runtime().gateway()
    greq = gateway_request(key, "route", system=data.system, messages=data.messages,
                           metadata=data.metadata, max_tokens=data.max_tokens)
    async with admission(key, tool_rounds=data.tool_rounds, task_id=task_id) as admitted:
        routed = await route_admitted(gateway, greq, admitted)
        await record(gateway, routed, None, greq, admitted)
    payload = _decision_payload(routed)
    payload["estimated_cost"] = str(routed.estimated_cost)
    payload["estimated_tokens"] = {"input": routed.estimated_input_tokens, "output": routed.estimated_output_tokens}
    payload["policy_version"] = gateway.policy.number
    return JsonResponse(payload, headers=routing_headers(routed))


@gateway_endpoint(native_error)
async def complete_api(request: HttpRequest, key: KeyInfo) -> JsonResponse:
    """POST /api/v1/complete — route, execute, answer, record."""
    data = parse_route_input(parse_json_body(request))
    task_id = parse_task_id(request.headers.get("x-task-id"), data.metadata)
    gateway = await get_runtime().gateway()
    greq = gateway_request(key, "complete", system=data.system, messages=data.messages,
                           metadata=data.metadata, max_tokens=data.max_tokens)
    async with admission(key, tool_rounds=data.tool_rounds, task_id=task_id) as admitted:
        routed = await route_admitted(gateway, greq, admitted)
        executed, row = await execute(gateway, routed, greq, admitted)
    headers = routing_headers(routed)
    if executed.completion is None:
        return upstream_failure(native_error, executed, headers, request_id=str(routed.request_id),
                                route=routed.outcome.route)
    payload = _decision_payload(routed)
    payload["executor"] = {
        "provider": row.executor_provider, "model": row.executor_model, "model_version": row.executor_model_version,
    }
    payload.update({
        "output": executed.completion.text,
        "finish_reason": executed.completion.finish_reason,
        "usage": {
            "input_tokens": row.executor_input_tokens,
            "output_tokens": row.executor_output_tokens,
            "cached_tokens": row.executor_cached_tokens,
            "cache_write_tokens": row.executor_cache_write_tokens,
            "sentinel": {"input_tokens": row.sentinel_input_tokens, "output_tokens": row.sentinel_output_tokens,
                         "cached_tokens": row.sentinel_cached_tokens},
        },
        "cost": str(row.cost),
        "sentinel_cost": str(row.sentinel_cost),
        "executor_cost": str(row.executor_cost),
        "baseline_cost": str(row.baseline_cost),
        "latency": {"sentinel_ms": row.sentinel_ms, "executor_ms": row.executor_ms,
                    "overhead_ms": row.overhead_ms, "total_ms": row.total_ms},
        "attempts": row.attempts,
        "served_path": row.served_path,
        "speculative_waste_cost": str(row.speculative_waste_cost),
        "simulated": row.simulated,
        "policy_version": gateway.policy.number,
    })
    return JsonResponse(payload, headers=headers)


@gateway_endpoint(native_error)
async def feedback_api(request: HttpRequest, key: KeyInfo) -> JsonResponse:
    """POST /api/v1/feedback — a user quality signal for a request id."""
    data = parse_feedback_input(parse_json_body(request))
    feedback = await run_db(partial(feedback_record,
        request_id=data.request_id, application_id=key.application_id,
        score=data.score, thumbs=data.thumbs, comment=data.comment,
    ))
    return JsonResponse(
        {"request_id": str(feedback.request_id), "score": feedback.score, "thumbs": feedback.thumbs or None},
        status=201,
    )


async def cache_stats_api(request: HttpRequest) -> JsonResponse:
    """GET /api/v1/stats/cache — this process's decision-cache figures for the key's application.

    Other applications' figures are never shown; `process` gives totals without names.
    """
    if request.method != "GET":
        response = native_error(405, "method_not_allowed", "use GET")
        response["Allow"] = "GET"
        return response
    raw = bearer_or_api_key(request)
    key = await get_runtime().authenticate(raw) if raw else None
    if key is None:
        return native_error(401, "invalid_api_key", "a valid API key is required (Authorization: Bearer KEY)")
    runtime = get_runtime()
    cache = runtime.decision_cache
    return JsonResponse({
        "application": key.application_name,
        "enabled": runtime.modes.cache_enabled,
        "shared": cache.__class__.__name__ == "SharedDecisionCache",
        "similarity_threshold": runtime.modes.cache_similarity_threshold,
        "ttl_s": cache.ttl_s,
        "max_entries_per_application": cache.max_entries,
        "entries": cache.app_size(key.application_id),
        **cache.app_stats(key.application_id).to_dict(),
        "process": {"entries": len(cache), **cache.stats.to_dict()},
    })
