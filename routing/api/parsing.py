"""Strict request-body parsing: every malformed body becomes a `BadRequest` naming the problem.

Rejected: bodies over the limit (413), invalid UTF-8, invalid JSON, NaN/Infinity,
duplicate object keys, nesting deeper than the limit, NUL characters and lone
surrogates in any string, and non-object top levels.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest


class BadRequest(Exception):
    def __init__(self, message: str, *, field: str | None = None, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.code = code


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BadRequest(f"duplicate key {key!r} in JSON object", field=key)
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON (numbers must be finite)")


def _check_strings(value: Any, path: str, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise BadRequest(f"JSON nested deeper than {max_depth} levels", field=path or None)
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, path)
            _check_strings(item, f"{path}.{key}" if path else key, depth + 1, max_depth)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{path}[{i}]", depth + 1, max_depth)


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise BadRequest("NUL characters are not allowed in text", field=path or None)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("text contains a lone surrogate (invalid Unicode)", field=path or None) from None


def parse_json_body(request: HttpRequest) -> dict[str, Any]:
    limit = settings.GATEWAY_MAX_BODY_BYTES
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        raise BadRequest(f"request body exceeds {limit} bytes", status=413, code="body_too_large")
    try:
        body = request.body
    except RequestDataTooBig:
        raise BadRequest(f"request body exceeds {limit} bytes", status=413, code="body_too_large") from None
    if len(body) > limit:
        raise BadRequest(f"request body exceeds {limit} bytes", status=413, code="body_too_large")
    if not body:
        raise BadRequest("request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    _check_strings(data, "", 0, settings.GATEWAY_MAX_JSON_DEPTH)
    return data
