"""Shadow routing: the candidate policy's decision for one sampled live request, off the response path.

Runs in the Celery task `audits.shadow_route` (never in a request, never calling an executor):

1. `shadow_process` returns at once when the request already has a `ShadowDecision`; otherwise it
   claims the `ShadowCapture` with one conditional update (unclaimed, or claimed longer than
   `CLAIM_TIMEOUT` ago by a worker presumed dead), so a duplicate or redelivered task stops here
   and the candidate's sentinel is never paid for twice.
2. It loads production's decision row; when the recorder has not written it yet, it releases the
   claim and answers `NOT_YET` (the task retries).
3. When the candidate's sentinel settings (mode, provider, model, model version, prompt version)
   equal production's, production's stored sentinel decision is re-used (parsed strictly, as the
   engine would): no model call, zero cost. Otherwise the candidate's own sentinel classifies the
   captured prompt, through the engine's sentinel code and `routing.runtime` provider configs;
   that call's cost is the experiment's spend.
4. `apply_policy` with the candidate's settings and the current catalog gives the candidate route.
5. The `ShadowDecision` is stored (the unique constraint makes a second store a no-op) and the
   captured prompt is emptied.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from routing.engine.catalog import Catalog, PolicySettings
from routing.engine.decision import InvalidDecision, RouteDecision
from routing.engine.policy import apply_policy
from routing.engine.pricing import cost_of, quantize
from routing.models import Decision, PolicyStatus, PolicyVersion
from routing.selectors import catalog_snapshot, policy_to_settings

from .models import ShadowCapture, ShadowDecision

SENTINEL_FIELDS = ("sentinel_mode", "sentinel_provider", "sentinel_model", "sentinel_model_version",
                   "sentinel_prompt_version")
CLAIM_TIMEOUT = timedelta(minutes=10)
NOT_YET = "not yet: the production decision row is not written"


def sentinel_settings_differ(*, candidate_id: int, production_id: int | None) -> bool:
    """True when the candidate's sentinel would not decide like production's (so it must be called)."""
    candidate = PolicyVersion.objects.filter(pk=candidate_id).values(*SENTINEL_FIELDS).first()
    production = PolicyVersion.objects.all()
    production = (production.filter(pk=production_id) if production_id
                  else production.filter(status=PolicyStatus.ACTIVE))
    current = production.values(*SENTINEL_FIELDS).first()
    return candidate is None or current is None or candidate != current


def stored_decision(row: Decision, catalog: Catalog) -> tuple[RouteDecision | None, str | None]:
    """Production's sentinel decision as the engine saw it (None and the failure when it had none)."""
    if row.sentinel_decision is None:
        return None, row.sentinel_error or "no sentinel decision"
    try:
        return RouteDecision.parse(row.sentinel_decision, routes=catalog.route_names(), tools=catalog.tools), None
    except InvalidDecision as exc:
        return None, row.sentinel_error or f"invalid sentinel output: {exc.reason}"


@dataclasses.dataclass(frozen=True)
class CandidateSentinel:
    decision: RouteDecision | None
    failure: str | None
    cost: Decimal


def candidate_sentinel(*, prompt: str, policy: PolicySettings, catalog: Catalog) -> CandidateSentinel:
    """Classify `prompt` with the candidate's sentinel (blocking: its own event loop; workers only).

    Mirrors the engine's modes: local; tiered (local when confident enough, else the LLM); llm.
    The guard runs first, and a guard flag forces `route_override_attempted`, as in production.
    """
    from routing.engine.guard import guard_text
    from routing.engine.sentinel import (
        LLMSentinel,
        SentinelResult,
        local_result,
        local_text,
        shared_local_model,
    )
    from routing.providers.base import Message
    from routing.providers.registry import build_provider
    from routing.runtime import provider_configs

    guarded = guard_text(prompt)
    messages = [Message(role="user", content=guarded.text)]

    async def run() -> SentinelResult:
        if policy.sentinel_mode in ("local", "tiered"):
            local = local_result(shared_local_model().get(), local_text(messages))
            confident = local.decision is not None and local.decision.confidence >= policy.local_threshold
            if policy.sentinel_mode == "local" or confident:
                return local
        config = provider_configs().get(policy.sentinel_provider)
        if config is None:
            return SentinelResult(kind="llm", model=policy.sentinel_model_version, decision=None,
                                  failure=f"sentinel provider {policy.sentinel_provider!r} unavailable")
        provider = build_provider(policy.sentinel_provider, config)
        try:
            return await LLMSentinel(provider).decide(messages, catalog=catalog, policy=policy)
        finally:
            await provider.aclose()

    result = asyncio.run(run())
    decision = result.decision
    if guarded.flags and decision is not None and not decision.route_override_attempted:
        decision = dataclasses.replace(decision, route_override_attempted=True)
    cost = cost_of(result.usage, catalog.prices.get(result.price_model or policy.sentinel_model))
    return CandidateSentinel(decision, result.failure, cost)


def shadow_claim(*, experiment_id: int, request_id: str) -> bool:
    now = timezone.now()
    return ShadowCapture.objects.filter(experiment_id=experiment_id, request_id=request_id).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_TIMEOUT)
    ).update(claimed_at=now) == 1


def shadow_process(*, experiment_id: int, request_id: str) -> str:
    """Steps 1-5 of the module docstring; returns what happened (the task's result)."""
    if ShadowDecision.objects.filter(experiment_id=experiment_id, request_id=request_id).exists():
        return "skipped: already decided"
    if not shadow_claim(experiment_id=experiment_id, request_id=request_id):
        return "skipped: another worker has it, or no such capture"
    capture = ShadowCapture.objects.select_related("experiment__candidate").get(
        experiment_id=experiment_id, request_id=request_id)
    row = Decision.objects.filter(request_id=request_id).first()
    if row is None:
        ShadowCapture.objects.filter(pk=capture.pk).update(claimed_at=None)
        return NOT_YET

    catalog = catalog_snapshot()
    policy = policy_to_settings(capture.experiment.candidate)
    called = capture.needs_sentinel
    if called:
        sentinel = candidate_sentinel(prompt=capture.prompt, policy=policy, catalog=catalog)
        decision, failure, cost = sentinel.decision, sentinel.failure, sentinel.cost
    else:
        decision, failure = stored_decision(row, catalog)
        cost = quantize(Decimal(0))
    outcome = apply_policy(decision, policy=policy, catalog=catalog, failure=failure)
    try:
        with transaction.atomic():
            ShadowDecision.objects.create(
                experiment_id=experiment_id, request_id=request_id, production_route=row.route,
                candidate_route=outcome.route, candidate_reason=outcome.reason[:300],
                candidate_escalated=outcome.escalated,
                candidate_decision=decision.to_dict() if decision is not None else None,
                candidate_sentinel_called=called, candidate_sentinel_cost=cost,
            )
            ShadowCapture.objects.filter(pk=capture.pk).update(prompt="")
    except IntegrityError:
        return "skipped: already decided"
    return "decided"
