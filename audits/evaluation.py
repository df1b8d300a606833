"""Before/after evaluation of a candidate routing policy against the current one.

1. Labelled evaluation set (`EVALSET_PATH`, falling back to `FALLBACK_EVALSET_PATH`): every prompt
   goes through the real engine — `Gateway.route`, i.e. the policy's sentinel on the providers of
   `routing.runtime.provider_configs()` (the emulator when no keys are set), then `apply_policy`.
   Policies that share a sentinel configuration share its calls: the second one only re-applies
   its policy to the same sentinel decision, so a threshold change costs one pass, not two.
2. Logged traffic: the stored `sentinel_decision` of recent `Decision` rows is replayed through
   each policy's `apply_policy` (no sentinel or executor calls).
3. Metrics per policy and data set: misclassification against the labels, accepted-but-wrong
   routes, escalation rate, route shares, cheap-tier share, projected cost per 1M requests
   (per-route average observed tokens × the price catalog in effect, plus the sentinel call) and
   projected quality (judge scores per route; "unknown" when a route with traffic has none).
4. The comparison: a before/after table, and the risk flags the approval rule reads (a lower
   threshold or a shift to cheaper routes needs a known quality delta).

The engine never touches the ORM; the database reads happen here, before and after the async part.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from django.utils import timezone

from routing.engine.catalog import Catalog, PolicySettings, Price
from routing.engine.decision import InvalidDecision, RouteDecision
from routing.engine.dispatch import Gateway, GatewayRequest
from routing.engine.policy import PolicyOutcome, apply_policy
from routing.engine.pricing import Usage, cost_of, quantize
from routing.models import PolicyVersion
from routing.providers.base import ChatProvider, Message
from routing.providers.registry import build_provider
from routing.selectors import catalog_snapshot, policy_to_settings, prices_in_effect

from . import selectors

REPO_ROOT = Path(__file__).resolve().parent.parent
# The project's held-out regression set (never used to fit the local sentinel); the small
# hand-written set ships with the app for installs without `data/`.
EVALSET_PATH = REPO_ROOT / "data" / "sentinel" / "regression.jsonl"
FALLBACK_EVALSET_PATH = Path(__file__).resolve().parent / "evalsets" / "default.jsonl"
EVALSET_CONCURRENCY = 16
MAX_EXAMPLES = 20
# Used only when the decision log has no executed request at all (a fresh install).
NOMINAL_TOKENS = {"input": 1000, "output": 400, "cached": 0, "cache_write": 0}
NOMINAL_SENTINEL_TOKENS = {"input": 700, "output": 40, "cached": 0}
MILLION = Decimal(1_000_000)
CENTS = Decimal("0.01")

T = TypeVar("T")


class EvaluationError(Exception):
    """The evaluation cannot run (no evaluation set, unreadable file...)."""


@dataclass(frozen=True)
class LabelledPrompt:
    prompt: str
    route: str


def evalset_path() -> Path:
    for path in (EVALSET_PATH, FALLBACK_EVALSET_PATH):
        if Path(path).is_file():
            return Path(path)
    raise EvaluationError(f"no evaluation set: neither {EVALSET_PATH} nor {FALLBACK_EVALSET_PATH} exists")


def load_evalset(path: Path) -> list[LabelledPrompt]:
    items = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                items.append(LabelledPrompt(prompt=str(row["prompt"]), route=str(row["route"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise EvaluationError(f"{path.name} line {number}: not a {{prompt, route}} object ({exc})") from None
    if not items:
        raise EvaluationError(f"{path.name} has no labelled prompts")
    return items


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even if this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# -- 1. the labelled set through the real sentinel ------------------------------------------
def _sentinel_key(policy: PolicySettings) -> tuple[Any, ...]:
    return (policy.sentinel_mode, policy.sentinel_provider, policy.sentinel_model_version,
            policy.sentinel_prompt_version, policy.sentinel_max_tokens, policy.sentinel_timeout_s,
            policy.local_threshold)


async def classify_evalset(
    prompts: Sequence[str], *, policies: Sequence[PolicySettings], catalog: Catalog,
    providers: dict[str, ChatProvider],
) -> tuple[list[list[PolicyOutcome]], int, int]:
    """Each policy's outcome for each prompt; also the sentinel calls made and how many failed."""
    results: list[list[PolicyOutcome] | None] = [None] * len(policies)
    calls = failures = 0
    semaphore = asyncio.Semaphore(EVALSET_CONCURRENCY)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, policy in enumerate(policies):
        groups.setdefault(_sentinel_key(policy), []).append(index)
    for indices in groups.values():
        lead = policies[indices[0]]
        gateway = Gateway(catalog=catalog, policy=lead, providers=providers, now=timezone.now)

        async def one(prompt: str, gateway: Gateway = gateway) -> Any:
            async with semaphore:
                return await gateway.route(GatewayRequest(messages=[Message(role="user", content=prompt)],
                                                          endpoint="evaluation"))

        routed = await asyncio.gather(*[one(p) for p in prompts])
        calls += len(routed)
        failures += sum(1 for r in routed if r.sentinel is None or r.sentinel.decision is None)
        results[indices[0]] = [r.outcome for r in routed]
        for index in indices[1:]:
            results[index] = [
                apply_policy(r.sentinel.decision if r.sentinel else None, policy=policies[index], catalog=catalog,
                             failure=r.sentinel.failure if r.sentinel else None)
                for r in routed
            ]
    return [r or [] for r in results], calls, failures


async def _classify_with_providers(prompts: Sequence[str], policies: Sequence[PolicySettings],
                                   catalog: Catalog) -> tuple[list[list[PolicyOutcome]], int, int]:
    from routing.runtime import provider_configs

    providers = {name: build_provider(name, cfg) for name, cfg in provider_configs().items()}
    try:
        return await classify_evalset(prompts, policies=policies, catalog=catalog, providers=providers)
    finally:
        for provider in providers.values():
            await provider.aclose()


# -- 2. logged traffic replayed through the policy ------------------------------------------
def replay_traffic(rows: Sequence[dict[str, Any]], *, policy: PolicySettings, catalog: Catalog) -> list[PolicyOutcome]:
    routes = catalog.route_names()
    outcomes = []
    for row in rows:
        failure = row.get("sentinel_error") or None
        try:
            decision: RouteDecision | None = RouteDecision.parse(row.get("sentinel_decision"), routes=routes)
        except InvalidDecision as exc:
            decision = None
            failure = failure or f"invalid stored decision: {exc.reason}"
        outcomes.append(apply_policy(decision, policy=policy, catalog=catalog, failure=failure))
    return outcomes


# -- 3. metrics ------------------------------------------------------------------------------
def route_unit_cost(route: str, *, catalog: Catalog, prices: dict[str, Price],
                    profile: selectors.TokenProfile) -> tuple[Decimal, str]:
    """Projected executor cost of one request on `route`, and where its token counts come from."""
    spec = catalog.routes.get(route)
    if spec is None:
        return Decimal(0), "not in registry"
    if spec.provider == "guardrail":
        return Decimal(0), "guardrail (no model call)"
    tokens = profile.routes.get(route)
    basis = f"observed average of {tokens['n']} requests" if tokens else ""
    if not tokens and profile.overall:
        tokens, basis = profile.overall, "average over all routes (none observed on this route)"
    if not tokens:
        tokens, basis = NOMINAL_TOKENS, "nominal 1,000 in / 400 out (no traffic observed yet)"
    price = prices.get(spec.model)
    if price is None:
        return Decimal(0), f"no price for {spec.model}"
    cached = min(tokens["cached"], tokens["input"])
    usage = Usage(input_tokens=tokens["input"], output_tokens=tokens["output"], cached_tokens=cached,
                  cache_write_tokens=min(tokens["cache_write"], tokens["input"] - cached))
    return cost_of(usage, price), basis


def sentinel_unit_cost(policy: PolicySettings, *, prices: dict[str, Price],
                       profile: selectors.TokenProfile) -> Decimal:
    tokens = profile.sentinel or NOMINAL_SENTINEL_TOKENS
    usage = Usage(input_tokens=tokens["input"], output_tokens=tokens["output"],
                  cached_tokens=min(tokens["cached"], tokens["input"]))
    return cost_of(usage, prices.get(policy.sentinel_model))


def _share(counter: Counter[str], n: int) -> dict[str, float]:
    return {route: round(count / n, 4) for route, count in sorted(counter.items())} if n else {}


def policy_metrics(
    outcomes: Sequence[PolicyOutcome], labels: Sequence[str] | None, *, policy: PolicySettings, catalog: Catalog,
    prices: dict[str, Price], profile: selectors.TokenProfile, judge: dict[str, dict[str, float]],
) -> dict[str, Any]:
    n = len(outcomes)
    routes = Counter(o.route for o in outcomes)
    share = _share(routes, n)
    metrics: dict[str, Any] = {
        "n": n,
        "escalation_rate": round(sum(o.escalated for o in outcomes) / n, 4) if n else None,
        "route_share": share,
        "cheap_tier_share": round(sum(c for r, c in routes.items()
                                      if r in catalog.routes and catalog.routes[r].cheap_tier) / n, 4) if n else None,
    }
    if labels is not None and n:
        wrong = [o for o, label in zip(outcomes, labels, strict=True) if o.route != label]
        metrics["misclassification_rate"] = round(len(wrong) / n, 4)
        metrics["accepted_wrong_rate"] = round(sum(not o.escalated for o in wrong) / n, 4)
    if not n:
        metrics.update({"cost_per_million": None, "cost_basis": {}, "quality": {"score": None, "known": False,
                                                                               "missing_routes": []}})
        return metrics
    per_request = Decimal(0)
    basis = {}
    for route, count in routes.items():
        unit, basis[route] = route_unit_cost(route, catalog=catalog, prices=prices, profile=profile)
        per_request += unit * count / n
    per_request += sentinel_unit_cost(policy, prices=prices, profile=profile)
    metrics["cost_per_million"] = str((quantize(per_request) * MILLION).quantize(CENTS))
    metrics["cost_basis"] = basis
    missing = sorted(r for r in routes if r not in judge)
    score = None if missing else round(sum(judge[r]["score"] * c / n for r, c in routes.items()), 3)
    metrics["quality"] = {"score": score, "known": score is not None, "missing_routes": missing}
    return metrics


# -- 4. the comparison -----------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _pp(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "—"
    return f"{(after - before) * 100:+.1f} pp"


def _money(value: str | None) -> str:
    return "—" if value is None else f"${Decimal(value):,.2f}"


def _money_delta(before: str | None, after: str | None) -> str:
    if before is None or after is None:
        return "—"
    b, a = Decimal(before), Decimal(after)
    rel = f" ({(a - b) / b * 100:+.1f}%)" if b else ""
    sign = "+" if a >= b else "-"
    return f"{sign}${abs(a - b):,.2f}{rel}"


def comparison_table(current: dict[str, Any], candidate: dict[str, Any], *, dataset: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(metric: str, before: str, after: str, delta: str, *, key: str = "") -> None:
        rows.append({"dataset": dataset, "metric": metric, "current": before, "candidate": after, "delta": delta,
                     "changed": before != after, "key": key})

    if current["n"] == 0:
        add("requests", "0", "0", "—", key="n")
        return rows
    add("requests", str(current["n"]), str(candidate["n"]), "—", key="n")
    if "misclassification_rate" in current:
        add("misclassification (vs labels)", _pct(current["misclassification_rate"]),
            _pct(candidate["misclassification_rate"]),
            _pp(current["misclassification_rate"], candidate["misclassification_rate"]), key="misclassification")
        add("accepted on a wrong route", _pct(current["accepted_wrong_rate"]), _pct(candidate["accepted_wrong_rate"]),
            _pp(current["accepted_wrong_rate"], candidate["accepted_wrong_rate"]), key="accepted_wrong")
    add("escalation rate", _pct(current["escalation_rate"]), _pct(candidate["escalation_rate"]),
        _pp(current["escalation_rate"], candidate["escalation_rate"]), key="escalation")
    add("cheap-tier share", _pct(current["cheap_tier_share"]), _pct(candidate["cheap_tier_share"]),
        _pp(current["cheap_tier_share"], candidate["cheap_tier_share"]), key="cheap_tier")
    for route in sorted(set(current["route_share"]) | set(candidate["route_share"])):
        before, after = current["route_share"].get(route, 0.0), candidate["route_share"].get(route, 0.0)
        add(f"share: {route}", _pct(before), _pct(after), _pp(before, after), key=f"share:{route}")
    add("projected cost per 1M requests", _money(current["cost_per_million"]), _money(candidate["cost_per_million"]),
        _money_delta(current["cost_per_million"], candidate["cost_per_million"]), key="cost")
    cq, nq = current["quality"]["score"], candidate["quality"]["score"]
    add("projected quality (judge 1-5)", "unknown" if cq is None else f"{cq:.2f}",
        "unknown" if nq is None else f"{nq:.2f}",
        "unknown" if cq is None or nq is None else f"{nq - cq:+.2f}", key="quality")
    return rows


def risk_assessment(*, current_policy: PolicySettings, candidate_policy: PolicySettings,
                    metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Does the candidate trade quality for cost? If so, approval needs a known quality delta."""
    primary = "traffic" if metrics["traffic"]["current"]["n"] else "evalset"
    cur, cand = metrics[primary]["current"], metrics[primary]["candidate"]
    reasons = []
    lowers = candidate_policy.confidence_threshold < current_policy.confidence_threshold
    if lowers:
        reasons.append(f"lowers the confidence threshold from {current_policy.confidence_threshold:.3f} "
                       f"to {candidate_policy.confidence_threshold:.3f}")
    cheaper = False
    if cur["n"]:
        if cur["cost_per_million"] is not None and cand["cost_per_million"] is not None and \
                Decimal(cand["cost_per_million"]) < Decimal(cur["cost_per_million"]):
            cheaper = True
            reasons.append(f"projected cost per 1M requests falls on {primary} "
                           f"({_money(cur['cost_per_million'])} → {_money(cand['cost_per_million'])})")
        if cand["cheap_tier_share"] > cur["cheap_tier_share"]:
            cheaper = True
            reasons.append(f"moves traffic to cheap-tier routes on {primary} "
                           f"({_pct(cur['cheap_tier_share'])} → {_pct(cand['cheap_tier_share'])})")
        if cand["escalation_rate"] < cur["escalation_rate"]:
            cheaper = True
            reasons.append(f"escalates less on {primary} "
                           f"({_pct(cur['escalation_rate'])} → {_pct(cand['escalation_rate'])})")
    cq, nq = cur["quality"]["score"], cand["quality"]["score"]
    delta = None if cq is None or nq is None else round(nq - cq, 3)
    missing = sorted(set(cur["quality"]["missing_routes"]) | set(cand["quality"]["missing_routes"]))
    return {
        "primary_dataset": primary,
        "lowers_threshold": lowers,
        "moves_to_cheaper_routes": cheaper,
        "requires_quality_delta": lowers or cheaper,
        "reasons": reasons,
        "quality_delta": delta,
        "quality_known": delta is not None,
        "quality_missing_routes": missing,
    }


# -- the whole run ---------------------------------------------------------------------------
def run_evaluation(*, current: PolicyVersion | None, candidate: PolicyVersion) -> dict[str, Any]:
    """Evaluate `candidate` against `current` (the base version); returns the JSON stored on the proposal."""
    started = timezone.now()
    current_policy = policy_to_settings(current) if current is not None else PolicySettings(version_id=None, number=0)
    candidate_policy = policy_to_settings(candidate)
    catalog = catalog_snapshot()
    prices = prices_in_effect()
    profile = selectors.observed_token_profile()
    judge = selectors.judge_scores_by_route()
    traffic = selectors.traffic_sample()
    path = evalset_path()
    evalset = load_evalset(path)

    prompts = [item.prompt for item in evalset]
    labels = [item.route for item in evalset]
    (eval_current, eval_candidate), calls, failures = _run(
        _classify_with_providers(prompts, [current_policy, candidate_policy], catalog)
    )
    replay_current = replay_traffic(traffic, policy=current_policy, catalog=catalog)
    replay_candidate = replay_traffic(traffic, policy=candidate_policy, catalog=catalog)

    common = {"catalog": catalog, "prices": prices, "profile": profile, "judge": judge}
    metrics = {
        "evalset": {
            "current": policy_metrics(eval_current, labels, policy=current_policy, **common),
            "candidate": policy_metrics(eval_candidate, labels, policy=candidate_policy, **common),
        },
        "traffic": {
            "current": policy_metrics(replay_current, None, policy=current_policy, **common),
            "candidate": policy_metrics(replay_candidate, None, policy=candidate_policy, **common),
        },
    }
    examples = [
        {"prompt": item.prompt[:160], "label": item.route, "current": a.route, "candidate": b.route,
         "candidate_reason": b.reason}
        for item, a, b in zip(evalset, eval_current, eval_candidate, strict=True) if a.route != b.route
    ][:MAX_EXAMPLES]
    try:
        shown_path = str(path.relative_to(REPO_ROOT))
    except ValueError:
        shown_path = str(path)
    return {
        "status": "complete",
        "started_at": started.isoformat(),
        "finished_at": timezone.now().isoformat(),
        "policies": {"current": current_policy.number, "candidate": candidate_policy.number},
        "evalset": {"path": shown_path, "n": len(evalset), "sentinel_calls": calls, "sentinel_failures": failures},
        "traffic": {"n": len(traffic), "sample_limit": selectors.TRAFFIC_SAMPLE_SIZE},
        "judge": {route: {"n": v["n"], "score": round(v["score"], 3)} for route, v in judge.items()},
        "metrics": metrics,
        "table": (comparison_table(metrics["evalset"]["current"], metrics["evalset"]["candidate"], dataset="evalset")
                  + comparison_table(metrics["traffic"]["current"], metrics["traffic"]["candidate"],
                                     dataset="traffic")),
        "risk": risk_assessment(current_policy=current_policy, candidate_policy=candidate_policy, metrics=metrics),
        "changed_examples": examples,
        "notes": [
            "Routes are priced on the live catalog, as the serving path routes on it.",
            "The sentinel call is priced on every request (an upper bound when a local sentinel answers).",
        ],
    }
