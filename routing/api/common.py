"""Shared pieces of the API views: JSON errors in each dialect, key auth, limits, model names, recording.

Every serving request goes: authenticate → count the request (requests per minute) → parse →
reserve the worst cost of deciding → route → reserve the executor's worst case → execute or
stream → record the row and settle the reservation with what it really cost (routing/limits.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from routing.engine.dispatch import DecisionRecord, Executed, Gateway, GatewayRequest, NoExecutor, Routed
from routing.limits import Admission, LimitExceeded, get_limiter
from routing.runtime import DatabaseUnavailable, KeyInfo, get_runtime

from .parsing import BadRequest
from .streaming import StreamEncoder, drive_stream, open_stream, upstream_failure

log = logging.getLogger("routing.api")

View = Callable[..., Awaitable[Any]]


def native_error(status: int, code: str, message: str, field: str | None = None) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "field": field}}, status=status)


def openai_error(status: int, code: str, message: str, field: str | None = None) -> JsonResponse:
    kind = {401: "authentication_error", 413: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "api_error"
    )
    return JsonResponse({"error": {"message": message, "type": kind, "param": field, "code": code}}, status=status)


def anthropic_error(status: int, code: str, message: str, field: str | None = None) -> JsonResponse:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "request_too_large",
            429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500 else "api_error")
    text = f"{field}: {message}" if field else message
    return JsonResponse({"type": "error", "error": {"type": kind, "message": text}}, status=status)


def bearer_or_api_key(request: HttpRequest) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def gateway_endpoint(error: Callable[..., JsonResponse]) -> Callable[[View], View]:
    """Authenticate the key and count the request against its rate; turn `BadRequest`,
    `LimitExceeded` and `NoExecutor` into the dialect's JSON errors."""

    def decorate(view: View) -> View:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if request.method != "POST":
                response = error(405, "method_not_allowed", "use POST")
                response["Allow"] = "POST"
                return response
            raw = bearer_or_api_key(request)
            if not raw:
                return error(401, "missing_api_key", "an API key is required (Authorization: Bearer KEY or x-api-key)")
            try:
                key = await get_runtime().authenticate(raw)
                if key is None:
                    return error(401, "invalid_api_key", "the API key is not valid or has been revoked")
                await get_limiter().count_request(key)
                return await view(request, key, *args, **kwargs)
            except (DatabaseUnavailable, OperationalError, InterfaceError) as exc:
                # Down, hung or backing off: fail fast and say when to come back (docs/RELIABILITY.md).
                log.warning("database unavailable on %s: %s", request.path, exc)
                response = error(503, "database_unavailable",
                                 "the gateway's database is unavailable; retry shortly")
                response["Retry-After"] = str(DatabaseUnavailable.retry_after_s)
                return response
            except LimitExceeded as exc:
                return limit_error(error, exc)
            except BadRequest as exc:
                return error(exc.status, exc.code, exc.message, exc.field)
            except NoExecutor as exc:
                log.error("routing configuration error: %s", exc)
                return error(503, "no_executor", str(exc))

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapper

    return decorate


def limit_error(error: Callable[..., JsonResponse], exc: LimitExceeded) -> JsonResponse:
    """A refusal by a limit in the dialect's error shape: 429 (503 when the limit store is away),
    `retry-after` in seconds, and `x-should-retry: false` when retrying the same request cannot help."""
    response = error(exc.status, exc.code, exc.message, exc.field)
    response["Retry-After"] = str(exc.retry_after_s)
    if not exc.retryable:
        response["x-should-retry"] = "false"
    for name, value in exc.headers.items():
        response[name] = value
    return response


AUTO_MODELS = {"auto", "router", "gateway-auto"}


async def explicit_model(raw: Any) -> str | None:
    """The `model` field of the OpenAI and Anthropic dialects: None routes ("auto"); a catalog
    model name, or a pinned version id of a route's executor, bypasses routing."""
    if not isinstance(raw, str) or not raw:
        raise BadRequest("model is required (use \"auto\" to route)", field="model")
    if raw in AUTO_MODELS:
        return None
    catalog, _ = await get_runtime().ensure_config()
    if raw in catalog.models:
        return raw
    for spec in catalog.routes.values():
        if spec.provider != "guardrail" and spec.model_version == raw:
            return spec.model
    raise BadRequest(f"model {raw!r} is not in the catalog; use \"auto\" to route", field="model",
                     status=404, code="model_not_found")


def gateway_request(key: KeyInfo, endpoint: str, **fields: Any) -> GatewayRequest:
    return GatewayRequest(endpoint=endpoint, application_id=key.application_id, api_key_prefix=key.prefix, **fields)


def admission(key: KeyInfo, *, tool_rounds: int = 0, task_id: str | None = None) -> Admission:
    """The request's reservations; the agentic cap on tool-call rounds is checked first (429)."""
    limiter = get_limiter()
    limiter.check_tool_rounds(tool_rounds)
    return limiter.admission(key, task_id=task_id)


async def route_admitted(gateway: Gateway, greq: GatewayRequest, admitted: Admission) -> Routed:
    """Reserve the worst cost of deciding, route, then (unless decide-only) reserve the executor's
    worst case. Refused after routing: the row is recorded (the sentinel was paid) and 429 raised."""
    await admitted.reserve_for(gateway, greq)
    routed = await gateway.route(greq)
    if greq.endpoint == "route":
        return routed
    try:
        await admitted.reserve_execution_for(gateway, routed, greq)
    except LimitExceeded as exc:
        refused = Executed(None, routed.route, 0.0, 0, status="error", error=f"refused by the limits: {exc.code}")
        await record(gateway, routed, refused, greq, admitted)
        exc.headers.update(routing_headers(routed))
        raise
    return routed


async def execute(gateway: Gateway, routed: Routed, greq: GatewayRequest,
                  admitted: Admission) -> tuple[Executed, DecisionRecord]:
    admitted.executing()
    executed = await gateway.execute(routed, greq)
    row = await record(gateway, routed, executed, greq, admitted)
    return executed, row


async def record(gateway: Gateway, routed: Routed, executed: Executed | None, request: GatewayRequest,
                 admitted: Admission | None = None) -> DecisionRecord:
    """Log the decision row, sample it for audits, and settle the request's reservation with it."""
    from audits.sampling import last_user_text, maybe_sample

    row = gateway.record(routed, executed, request)
    get_runtime().recorder.record(row)
    completion = executed.completion if executed else None
    maybe_sample(row, last_user_text(request.messages), completion.text if completion else "")
    if admitted is not None:
        await settle(admitted, row)
    return row


async def settle(admitted: Admission, row: DecisionRecord) -> None:
    await admitted.settle(tokens=row.executor_input_tokens + row.executor_output_tokens, cost=row.cost)


class _RowKeeper:
    """The two Gateway methods `drive_stream` uses, keeping the row it records so that the
    stream can settle its reservation with it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.row: DecisionRecord | None = None

    def stream(self, routed: Routed, greq: GatewayRequest, sink: Executed) -> Any:
        return self.gateway.stream(routed, greq, sink)

    def record(self, routed: Routed, executed: Executed | None, greq: GatewayRequest) -> DecisionRecord:
        self.row = self.gateway.record(routed, executed, greq)
        return self.row


async def stream_response(gateway: Gateway, routed: Routed, greq: GatewayRequest, encoder: StreamEncoder,
                          admitted: Admission, headers: dict[str, str],
                          error: Callable[..., JsonResponse]) -> HttpResponse:
    """Start the executor's stream; if every executor fails before any text (after retries and the
    fallback), a JSON error in the dialect with a real status (`upstream_failure`). Otherwise an SSE
    response that settles the reservation when the stream ends, however it ends (finished,
    provider failure, client gone); dropped unstarted, it still settles."""
    keeper = _RowKeeper(gateway)
    admitted.executing()
    try:
        opened = await open_stream(keeper, routed, greq)
    except BaseException:
        if keeper.row is not None:  # the client went away before the first delta: row recorded
            await settle(admitted, keeper.row)
        raise
    if opened.failed:
        await record(gateway, routed, opened.executed, greq, admitted)
        return upstream_failure(error, opened.executed, headers)

    async def body() -> Any:
        chunks = drive_stream(keeper, routed, greq, encoder, opened=opened)  # type: ignore[arg-type]
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # records the row (drive_stream's own finally)
            if keeper.row is not None:
                await settle(admitted, keeper.row)
            await admitted.finish()

    content = body()
    admitted.hand_over(content)
    response = StreamingHttpResponse(content, content_type="text/event-stream", headers=headers)
    response["Cache-Control"] = "no-cache"
    return response


def routing_headers(routed: Routed) -> dict[str, str]:
    return {"x-request-id": str(routed.request_id), "x-route": routed.outcome.route}
