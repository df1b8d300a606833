"""Shared pieces of the API views: JSON errors in each dialect, key auth, recording."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, JsonResponse

from routing.engine.dispatch import Executed, Gateway, GatewayRequest, NoExecutor, Routed
from routing.runtime import KeyInfo, get_runtime

from .parsing import BadRequest

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
    """Authenticate the key, turn `BadRequest`/`NoExecutor` into the dialect's JSON errors."""

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
            key = await get_runtime().authenticate(raw)
            if key is None:
                return error(401, "invalid_api_key", "the API key is not valid or has been revoked")
            try:
                return await view(request, key, *args, **kwargs)
            except BadRequest as exc:
                return error(exc.status, exc.code, exc.message, exc.field)
            except NoExecutor as exc:
                log.error("routing configuration error: %s", exc)
                return error(503, "no_executor", str(exc))

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapper

    return decorate


def gateway_request(key: KeyInfo, endpoint: str, **fields: Any) -> GatewayRequest:
    return GatewayRequest(endpoint=endpoint, application_id=key.application_id, api_key_prefix=key.prefix, **fields)


def record(gateway: Gateway, routed: Routed, executed: Executed | None, request: GatewayRequest) -> None:
    from audits.sampling import last_user_text, maybe_sample

    row = gateway.record(routed, executed, request)
    get_runtime().recorder.record(row)
    completion = executed.completion if executed else None
    maybe_sample(row, last_user_text(request.messages), completion.text if completion else "")


def routing_headers(routed: Routed) -> dict[str, str]:
    return {"x-request-id": str(routed.request_id), "x-route": routed.outcome.route}
