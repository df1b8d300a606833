"""Prometheus metrics for the serving path, fed from the decision records as they are logged.

Every request produces exactly one `DecisionRecord`, so counting at the recorder gives one
consistent set of numbers: requests and decisions per route, latency histograms per stage,
errors per provider, retries/attempts, tokens and spend, and every provider call from the rows'
attempt logs (outcome, error kind, retries, latency). Circuit states are pushed by the breakers
(`circuit_changed`). Never prompt text.
`GET /metrics` serves them (optionally behind `METRICS_TOKEN`).
"""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from routing.engine.dispatch import DecisionRecord

REGISTRY = CollectorRegistry(auto_describe=True)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("gateway_requests", "Requests by endpoint, route after policy and status",
                   ["endpoint", "route", "status"], registry=REGISTRY)
DECISIONS = Counter("gateway_decisions", "Sentinel decisions by decided route and whether the policy escalated",
                    ["sentinel_kind", "route_decided", "escalated"], registry=REGISTRY)
LATENCY = Histogram("gateway_latency_seconds", "Latency per stage", ["stage", "route"], buckets=BUCKETS,
                    registry=REGISTRY)
TOKENS = Counter("gateway_tokens", "Tokens by stage and kind", ["stage", "kind"], registry=REGISTRY)
SPEND = Counter("gateway_spend_dollars", "Spend in USD by route and executor model (float; the ledger is Decimal)",
                ["route", "model"], registry=REGISTRY)
BASELINE = Counter("gateway_baseline_spend_dollars", "What the same requests would have cost on the baseline model",
                   registry=REGISTRY)
PROVIDER_ERRORS = Counter("gateway_provider_errors", "Requests whose executor failed, by provider",
                          ["provider"], registry=REGISTRY)
SENTINEL_FAILURES = Counter("gateway_sentinel_failures", "Sentinel calls with no valid decision",
                            registry=REGISTRY)
EXTRA_ATTEMPTS = Counter("gateway_executor_extra_attempts",
                         "Executor calls beyond the first (retries and fallbacks)", registry=REGISTRY)
# Provider faults (issue 7): every provider call from the rows' attempt logs, and circuit states.
PROVIDER_CALLS = Counter("gateway_provider_calls", "Provider calls by role, provider, model and outcome",
                         ["role", "provider", "model", "outcome"], registry=REGISTRY)
PROVIDER_CALL_ERRORS = Counter("gateway_provider_call_errors",
                               "Failed provider calls by provider and error kind (HTTP status when there was one)",
                               ["provider", "kind"], registry=REGISTRY)
RETRIES = Counter("gateway_retries", "Provider calls that retried a failed call, by role and provider",
                  ["role", "provider"], registry=REGISTRY)
PROVIDER_CALL_LATENCY = Histogram("gateway_provider_call_seconds", "Latency of each provider call",
                                  ["role", "provider"], buckets=BUCKETS, registry=REGISTRY)
CIRCUIT_STATE = Gauge("gateway_circuit_state", "Circuit per provider and model: 0 closed, 1 half-open, 2 open",
                      ["provider", "model"], registry=REGISTRY)
CIRCUIT_TRANSITIONS = Counter("gateway_circuit_transitions", "Circuit state changes, by the state entered",
                              ["provider", "model", "state"], registry=REGISTRY)
_CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: `labels()` validates and locks on every call, and
    `observe` below runs on the request path a dozen times per request. The label sets are the
    metrics' own (bounded) cardinality; children are never removed here."""
    key = (metric, values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found


def circuit_changed(provider: str, model: str, state: str) -> None:
    """`BreakerRegistry.on_change` hook: the gauge follows each provider+model's circuit."""
    child(CIRCUIT_STATE, provider, model).set(_CIRCUIT_VALUES.get(state, 0))
    child(CIRCUIT_TRANSITIONS, provider, model, state).inc()


LOG_WRITTEN = Gauge("gateway_decision_log_written", "Decision rows written by this process", registry=REGISTRY)
LOG_SPOOLED = Gauge("gateway_decision_log_spooled", "Decision rows spooled to disk by this process",
                    registry=REGISTRY)


def observe(record: DecisionRecord) -> None:
    route = record.route
    child(REQUESTS, record.endpoint, route, record.status).inc()
    if record.sentinel_kind != "bypass":
        child(DECISIONS, record.sentinel_kind, record.route_decided or "invalid",
              "true" if record.escalated else "false").inc()
    if record.sentinel_error:
        SENTINEL_FAILURES.inc()
    child(LATENCY, "sentinel", route).observe(record.sentinel_ms / 1000)
    child(LATENCY, "executor", route).observe(record.executor_ms / 1000)
    child(LATENCY, "overhead", route).observe(record.overhead_ms / 1000)
    child(LATENCY, "total", route).observe(record.total_ms / 1000)
    for stage, values in (
        ("sentinel", (record.sentinel_input_tokens, record.sentinel_output_tokens, record.sentinel_cached_tokens)),
        ("executor", (record.executor_input_tokens, record.executor_output_tokens, record.executor_cached_tokens)),
    ):
        for kind, value in zip(("input", "output", "cached"), values, strict=True):
            if value:
                child(TOKENS, stage, kind).inc(value)
    child(SPEND, route, record.executor_model or "none").inc(float(record.cost))
    BASELINE.inc(float(record.baseline_cost))
    if record.status == "error" and record.executor_provider:
        child(PROVIDER_ERRORS, record.executor_provider).inc()
    if record.attempts > 1:
        EXTRA_ATTEMPTS.inc(record.attempts - 1)
    for attempt in record.attempt_log:
        role, provider = attempt.get("role", ""), attempt.get("provider", "")
        outcome = attempt.get("outcome", "")
        child(PROVIDER_CALLS, role, provider, attempt.get("model", ""), outcome).inc()
        if outcome in ("error", "timeout", "partial"):
            child(PROVIDER_CALL_ERRORS, provider, str(attempt.get("status") or attempt.get("error") or "error")).inc()
        if attempt.get("retry"):
            child(RETRIES, role, provider).inc()
        if outcome != "circuit_open":
            child(PROVIDER_CALL_LATENCY, role, provider).observe(float(attempt.get("ms", 0.0)) / 1000)


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JsonResponse({"error": {"code": "unauthorized", "message": "metrics token required"}}, status=401)
    from routing.runtime import get_runtime

    recorder = get_runtime().recorder
    LOG_WRITTEN.set(recorder.written)
    LOG_SPOOLED.set(recorder.spooled)
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
