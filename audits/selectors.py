"""Reads for governance: roles, proposals with their diff, the audit trail, and the traffic sample
(decision rows, observed tokens, judge scores) that evaluations replay."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Avg, Count, Q, QuerySet

from routing.models import Decision, PolicyStatus, PolicyVersion

from .models import AuditEvent, Proposal, ProposalStatus

ENGINEER, REVIEWER, FINANCE = "engineer", "reviewer", "finance"
GOVERNANCE_ROLES = (ENGINEER, REVIEWER, FINANCE)

# The settings a proposal may change, with the labels the diff shows. Everything that decides
# where traffic goes; bookkeeping fields (number, status, author, times) are not settings.
POLICY_FIELDS: dict[str, str] = {
    "confidence_threshold": "Confidence threshold (escalate below)",
    "fallback_route": "Fallback / escalation route",
    "sentinel_mode": "Sentinel mode",
    "sentinel_provider": "Sentinel provider",
    "sentinel_model": "Sentinel model (pricing)",
    "sentinel_model_version": "Sentinel model version",
    "sentinel_prompt_version": "Sentinel prompt version",
    "sentinel_max_tokens": "Sentinel max tokens",
    "sentinel_timeout_ms": "Sentinel timeout (ms)",
    "local_threshold": "Local classifier threshold",
    "registry_snapshot": "Route registry snapshot",
    "cache_similarity_threshold": "Decision-cache similarity threshold",
    "speculative": "Speculative execution",
    "chained": "Chained self-execution",
    "judge_sample_rate": "Judge sample rate",
    "request_deadline_ms": "Request deadline (ms)",
}

# How many logged decisions an evaluation replays (the most recent ones).
TRAFFIC_SAMPLE_SIZE = 5000


def user_roles(user: AbstractBaseUser | AnonymousUser | None) -> frozenset[str]:
    """The governance roles of a user; a superuser holds all of them (four eyes still apply)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset(GOVERNANCE_ROLES)
    return frozenset(user.groups.filter(name__in=GOVERNANCE_ROLES).values_list("name", flat=True))


def json_value(value: Any) -> Any:
    """A model value in JSON form (Decimals as strings, as the API renders money)."""
    if isinstance(value, Decimal):
        return str(value)
    return value


def policy_settings(policy: PolicyVersion) -> dict[str, Any]:
    return {name: json_value(getattr(policy, name)) for name in POLICY_FIELDS}


def active_policy_version() -> PolicyVersion | None:
    return PolicyVersion.objects.filter(status=PolicyStatus.ACTIVE).first()


def proposal_list(*, status: str | None = None) -> QuerySet[Proposal]:
    qs = Proposal.objects.select_related("candidate", "base_version", "author", "reviewer", "restores")
    if status:
        qs = qs.filter(status=status)
    return qs


def proposal_get(*, proposal_id: int) -> Proposal | None:
    return proposal_list().filter(pk=proposal_id).first()


@dataclass(frozen=True)
class DiffRow:
    field: str
    label: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "label": self.label, "before": self.before, "after": self.after}


def _readable(value: Any) -> Any:
    if isinstance(value, dict) and "routes" in value:
        routes = value.get("routes") or []
        return ", ".join(f"{r.get('name')}→{r.get('model_version')}" for r in routes if isinstance(r, dict)) or "—"
    return value


def policy_diff(*, base: PolicyVersion | None, candidate: PolicyVersion) -> list[DiffRow]:
    """The settings that differ between base and candidate, in a readable form."""
    after = policy_settings(candidate)
    before = policy_settings(base) if base is not None else {}
    rows = []
    for name, label in POLICY_FIELDS.items():
        if before.get(name) != after[name]:
            rows.append(DiffRow(name, label, _readable(before.get(name)), _readable(after[name])))
    return rows


def proposal_diff(proposal: Proposal) -> list[DiffRow]:
    return policy_diff(base=proposal.base_version, candidate=proposal.candidate)


def audit_event_list(*, proposal_id: int | None = None, outcome: str | None = None,
                     action: str | None = None) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.select_related("proposal", "policy_version")
    if proposal_id is not None:
        qs = qs.filter(proposal_id=proposal_id)
    if outcome:
        qs = qs.filter(outcome=outcome)
    if action:
        qs = qs.filter(action=action)
    return qs


def proposals_due(*, now: Any) -> list[int]:
    return list(
        Proposal.objects.filter(status=ProposalStatus.APPROVED, activate_at__isnull=False, activate_at__lte=now)
        .order_by("activate_at", "id")
        .values_list("id", flat=True)
    )


# -- the traffic an evaluation replays -------------------------------------------------------
def traffic_sample(*, limit: int = TRAFFIC_SAMPLE_SIZE) -> list[dict[str, Any]]:
    """The most recent routed decisions (explicit-model requests bypass routing: left out)."""
    return list(
        Decision.objects.exclude(sentinel_kind="bypass")
        .order_by("-created_at")
        .values("sentinel_decision", "sentinel_error", "route")[:limit]
    )


@dataclass(frozen=True)
class TokenProfile:
    """Average tokens of executed requests per route, and of sentinel calls, from the decision log."""

    routes: dict[str, dict[str, int]]  # route -> {n, input, output, cached, cache_write}
    overall: dict[str, int] | None
    sentinel: dict[str, int] | None  # {n, input, output, cached}


def _avg(value: Any) -> int:
    return int(round(float(value or 0)))


def observed_token_profile(*, limit: int = TRAFFIC_SAMPLE_SIZE) -> TokenProfile:
    ids = list(Decision.objects.order_by("-created_at").values_list("id", flat=True)[:limit])
    executed = Decision.objects.filter(id__in=ids, status="ok").filter(
        Q(executor_input_tokens__gt=0) | Q(executor_output_tokens__gt=0)
    )
    fields = {
        "n": Count("id"),
        "input": Avg("executor_input_tokens"),
        "output": Avg("executor_output_tokens"),
        "cached": Avg("executor_cached_tokens"),
        "cache_write": Avg("executor_cache_write_tokens"),
    }
    routes = {}
    for row in executed.values("route").annotate(**fields).order_by("route"):
        routes[row["route"]] = {k: (row[k] if k == "n" else _avg(row[k])) for k in fields}
    total = executed.aggregate(**fields)
    overall = {k: (total[k] if k == "n" else _avg(total[k])) for k in fields} if total["n"] else None
    sentinel_rows = Decision.objects.filter(id__in=ids, sentinel_input_tokens__gt=0).aggregate(
        n=Count("id"), input=Avg("sentinel_input_tokens"), output=Avg("sentinel_output_tokens"),
        cached=Avg("sentinel_cached_tokens"),
    )
    sentinel = (
        {k: (sentinel_rows[k] if k == "n" else _avg(sentinel_rows[k])) for k in sentinel_rows}
        if sentinel_rows["n"] else None
    )
    return TokenProfile(routes=routes, overall=overall, sentinel=sentinel)


def judge_scores_by_route() -> dict[str, dict[str, float]]:
    """Average judge score (1-5) and how many audits, per route; routes never judged are absent."""
    rows = (
        Decision.objects.filter(judge_score__isnull=False)
        .values("route").annotate(n=Count("id"), score=Avg("judge_score")).order_by("route")
    )
    return {row["route"]: {"n": row["n"], "score": float(row["score"])} for row in rows}


def proposal_actions_for(user: AbstractBaseUser | AnonymousUser | None, proposal: Proposal) -> dict[str, bool]:
    """Which buttons to show this user on this proposal. Display only: the services decide."""
    roles = user_roles(user)
    is_author = user is not None and user.is_authenticated and proposal.author_id == user.pk
    status = proposal.status
    evaluation = proposal.evaluation or {}
    risk = evaluation.get("risk") or {}
    blocked_on_quality = bool(risk.get("requires_quality_delta") and not risk.get("quality_known"))
    reviewable = REVIEWER in roles and not is_author
    return {
        "propose": ENGINEER in roles and status == ProposalStatus.DRAFT,
        "reevaluate": ENGINEER in roles and status == ProposalStatus.PROPOSED and evaluation.get("status") == "failed",
        "approve": reviewable and status == ProposalStatus.EVALUATED and evaluation.get("status") == "complete"
        and not blocked_on_quality,
        "reject": reviewable and status in (ProposalStatus.PROPOSED, ProposalStatus.EVALUATED, ProposalStatus.APPROVED),
        "activate": ENGINEER in roles and status == ProposalStatus.APPROVED,
        "rollback": ENGINEER in roles and status == ProposalStatus.ACTIVE,
    }
