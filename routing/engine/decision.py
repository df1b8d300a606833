"""The sentinel's structured routing decision and its strict validation.

A `RouteDecision` is what every sentinel (LLM or local) emits *before* anything is
generated. Parsing is strict: an unknown route, a confidence outside 0-1 (or NaN),
a wrong type or a missing field makes the whole decision invalid, and the policy
then escalates instead of trusting it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

REASONING_DEPTHS = ("none", "shallow", "deep")
MAX_ESTIMATED_OUTPUT_TOKENS = 1_000_000

FIELDS = (
    "route",
    "confidence",
    "reasoning_depth_needed",
    "tools_required",
    "estimated_output_tokens",
    "route_override_attempted",
)


class InvalidDecision(ValueError):
    """The sentinel's output is not a valid RouteDecision; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RouteDecision:
    route: str
    confidence: float
    reasoning_depth_needed: str
    tools_required: tuple[str, ...] = field(default_factory=tuple)
    estimated_output_tokens: int = 0
    route_override_attempted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "confidence": self.confidence,
            "reasoning_depth_needed": self.reasoning_depth_needed,
            "tools_required": list(self.tools_required),
            "estimated_output_tokens": self.estimated_output_tokens,
            "route_override_attempted": self.route_override_attempted,
        }

    @classmethod
    def parse(
        cls,
        data: Any,
        *,
        routes: Collection[str],
        tools: Collection[str] | None = None,
    ) -> RouteDecision:
        """Validate raw sentinel output (a JSON string or a mapping) strictly."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except (ValueError, TypeError) as exc:
                raise InvalidDecision(f"output is not JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise InvalidDecision("output is not a JSON object")
        missing = [name for name in FIELDS if name not in data]
        if missing:
            raise InvalidDecision(f"missing field(s): {', '.join(missing)}")
        extra = sorted(set(data) - set(FIELDS))
        if extra:
            raise InvalidDecision(f"unexpected field(s): {', '.join(extra)}")

        route = data["route"]
        if not isinstance(route, str) or route not in routes:
            raise InvalidDecision(f"unknown route {route!r}")

        confidence = data["confidence"]
        # bool is an int subclass: reject it explicitly.
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
            raise InvalidDecision("confidence must be a number")
        confidence = float(confidence)
        if math.isnan(confidence) or not 0.0 <= confidence <= 1.0:
            raise InvalidDecision(f"confidence {confidence!r} outside 0-1")

        depth = data["reasoning_depth_needed"]
        if depth not in REASONING_DEPTHS:
            raise InvalidDecision(f"reasoning_depth_needed {depth!r} not one of {REASONING_DEPTHS}")

        tools_required = data["tools_required"]
        if not isinstance(tools_required, list) or not all(isinstance(t, str) for t in tools_required):
            raise InvalidDecision("tools_required must be a list of strings")
        if tools is not None:
            unknown = [t for t in tools_required if t not in tools]
            if unknown:
                raise InvalidDecision(f"unknown tool(s): {', '.join(unknown)}")

        est = data["estimated_output_tokens"]
        if isinstance(est, bool) or not isinstance(est, int):
            raise InvalidDecision("estimated_output_tokens must be an integer")
        if not 0 <= est <= MAX_ESTIMATED_OUTPUT_TOKENS:
            raise InvalidDecision(f"estimated_output_tokens {est} out of range")

        override = data["route_override_attempted"]
        if not isinstance(override, bool):
            raise InvalidDecision("route_override_attempted must be a boolean")

        return cls(
            route=route,
            confidence=confidence,
            reasoning_depth_needed=depth,
            tools_required=tuple(tools_required),
            estimated_output_tokens=est,
            route_override_attempted=override,
        )


def decision_json_schema(routes: Collection[str], tools: Collection[str] = ()) -> dict[str, Any]:
    """JSON schema of a RouteDecision, in the subset every provider's structured output accepts."""
    tool_items: dict[str, Any] = {"type": "string"}
    if tools:
        tool_items["enum"] = sorted(tools)
    return {
        "type": "object",
        "properties": {
            "route": {"type": "string", "enum": list(routes)},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reasoning_depth_needed": {"type": "string", "enum": list(REASONING_DEPTHS)},
            "tools_required": {"type": "array", "items": tool_items},
            "estimated_output_tokens": {"type": "integer", "minimum": 0},
            "route_override_attempted": {"type": "boolean"},
        },
        "required": list(FIELDS),
        "additionalProperties": False,
    }
