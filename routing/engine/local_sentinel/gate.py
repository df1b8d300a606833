"""The sentinel evaluation gate: run any sentinel over a labelled JSONL file and score it.

`run_gate` is what `manage.py eval_sentinel` calls. It takes rows of `{"prompt", "route"}`
(other keys ignored) and a `decide` coroutine returning a `SentinelResult`, and returns
the `evaluate.summary` figures plus what the routing policy would do with each decision:

1. rows whose route is not a known route are set aside and reported (never crash);
2. every prompt is decided (`concurrency` at a time), its latency measured;
3. a missing/invalid decision counts as a misclassification (predicted `(invalid)`);
4. the policy is applied: escalation rate;
5. cost: each prompt's estimated tokens (prompt + the decision's estimated output) priced
   on the route the policy chose, plus the sentinel's own usage, against the same tokens on
   the baseline model.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

from routing.engine import tokens as token_estimates
from routing.engine.catalog import Catalog, PolicySettings
from routing.engine.policy import apply_policy
from routing.engine.pricing import Usage, cost_of, quantize
from routing.engine.sentinel import SentinelResult

from . import evaluate
from .model import DEFAULT_ROUTES

INVALID = "(invalid)"
DEFAULT_OUTPUT_TOKENS = 500


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def split_rows(rows: Sequence[dict[str, Any]], routes: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(usable rows, {unknown or missing route: count}); rows without a prompt count under "(no prompt)"."""
    usable, unknown = [], Counter()
    for row in rows:
        if not isinstance(row.get("prompt"), str) or not row["prompt"]:
            unknown["(no prompt)"] += 1
        elif row.get("route") not in routes:
            unknown[str(row.get("route"))] += 1
        else:
            usable.append(row)
    return usable, dict(unknown)


async def run_gate(
    rows: Sequence[dict[str, Any]],
    decide: Callable[[str], Awaitable[SentinelResult]],
    *,
    catalog: Catalog,
    policy: PolicySettings,
    concurrency: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    routes = list(dict.fromkeys([*catalog.route_names(), *DEFAULT_ROUTES]))
    usable, unknown = split_rows(rows, routes)
    results: list[tuple[SentinelResult, float] | None] = [None] * len(usable)
    semaphore = asyncio.Semaphore(concurrency)
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        async with semaphore:
            started = time.perf_counter()
            result = await decide(usable[i]["prompt"])
            results[i] = (result, (time.perf_counter() - started) * 1000)
        done += 1
        if progress is not None:
            progress(done, len(usable))

    await asyncio.gather(*(one(i) for i in range(len(usable))))

    predictions, latencies, kinds = [], [], Counter()
    escalated = 0
    routed_cost = baseline_cost = sentinel_cost = Decimal(0)
    baseline_price = catalog.prices.get(catalog.baseline_model)
    failures = Counter()
    for row, item in zip(usable, results):
        assert item is not None
        result, latency = item
        latencies.append(latency)
        kinds[result.kind] += 1
        decision = result.decision
        if decision is None:
            failures[(result.failure or "no decision").split(":")[0]] += 1
        predictions.append((decision.route if decision else INVALID, row["route"],
                            decision.confidence if decision else 0.0))
        outcome = apply_policy(decision, policy=policy, catalog=catalog, failure=result.failure)
        escalated += outcome.escalated
        spec = catalog.routes.get(outcome.route)
        prompt_tokens = token_estimates.estimate_tokens(row["prompt"])
        output_tokens = decision.estimated_output_tokens if decision else DEFAULT_OUTPUT_TOKENS
        usage = Usage(input_tokens=prompt_tokens, output_tokens=output_tokens)
        price = catalog.prices.get(spec.model) if spec is not None and spec.provider != "guardrail" else None
        s_cost = cost_of(result.usage, catalog.prices.get(result.price_model or policy.sentinel_model))
        sentinel_cost += s_cost
        routed_cost += cost_of(usage, price) + s_cost
        baseline_cost += cost_of(usage, baseline_price)

    present = {p for p, _, _ in predictions} | {t for _, t, _ in predictions}
    labels = [r for r in routes if r in present] + ([INVALID] if INVALID in present else [])
    report = evaluate.summary(predictions, labels) if predictions else {
        "n": 0, "accuracy": 0.0, "misclassification": 0.0, "ece": 0.0, "per_route": {}, "labels": [],
        "confusion": [], "buckets": [],
    }
    n = len(predictions)
    report.update({
        "rows": len(rows),
        "skipped": sum(unknown.values()),
        "unknown_routes": unknown,
        "failures": dict(failures),
        "sentinel_kinds": dict(kinds),
        "escalation_rate": escalated / n if n else 0.0,
        "latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                       "max": max(latencies, default=0.0)},
        "cost": {
            "routed": format(quantize(routed_cost), "f"),
            "sentinel": format(quantize(sentinel_cost), "f"),
            "baseline": format(quantize(baseline_cost), "f"),
            "baseline_model": catalog.baseline_model,
            "saving": f"{(1 - routed_cost / baseline_cost) * 100:.1f}%" if baseline_cost else "n/a",
        },
    })
    return report


def format_gate(report: dict[str, Any]) -> str:
    lines = [evaluate.format_report(report) if report["n"] else "no usable rows", ""]
    lines.append(f"escalation rate (policy applied): {report['escalation_rate']:.4f}")
    lat = report["latency_ms"]
    lines.append(f"latency ms: p50 {lat['p50']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}")
    cost = report["cost"]
    lines.append(f"cost: routed ${cost['routed']} (sentinel ${cost['sentinel']}) vs baseline "
                 f"{cost['baseline_model']} ${cost['baseline']}  saving {cost['saving']}")
    lines.append(f"sentinel kinds: {report['sentinel_kinds']}")
    if report["failures"]:
        lines.append(f"failed decisions: {report['failures']}")
    if report["unknown_routes"]:
        lines.append(f"skipped {report['skipped']} of {report['rows']} rows (unknown route or no prompt): "
                     f"{report['unknown_routes']}")
    return "\n".join(lines)
