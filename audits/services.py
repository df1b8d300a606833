"""Writes for governance: the proposal state machine, activation, rollback and the audit trail.

    draft ─propose→ proposed ─(evaluation task)→ evaluated ─approve→ approved ─activate→ active
                       └──────────reject─────────────┴──────reject──────┘            ├→ superseded
                                                                                    └→ rolled_back

Every transition locks the proposal row (`select_for_update`; on SQLite, which ignores it, a no-op
UPDATE of the row takes the database write lock first), re-checks the state and the actor's right
to act, changes the proposal and its candidate `PolicyVersion` together, and appends an
`AuditEvent`. A refused attempt raises a `GovernanceError` *and* leaves an audit row, written after
the refused transaction has rolled back. Side effects (the evaluation task, the config-version bump
that makes every web process reload the policy) run in `transaction.on_commit`.

Role and four-eyes checks live here, not in views, so the API, the pages and the admin cannot differ.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec, TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from routing.engine.sentinel import PROMPTS
from routing.models import PolicyStatus, PolicyVersion, Provider, Route, SentinelMode
from routing.services import bump_config_version

from . import selectors
from .models import AuditEvent, AuditOutcome, Proposal, ProposalKind, ProposalStatus
from .selectors import ENGINEER, GOVERNANCE_ROLES, POLICY_FIELDS, REVIEWER

P = ParamSpec("P")
R = TypeVar("R")

# A claimed evaluation that has not finished after this long is presumed lost (worker died).
EVALUATION_CLAIM_TIMEOUT_S = 30 * 60


class GovernanceError(Exception):
    """A refused governance action; `status` is the HTTP status the API answers with."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class NotAllowed(GovernanceError):
    status = 403
    code = "forbidden"


class NotFound(GovernanceError):
    status = 404
    code = "not_found"


class Conflict(GovernanceError):
    status = 409
    code = "invalid_state"


class Invalid(GovernanceError):
    status = 400
    code = "invalid"


# -- the audit trail -------------------------------------------------------------------------
def audit_record(
    *, actor: AbstractBaseUser | None, action: str, outcome: str, source: str, proposal: Proposal | None = None,
    proposal_id: int | None = None, policy_version: PolicyVersion | None = None, old: Any = None, new: Any = None,
    message: str = "",
) -> AuditEvent:
    """Append one audit row (the only way rows are written)."""
    if actor is None:
        username = "system"
    elif not actor.is_authenticated:
        username, actor = "anonymous", None
    else:
        username = actor.get_username()
    return AuditEvent.objects.create(
        actor=actor,
        actor_username=username,
        action=action,
        outcome=outcome,
        source=source,
        proposal=proposal,
        proposal_id=proposal.pk if proposal is not None else proposal_id,
        policy_version=policy_version,
        old_value=old,
        new_value=new,
        message=message[:500],
    )


def _audited(action: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record a refused attempt (after its transaction rolled back), then re-raise it."""

    def decorator(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except GovernanceError as exc:
                proposal_id = kwargs.get("proposal_id")
                if proposal_id is not None and not Proposal.objects.filter(pk=proposal_id).exists():
                    proposal_id = None
                attempted = {k: _jsonable(v) for k, v in kwargs.items() if k not in ("actor", "source")}
                audit_record(
                    actor=kwargs.get("actor"),  # type: ignore[arg-type]
                    action=action, outcome=AuditOutcome.DENIED, source=str(kwargs.get("source", "api")),
                    proposal_id=proposal_id,  # type: ignore[arg-type]
                    new={"attempted": attempted, "code": exc.code}, message=exc.message,
                )
                raise

        return wrapper

    return decorator


def _jsonable(value: Any) -> Any:
    if isinstance(value, (Decimal, datetime)):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# -- checks ------------------------------------------------------------------------------------
def _require_role(actor: AbstractBaseUser | None, role: str, doing: str) -> None:
    roles = selectors.user_roles(actor)
    if role not in roles:
        held = ", ".join(sorted(roles)) or "no governance role"
        raise NotAllowed(f"only the {role} role may {doing} (you have: {held})")


def _lock_proposal(proposal_id: int) -> Proposal:
    """Lock the proposal row for the rest of the transaction (see the module docstring)."""
    if connection.vendor == "sqlite":
        # SQLite ignores SELECT ... FOR UPDATE; writing first takes the database's write lock, so a
        # concurrent transaction waits here instead of failing later on a stale snapshot.
        Proposal.objects.filter(pk=proposal_id).update(updated_at=F("updated_at"))
    proposal = Proposal.objects.select_for_update().filter(pk=proposal_id).first()
    if proposal is None:
        raise NotFound(f"proposal {proposal_id} does not exist")
    return proposal


def _lock_active_policy() -> PolicyVersion | None:
    if connection.vendor == "sqlite":
        PolicyVersion.objects.filter(status=PolicyStatus.ACTIVE).update(status=F("status"))
    return PolicyVersion.objects.select_for_update().filter(status=PolicyStatus.ACTIVE).first()


def _set_status(proposal: Proposal, status: str, *, now: datetime, **fields: Any) -> str:
    """Move a proposal and its candidate version to `status` together; return the old status."""
    old = proposal.status
    proposal.status = status
    proposal.updated_at = now
    for name, value in fields.items():
        setattr(proposal, name, value)
    proposal.save(update_fields=["status", "updated_at", *fields])
    PolicyVersion.objects.filter(pk=proposal.candidate_id).update(status=status)
    return old


def _refresh_serving_policy() -> None:
    """Every web process reloads the policy on its next request (shared config version), and this
    process at once (its runtime would otherwise re-check only every GATEWAY_CONFIG_REFRESH_MS)."""
    bump_config_version()
    from routing.runtime import get_runtime

    get_runtime().invalidate()


# -- candidate settings ----------------------------------------------------------------------
def _decimal(value: Any, name: str, *, low: str = "0", high: str = "1") -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise Invalid(f"{name} must be a decimal number, got {value!r}", field=name) from None
    if not number.is_finite() or not Decimal(low) <= number <= Decimal(high):
        raise Invalid(f"{name} must be between {low} and {high}, got {value!r}", field=name)
    return number


def _positive_int(value: Any, name: str, *, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise Invalid(f"{name} must be an integer between 1 and {high}, got {value!r}", field=name)
    return value


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{name} must be true or false, got {value!r}", field=name)
    return value


def _text(value: Any, name: str, *, choices: Any = None, max_length: int = 160) -> str:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise Invalid(f"{name} must be a non-empty string of at most {max_length} characters", field=name)
    if choices is not None and value not in choices:
        raise Invalid(f"{name} must be one of {', '.join(sorted(choices))}; got {value!r}", field=name)
    return value


def clean_policy_settings(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate the settings a proposal changes; unknown fields are refused, not ignored."""
    if not isinstance(changes, dict):
        raise Invalid("settings must be an object of policy fields", field="settings")
    unknown = sorted(set(changes) - set(POLICY_FIELDS))
    if unknown:
        raise Invalid(f"unknown policy setting(s): {', '.join(unknown)}; allowed: {', '.join(POLICY_FIELDS)}",
                      field="settings")
    routes = set(Route.objects.filter(enabled=True).values_list("name", flat=True))
    validators: dict[str, Callable[[Any, str], Any]] = {
        "confidence_threshold": _decimal,
        "local_threshold": _decimal,
        "cache_similarity_threshold": _decimal,
        "judge_sample_rate": _decimal,
        "fallback_route": lambda v, n: _text(v, n, choices=routes, max_length=64),
        "sentinel_mode": lambda v, n: _text(v, n, choices=SentinelMode.values, max_length=16),
        "sentinel_provider": lambda v, n: _text(v, n, choices=Provider.values, max_length=32),
        "sentinel_model": lambda v, n: _text(v, n, max_length=120),
        "sentinel_model_version": lambda v, n: _text(v, n, max_length=160),
        "sentinel_prompt_version": lambda v, n: _text(v, n, choices=set(PROMPTS), max_length=32),
        "sentinel_max_tokens": lambda v, n: _positive_int(v, n, high=8192),
        "sentinel_timeout_ms": lambda v, n: _positive_int(v, n, high=600_000),
        "request_deadline_ms": lambda v, n: _positive_int(v, n, high=3_600_000),
        "speculative": _boolean,
        "chained": _boolean,
        "registry_snapshot": _registry_snapshot,
    }
    return {name: validators[name](value, name) for name, value in changes.items()}


def _registry_snapshot(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("routes", []), list):
        raise Invalid(f"{name} must be an object with a 'routes' list", field=name)
    return value


def _next_policy_number() -> int:
    return (PolicyVersion.objects.order_by("-number").values_list("number", flat=True).first() or 0) + 1


def draft_candidate(*, actor: AbstractBaseUser, changes: dict[str, Any],
                    notes: str) -> tuple[PolicyVersion | None, PolicyVersion]:
    """A draft version: the active one (locked) with `changes` applied; refused when nothing changes.

    Call inside a transaction; returns (base, candidate)."""
    base = _lock_active_policy()
    if base is not None and all(
        selectors.json_value(getattr(base, k)) == selectors.json_value(v) for k, v in changes.items()
    ):
        raise Invalid("the candidate changes nothing: every setting equals the active version's",
                      field="settings")
    candidate = _copy_policy(base, changes=changes, status=PolicyStatus.DRAFT, actor=actor, notes=notes)
    return base, candidate


def _copy_policy(source: PolicyVersion | None, *, changes: dict[str, Any], status: str,
                 actor: AbstractBaseUser | None, notes: str) -> PolicyVersion:
    """A new version: the source's settings with `changes` applied (numbers retried on a race)."""
    values = {name: getattr(source, name) for name in POLICY_FIELDS} if source is not None else {}
    values.update(changes)
    for attempt in range(5):
        try:
            with transaction.atomic():
                return PolicyVersion.objects.create(
                    number=_next_policy_number(), status=status, notes=notes,
                    created_by=actor if actor is not None and actor.is_authenticated else None, **values,
                )
        except IntegrityError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


# -- the workflow ----------------------------------------------------------------------------
@_audited("proposal.create")
def proposal_create(
    *, actor: AbstractBaseUser, title: str, settings: dict[str, Any], description: str = "",
    activate_at: datetime | None = None, source: str = "api",
) -> Proposal:
    """A draft proposal whose candidate is the active version with `settings` applied."""
    _require_role(actor, ENGINEER, "create proposals")
    if not isinstance(title, str) or not title.strip():
        raise Invalid("a proposal needs a title", field="title")
    changes = clean_policy_settings(settings)
    if activate_at is not None and activate_at <= timezone.now():
        raise Invalid("activate_at must be in the future", field="activate_at")
    with transaction.atomic():
        base, candidate = draft_candidate(actor=actor, changes=changes,
                                          notes=f"Candidate of proposal: {title.strip()[:150]}")
        now = timezone.now()
        proposal = Proposal.objects.create(
            title=title.strip()[:200], description=description, candidate=candidate, base_version=base,
            author=actor, activate_at=activate_at, created_at=now, updated_at=now,
        )
        audit_record(actor=actor, action="proposal.create", outcome=AuditOutcome.SUCCESS, source=source,
                     proposal=proposal, policy_version=candidate,
                     old=selectors.policy_settings(base) if base else None,
                     new=selectors.policy_settings(candidate),
                     message=f"draft v{candidate.number} based on v{base.number if base else '—'}")
    return proposal


@_audited("proposal.propose")
def proposal_propose(*, actor: AbstractBaseUser, proposal_id: int, source: str = "api") -> Proposal:
    """Freeze the candidate (immutable from here on) and start its evaluation."""
    _require_role(actor, ENGINEER, "propose changes")
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        if proposal.status != ProposalStatus.DRAFT:
            raise Conflict(f"only a draft can be proposed; this proposal is {proposal.status}")
        now = timezone.now()
        old = _set_status(proposal, ProposalStatus.PROPOSED, now=now, proposed_at=now)
        audit_record(actor=actor, action="proposal.propose", outcome=AuditOutcome.SUCCESS, source=source,
                     proposal=proposal, policy_version=proposal.candidate, old={"status": old},
                     new={"status": proposal.status})
        transaction.on_commit(functools.partial(_enqueue_evaluation, proposal.pk))
    return proposal


def _enqueue_evaluation(proposal_id: int) -> None:
    from .tasks import evaluate_proposal

    evaluate_proposal.delay(proposal_id)


@_audited("proposal.evaluate")
def proposal_reevaluate(*, actor: AbstractBaseUser, proposal_id: int, source: str = "api") -> Proposal:
    """Run the evaluation again (after a failure, or when a claimed run was lost)."""
    _require_role(actor, ENGINEER, "re-run evaluations")
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        if proposal.status != ProposalStatus.PROPOSED:
            raise Conflict(f"only a proposal awaiting evaluation can be re-evaluated; this one is {proposal.status}")
        claimed = proposal.evaluation_claimed_at
        if claimed is not None and (timezone.now() - claimed).total_seconds() < EVALUATION_CLAIM_TIMEOUT_S:
            raise Conflict("the evaluation is running; wait for it to finish")
        Proposal.objects.filter(pk=proposal.pk).update(evaluation_claimed_at=None)
        audit_record(actor=actor, action="proposal.evaluate", outcome=AuditOutcome.SUCCESS, source=source,
                     proposal=proposal, message="evaluation re-queued")
        transaction.on_commit(functools.partial(_enqueue_evaluation, proposal.pk))
    return proposal


def proposal_evaluation_claim(*, proposal_id: int) -> bool:
    """Claim the evaluation (an atomic conditional update): False when another worker has it,
    or there is nothing to do, so a redelivered task is harmless."""
    now = timezone.now()
    stale = now - timedelta(seconds=EVALUATION_CLAIM_TIMEOUT_S)
    claimed = (
        Proposal.objects.filter(pk=proposal_id, status=ProposalStatus.PROPOSED)
        .filter(Q(evaluation_claimed_at__isnull=True) | Q(evaluation_claimed_at__lt=stale))
        .update(evaluation_claimed_at=now)
    )
    return claimed == 1


def proposal_evaluation_record(*, proposal_id: int, result: dict[str, Any]) -> Proposal | None:
    """Store a finished evaluation and move the proposal to `evaluated` (None: nothing to record)."""
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        if proposal.status != ProposalStatus.PROPOSED:
            return None
        now = timezone.now()
        old = _set_status(proposal, ProposalStatus.EVALUATED, now=now, evaluation=result, evaluated_at=now,
                          evaluation_claimed_at=None)
        risk = result.get("risk", {})
        audit_record(actor=None, action="proposal.evaluated", outcome=AuditOutcome.SUCCESS, source="task",
                     proposal=proposal, policy_version=proposal.candidate, old={"status": old},
                     new={"status": proposal.status, "risk": risk},
                     message="; ".join(risk.get("reasons", [])) or "evaluation complete")
    return proposal


def proposal_evaluation_fail(*, proposal_id: int, error: str) -> None:
    """Record a failed evaluation; the proposal stays `proposed` and can be re-evaluated."""
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        if proposal.status != ProposalStatus.PROPOSED:
            return
        proposal.evaluation = {"status": "failed", "error": error[:2000], "failed_at": timezone.now().isoformat()}
        proposal.evaluation_claimed_at = None
        proposal.save(update_fields=["evaluation", "evaluation_claimed_at"])
        audit_record(actor=None, action="proposal.evaluated", outcome=AuditOutcome.DENIED, source="task",
                     proposal=proposal, message=f"evaluation failed: {error}")


@_audited("proposal.approve")
def proposal_approve(*, actor: AbstractBaseUser, proposal_id: int, comment: str = "",
                     source: str = "api") -> Proposal:
    """Approve an evaluated proposal: a reviewer who is not the author (four eyes)."""
    _require_role(actor, REVIEWER, "approve proposals")
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        if proposal.author_id == actor.pk:
            raise NotAllowed("four-eyes rule: the author of a proposal cannot approve it", code="self_approval")
        if proposal.status == ProposalStatus.PROPOSED:
            raise Conflict("the evaluation is not complete yet; a proposal can be approved only once evaluated",
                           code="not_evaluated")
        if proposal.status != ProposalStatus.EVALUATED or not proposal.evaluation_complete:
            raise Conflict(f"only an evaluated proposal can be approved; this proposal is {proposal.status}")
        risk = proposal.evaluation.get("risk", {})
        if risk.get("requires_quality_delta") and not risk.get("quality_known"):
            missing = ", ".join(risk.get("quality_missing_routes", [])) or "all routes"
            raise Conflict(
                "cannot approve: this proposal " + "; ".join(risk.get("reasons", ["trades quality for cost"]))
                + f", and its quality delta is unknown (no judge scores for: {missing}). "
                "Collect judge audits for those routes and re-propose.",
                code="quality_unknown",
            )
        now = timezone.now()
        old = _set_status(proposal, ProposalStatus.APPROVED, now=now, reviewer=actor, reviewed_at=now,
                          review_comment=comment or "")
        audit_record(actor=actor, action="proposal.approve", outcome=AuditOutcome.SUCCESS, source=source,
                     proposal=proposal, policy_version=proposal.candidate, old={"status": old},
                     new={"status": proposal.status, "comment": comment}, message=comment)
    return proposal


@_audited("proposal.reject")
def proposal_reject(*, actor: AbstractBaseUser, proposal_id: int, comment: str = "",
                    source: str = "api") -> Proposal:
    """Reject a proposal (before activation); a reviewer other than the author, with a comment."""
    _require_role(actor, REVIEWER, "reject proposals")
    if not isinstance(comment, str) or not comment.strip():
        raise Invalid("a rejection needs a comment saying why", field="comment")
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        if proposal.author_id == actor.pk:
            raise NotAllowed("four-eyes rule: the author of a proposal cannot review it", code="self_review")
        if proposal.status not in (ProposalStatus.PROPOSED, ProposalStatus.EVALUATED, ProposalStatus.APPROVED):
            raise Conflict(f"only a proposal under review can be rejected; this proposal is {proposal.status}")
        now = timezone.now()
        old = _set_status(proposal, ProposalStatus.REJECTED, now=now, reviewer=actor, reviewed_at=now,
                          review_comment=comment.strip())
        audit_record(actor=actor, action="proposal.reject", outcome=AuditOutcome.SUCCESS, source=source,
                     proposal=proposal, policy_version=proposal.candidate, old={"status": old},
                     new={"status": proposal.status, "comment": comment.strip()}, message=comment.strip())
    return proposal


@_audited("proposal.activate")
def proposal_activate(*, actor: AbstractBaseUser | None, proposal_id: int, activate_at: datetime | None = None,
                      source: str = "api") -> Proposal:
    """Make an approved proposal's candidate the active policy, now or at `activate_at`.

    `actor=None` is the scheduler (`audits.activate_due_proposals`) acting on an approved schedule.
    """
    if actor is not None:
        _require_role(actor, ENGINEER, "activate proposals")
    now = timezone.now()
    with transaction.atomic():
        proposal = _lock_proposal(proposal_id)
        if proposal.status != ProposalStatus.APPROVED:
            raise Conflict(f"only an approved proposal can be activated; this proposal is {proposal.status}")
        if activate_at is not None and activate_at > now:
            old_at = proposal.activate_at
            proposal.activate_at, proposal.updated_at = activate_at, now
            proposal.save(update_fields=["activate_at", "updated_at"])
            audit_record(actor=actor, action="proposal.schedule", outcome=AuditOutcome.SUCCESS, source=source,
                         proposal=proposal, old={"activate_at": _jsonable(old_at)},
                         new={"activate_at": activate_at.isoformat()},
                         message=f"activation scheduled for {activate_at.isoformat()}")
            return proposal
        if actor is None and (proposal.activate_at is None or proposal.activate_at > now):
            raise Conflict("the scheduler activates only proposals whose activation time has come")
        current = _lock_active_policy()
        if current is not None and proposal.base_version_id != current.pk:
            raise Conflict(
                f"the active policy is now v{current.number}, but this proposal was evaluated against "
                f"v{proposal.base_version.number if proposal.base_version else '—'}; create a new proposal",
                code="stale_base",
            )
        if current is not None:
            current.status = PolicyStatus.SUPERSEDED
            current.save(update_fields=["status"])
            Proposal.objects.filter(status=ProposalStatus.ACTIVE).update(status=ProposalStatus.SUPERSEDED,
                                                                         updated_at=now)
        old = _set_status(proposal, ProposalStatus.ACTIVE, now=now, activated_at=now,
                          activated_by=actor if actor is not None else None)
        PolicyVersion.objects.filter(pk=proposal.candidate_id).update(activated_at=now)
        audit_record(actor=actor, action="proposal.activate", outcome=AuditOutcome.SUCCESS, source=source,
                     proposal=proposal, policy_version=proposal.candidate,
                     old={"status": old, "active_version": current.number if current else None,
                          "settings": selectors.policy_settings(current) if current else None},
                     new={"status": proposal.status, "active_version": proposal.candidate.number,
                          "settings": selectors.policy_settings(proposal.candidate)},
                     message=f"v{proposal.candidate.number} active (was v{current.number if current else '—'})")
        transaction.on_commit(_refresh_serving_policy)
    return proposal


def proposals_activate_due(*, now: datetime | None = None) -> list[int]:
    """Activate every approved proposal whose scheduled time has come; refusals are audited."""
    activated = []
    for proposal_id in selectors.proposals_due(now=now or timezone.now()):
        try:
            proposal_activate(actor=None, proposal_id=proposal_id, source="schedule")
        except GovernanceError:
            continue  # audited by the decorator; another worker may have activated it first
        activated.append(proposal_id)
    return activated


@_audited("policy.rollback")
def policy_rollback(*, actor: AbstractBaseUser, reason: str = "", source: str = "api") -> Proposal:
    """One action: a rollback proposal that restores the previously active version's settings,
    activated at once. It restores settings that were reviewed before, so it needs no new review;
    it is recorded like every other transition."""
    _require_role(actor, ENGINEER, "roll back the policy")
    with transaction.atomic():
        current = _lock_active_policy()
        if current is None:
            raise Conflict("there is no active policy to roll back")
        current_proposal = Proposal.objects.select_for_update().filter(status=ProposalStatus.ACTIVE).first()
        if current_proposal is not None and current_proposal.candidate_id != current.pk:
            current_proposal = None
        previous = current_proposal.base_version if current_proposal is not None else None
        if previous is None:
            previous = (PolicyVersion.objects.exclude(pk=current.pk).filter(activated_at__isnull=False)
                        .order_by("-activated_at", "-number").first())
        if previous is None:
            raise Conflict(f"v{current.number} is the only version ever active: there is nothing to roll back to")
        now = timezone.now()
        current.status = PolicyStatus.ROLLED_BACK
        current.save(update_fields=["status"])
        if current_proposal is not None:
            current_proposal.status, current_proposal.updated_at = ProposalStatus.ROLLED_BACK, now
            current_proposal.save(update_fields=["status", "updated_at"])
        restored = _copy_policy(
            previous, changes={}, status=PolicyStatus.ACTIVE, actor=actor,
            notes=f"Rollback of v{current.number}: restores the settings of v{previous.number}.",
        )
        PolicyVersion.objects.filter(pk=restored.pk).update(activated_at=now)
        proposal = Proposal.objects.create(
            title=f"Rollback of v{current.number} to the settings of v{previous.number}",
            description=reason, kind=ProposalKind.ROLLBACK, status=ProposalStatus.ACTIVE, candidate=restored,
            base_version=current, restores=previous, author=actor, created_at=now, updated_at=now,
            proposed_at=now, activated_at=now, activated_by=actor,
        )
        audit_record(actor=actor, action="policy.rollback", outcome=AuditOutcome.SUCCESS, source=source,
                     proposal=proposal, policy_version=restored,
                     old={"active_version": current.number, "settings": selectors.policy_settings(current),
                          "rolled_back_proposal": current_proposal.pk if current_proposal else None},
                     new={"active_version": restored.number, "restores_version": previous.number,
                          "settings": selectors.policy_settings(restored)},
                     message=reason or f"rolled back v{current.number}")
        transaction.on_commit(_refresh_serving_policy)
    return proposal


def audit_denied_access(*, actor: AbstractBaseUser | None, action: str, source: str, message: str,
                        proposal_id: int | None = None) -> None:
    """Record a refused read or page access by a user without a governance role."""
    if proposal_id is not None and not Proposal.objects.filter(pk=proposal_id).exists():
        proposal_id = None
    audit_record(actor=actor, action=action, outcome=AuditOutcome.DENIED, source=source, proposal_id=proposal_id,
                 message=message)


__all__ = [
    "GOVERNANCE_ROLES", "Conflict", "GovernanceError", "Invalid", "NotAllowed", "NotFound", "audit_record",
    "clean_policy_settings", "policy_rollback", "proposal_activate", "proposal_approve", "proposal_create",
    "proposal_evaluation_claim", "proposal_evaluation_fail", "proposal_evaluation_record", "proposal_propose",
    "proposal_reevaluate", "proposal_reject", "proposals_activate_due",
]
