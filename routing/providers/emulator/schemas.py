"""JSON-schema helpers for the emulator's structured outputs: kind detection and generic filling.

Schemas arrive in three dialects: plain JSON schema (OpenAI, Anthropic, Gemini's
`responseJsonSchema`), pydantic output with `$defs`/`$ref`/`anyOf`, and Gemini's
OpenAPI subset (upper-case types, float bounds). The helpers here read all
three; `fill_schema` produces a deterministic value that validates (string
`pattern`s are not honoured).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any


def seed_of(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def norm_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return {bool: "boolean", int: "integer", float: "number"}.get(type(schema["enum"][0]), "string")
    return ""


def resolve(schema: Any, root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local `$ref`s and pick the first non-null branch of anyOf/oneOf/allOf."""
    for _ in range(16):  # bounded: a self-referencing schema must not loop forever
        if not isinstance(schema, Mapping):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for key in ref[2:].split("/"):
                target = target.get(key, {}) if isinstance(target, Mapping) else {}
            schema = target
            continue
        for key in ("anyOf", "oneOf", "allOf", "any_of", "one_of"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                schema = next((b for b in branches if norm_type(resolve(b, root)) != "null"), branches[0])
                break
        else:
            return schema
    return {}


def properties_of(schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    props = resolve(schema, root).get("properties")
    if not isinstance(props, Mapping):
        return {}
    return {name: resolve(sub, root) for name, sub in props.items()}


def request_kind(schema: Mapping[str, Any] | None) -> str:
    """ "executor" (free text), "sentinel", "judge" or "other" (any other schema)."""
    if schema is None:
        return "executor"
    props = properties_of(schema, schema)
    if "route" in props and "confidence" in props:
        return "sentinel"
    if "score" in props and norm_type(props["score"]) in ("integer", "number"):
        return "judge"
    return "other"


def enum_values(schema: Mapping[str, Any] | None) -> list[Any]:
    values = schema.get("enum") if isinstance(schema, Mapping) else None
    return list(values) if isinstance(values, list) else []


def int_bound(schema: Mapping[str, Any], key: str, default: int) -> int:
    """An integer bound; Gemini's OpenAPI schemas send bounds as floats (or strings)."""
    try:
        return int(float(schema.get(key, default)))
    except (TypeError, ValueError):
        return default


def clamp(value: float, schema: Mapping[str, Any]) -> float:
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    if isinstance(lo, (int, float)) and value < lo:
        value = lo + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if isinstance(hi, (int, float)) and value > hi:
        value = hi - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return value


def shape(values: Mapping[str, Any], schema: Mapping[str, Any], seed: str) -> dict[str, Any]:
    """Keep exactly the schema's properties, taking `values` where known and filling the rest."""
    out = {}
    for name, sub in properties_of(schema, schema).items():
        out[name] = values[name] if name in values else fill_schema(sub, seed=f"{seed}/{name}", root=schema, name=name)
    return out


def fill_schema(
    schema: Mapping[str, Any], *, seed: str = "", root: Mapping[str, Any] | None = None, name: str = "value"
) -> Any:
    """A deterministic value that validates against `schema` (patterns are not honoured)."""
    root = root if root is not None else schema
    schema = resolve(schema, root)
    h = seed_of(seed, name)
    if "const" in schema:
        return schema["const"]
    choices = enum_values(schema)
    if choices:
        return choices[h % len(choices)]
    kind = norm_type(schema)
    if kind == "object":
        return shape({}, schema, seed)
    if kind == "array":
        lo = schema.get("minItems", schema.get("min_items", 0))
        hi = schema.get("maxItems", schema.get("max_items", 2))
        count = max(int(lo), min(2, int(hi)))
        items = schema.get("items", {})
        return [fill_schema(items, seed=f"{seed}/{i}", root=root, name=name) for i in range(count)]
    if kind == "integer":
        lo = int(schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1))
        hi = int(schema.get("maximum", schema.get("exclusiveMaximum", lo + 101) - 1))
        return lo + h % max(1, hi - lo + 1)
    if kind == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", lo + 100.0))
        return round(lo + (h % 10_000) / 10_000 * (hi - lo), 2)
    if kind == "boolean":
        return h % 2 == 0
    if kind == "null":
        return None
    formats = {"date": "2025-01-15", "date-time": "2025-01-15T12:00:00Z", "email": "user@example.com",
               "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000"}  # fmt: skip
    if schema.get("format") in formats:
        return formats[schema["format"]]
    text = f"{name.replace('_', ' ')} {h % 1000}"
    min_len = int(schema.get("minLength", schema.get("min_length", 0)))
    max_len = int(schema.get("maxLength", schema.get("max_length", 10_000)))
    return text.ljust(min_len, "x")[:max_len]
