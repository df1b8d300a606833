"""Strict request-body parsing: every malformed body becomes a `BadRequest` naming the problem.

Rejected: bodies over the limit (413), invalid UTF-8, invalid JSON, NaN/Infinity (also as an
overflowing literal such as `1e999`), integers too long to convert, duplicate object keys,
nesting deeper than the limit, NUL characters and lone surrogates in any string or key, and
non-object top levels. `loads_strict` is shared with `StrictJSONParser`, the DRF parser of the
governance API, so that every JSON endpoint refuses the same bodies the same way.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.parsers import JSONParser


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
            raise BadRequest(f"duplicate key {_short(key)!r} in JSON object", field=_short(key))
        obj[key] = value
    return obj


def _short(key: str) -> str:
    """A key as it appears in an error: the client's text, cut short and made printable."""
    return key[:64].encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(literal: str) -> float:
    # `1e999` is valid JSON syntax but parses to inf, which no JSON column can store.
    value = float(literal)
    if not math.isfinite(value):
        raise BadRequest(f"number {literal[:40]} is out of range (numbers must be finite)")
    return value


def _check_strings(value: Any, path: str, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise BadRequest(f"JSON nested deeper than {max_depth} levels", field=path or None)
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, path)
            _check_strings(item, f"{path}.{_short(key)}" if path else _short(key), depth + 1, max_depth)
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


def loads_strict(body: bytes, *, max_depth: int | None = None) -> Any:
    """Decode and parse a JSON body with every check above except the size and top-level type."""
    if max_depth is None:
        max_depth = settings.GATEWAY_MAX_JSON_DEPTH
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
                          parse_float=_finite_float)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    _check_strings(data, "", 0, max_depth)
    return data


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
    data = loads_strict(body)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


class StrictJSONParser(JSONParser):
    """DRF's JSON parser with `loads_strict`'s checks: a problem at a known place is a validation
    error naming that field, anything else a parse error (both 400)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if stream is not None else b""
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            try:
                raw = raw.decode(encoding).encode("utf-8")
            except (LookupError, UnicodeError) as exc:
                raise exceptions.ParseError(f"request body is not valid {encoding}: {exc}") from None
        try:
            return loads_strict(raw)
        except BadRequest as exc:
            if exc.field:
                raise exceptions.ValidationError({exc.field: [exc.message]}) from None
            raise exceptions.ParseError(exc.message) from None
