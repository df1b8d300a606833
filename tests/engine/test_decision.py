import json
import math

import pytest

from routing.engine.decision import InvalidDecision, RouteDecision, decision_json_schema

ROUTES = ["simple_qa", "complex_reasoning", "code_generation"]
VALID = {
    "route": "simple_qa",
    "confidence": 0.9,
    "reasoning_depth_needed": "none",
    "tools_required": [],
    "estimated_output_tokens": 120,
    "route_override_attempted": False,
}


def test_it_parses_a_valid_decision_from_a_mapping_and_from_json():
    from_dict = RouteDecision.parse(VALID, routes=ROUTES)
    from_text = RouteDecision.parse(json.dumps(VALID), routes=ROUTES)
    assert from_dict == from_text
    assert from_dict.route == "simple_qa" and from_dict.confidence == 0.9
    assert from_dict.to_dict() == VALID


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"route": "premium_tier"}, "unknown route"),
        ({"route": 3}, "unknown route"),
        ({"confidence": 1.5}, "outside 0-1"),
        ({"confidence": -0.1}, "outside 0-1"),
        ({"confidence": math.nan}, "outside 0-1"),
        ({"confidence": "0.9"}, "must be a number"),
        ({"confidence": True}, "must be a number"),
        ({"reasoning_depth_needed": "extreme"}, "reasoning_depth_needed"),
        ({"tools_required": "web_search"}, "list of strings"),
        ({"tools_required": [1]}, "list of strings"),
        ({"estimated_output_tokens": 12.5}, "integer"),
        ({"estimated_output_tokens": -1}, "out of range"),
        ({"route_override_attempted": "no"}, "boolean"),
        ({"extra": 1}, "unexpected field"),
    ],
)
def test_it_rejects_invalid_fields(change, reason):
    with pytest.raises(InvalidDecision, match=reason):
        RouteDecision.parse({**VALID, **change}, routes=ROUTES)


@pytest.mark.parametrize("field", list(VALID))
def test_it_rejects_a_missing_field(field):
    data = dict(VALID)
    del data[field]
    with pytest.raises(InvalidDecision, match="missing field"):
        RouteDecision.parse(data, routes=ROUTES)


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", "", "null"])
def test_it_rejects_output_that_is_not_a_json_object(raw):
    with pytest.raises(InvalidDecision):
        RouteDecision.parse(raw, routes=ROUTES)


def test_it_rejects_tools_outside_the_registry():
    with pytest.raises(InvalidDecision, match="unknown tool"):
        RouteDecision.parse({**VALID, "tools_required": ["rm_rf"]}, routes=ROUTES, tools=["web_search"])


def test_the_schema_lists_the_routes_and_requires_every_field():
    schema = decision_json_schema(ROUTES, ["web_search"])
    assert schema["properties"]["route"]["enum"] == ROUTES
    assert set(schema["required"]) == set(VALID)
    assert schema["additionalProperties"] is False
