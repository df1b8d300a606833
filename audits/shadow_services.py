"""Writes for shadow experiments: create, start, pause, stop, finish, and turn into a proposal.

    draft ─start→ running ─pause→ paused ─start→ running
                     └──────stop / window ended───┴──→ stopped / finished ─to_proposal→ (a proposal)

Like the proposal workflow (audits.services): engineers act; every transition locks the row
(`select_for_update`; on SQLite a no-op UPDATE first), re-checks the state, changes it and appends
an `AuditEvent`; a refused attempt raises a `GovernanceError` and leaves a denied audit row.
The in-process sampler forgets its cached experiments on commit (other processes within
`audits.sampling.RATE_TTL_S`).
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from routing.models import PolicyStatus, PolicyVersion

from . import selectors
from .models import AuditOutcome, ExperimentStatus, ShadowExperiment
from .selectors import ENGINEER, POLICY_FIELDS
from .services import (
    Conflict,
    Invalid,
    NotFound,
    _audited,
    _decimal,
    _require_role,
    audit_record,
    clean_policy_settings,
    draft_candidate,
    proposal_create,
    proposal_propose,
)


def _forget_cached_experiments() -> None:
    from .sampling import get_sampler

    get_sampler().invalidate()


def _lock_experiment(experiment_id: int) -> ShadowExperiment:
    if connection.vendor == "sqlite":
        ShadowExperiment.objects.filter(pk=experiment_id).update(updated_at=F("updated_at"))
    experiment = ShadowExperiment.objects.select_for_update().filter(pk=experiment_id).first()
    if experiment is None:
        raise NotFound(f"experiment {experiment_id} does not exist")
    return experiment


def _summary(experiment: ShadowExperiment) -> dict[str, Any]:
    return {"experiment": experiment.pk, "status": experiment.status, "candidate_version": experiment.candidate.number,
            "sample_rate": str(experiment.sample_rate)}


def _transition(experiment: ShadowExperiment, status: str, *, actor: AbstractBaseUser | None, action: str,
                source: str, now: datetime, **fields: Any) -> None:
    old = experiment.status
    experiment.status = status
    experiment.updated_at = now
    for name, value in fields.items():
        setattr(experiment, name, value)
    experiment.save(update_fields=["status", "updated_at", *fields])
    audit_record(actor=actor, action=action, outcome=AuditOutcome.SUCCESS, source=source,
                 policy_version=experiment.candidate, old={"status": old}, new=_summary(experiment),
                 message=f"experiment #{experiment.pk} {old} → {status}")
    transaction.on_commit(_forget_cached_experiments)


@_audited("experiment.create")
def experiment_create(
    *, actor: AbstractBaseUser, name: str, sample_rate: Decimal | str, window_start: datetime,
    window_end: datetime, candidate_id: int | None = None, settings: dict[str, Any] | None = None,
    source: str = "api",
) -> ShadowExperiment:
    """A draft experiment for an existing non-active version (`candidate_id`), or for a new draft
    version made from the active one with `settings` applied."""
    _require_role(actor, ENGINEER, "create shadow experiments")
    if not isinstance(name, str) or not name.strip():
        raise Invalid("an experiment needs a name", field="name")
    rate = _decimal(sample_rate, "sample_rate")
    if window_end <= window_start:
        raise Invalid("window_end must be after window_start", field="window_end")
    if (candidate_id is None) == (settings is None):
        raise Invalid("give either candidate (a policy version id) or settings", field="candidate")
    with transaction.atomic():
        if candidate_id is not None:
            candidate = PolicyVersion.objects.filter(pk=candidate_id).first()
            if candidate is None:
                raise Invalid(f"policy version {candidate_id} does not exist", field="candidate")
            if candidate.status == PolicyStatus.ACTIVE:
                raise Invalid("the candidate must not be the active version", field="candidate")
        else:
            _base, candidate = draft_candidate(
                actor=actor, changes=clean_policy_settings(settings or {}),
                notes=f"Candidate of shadow experiment: {name.strip()[:150]}")
        now = timezone.now()
        experiment = ShadowExperiment.objects.create(
            name=name.strip()[:200], candidate=candidate, sample_rate=rate, window_start=window_start,
            window_end=window_end, created_by=actor, created_at=now, updated_at=now,
        )
        audit_record(actor=actor, action="experiment.create", outcome=AuditOutcome.SUCCESS, source=source,
                     policy_version=candidate, new={**_summary(experiment), "settings":
                                                    selectors.policy_settings(candidate)},
                     message=f"shadow experiment #{experiment.pk} for v{candidate.number}")
    return experiment


@_audited("experiment.start")
def experiment_start(*, actor: AbstractBaseUser, experiment_id: int, source: str = "api") -> ShadowExperiment:
    """Start a draft or resume a paused experiment (its candidate must still not be active)."""
    _require_role(actor, ENGINEER, "start shadow experiments")
    with transaction.atomic():
        experiment = _lock_experiment(experiment_id)
        if experiment.status not in (ExperimentStatus.DRAFT, ExperimentStatus.PAUSED):
            raise Conflict(f"only a draft or paused experiment can be started; this one is {experiment.status}")
        if PolicyVersion.objects.filter(pk=experiment.candidate_id, status=PolicyStatus.ACTIVE).exists():
            raise Conflict("the candidate is the active version now: nothing to compare")
        now = timezone.now()
        if experiment.window_end <= now:
            raise Conflict("the experiment's window has ended")
        _transition(experiment, ExperimentStatus.RUNNING, actor=actor, action="experiment.start", source=source,
                    now=now, started_at=experiment.started_at or now)
    return experiment


@_audited("experiment.pause")
def experiment_pause(*, actor: AbstractBaseUser, experiment_id: int, source: str = "api") -> ShadowExperiment:
    _require_role(actor, ENGINEER, "pause shadow experiments")
    with transaction.atomic():
        experiment = _lock_experiment(experiment_id)
        if experiment.status != ExperimentStatus.RUNNING:
            raise Conflict(f"only a running experiment can be paused; this one is {experiment.status}")
        _transition(experiment, ExperimentStatus.PAUSED, actor=actor, action="experiment.pause", source=source,
                    now=timezone.now())
    return experiment


@_audited("experiment.stop")
def experiment_stop(*, actor: AbstractBaseUser, experiment_id: int, source: str = "api") -> ShadowExperiment:
    _require_role(actor, ENGINEER, "stop shadow experiments")
    with transaction.atomic():
        experiment = _lock_experiment(experiment_id)
        if experiment.status not in (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED):
            raise Conflict(f"only a running or paused experiment can be stopped; this one is {experiment.status}")
        now = timezone.now()
        _transition(experiment, ExperimentStatus.STOPPED, actor=actor, action="experiment.stop", source=source,
                    now=now, ended_at=now)
    return experiment


def experiments_finish_due(*, now: datetime | None = None) -> list[int]:
    """Running or paused experiments whose window has ended become finished (the beat task)."""
    now = now or timezone.now()
    finished = []
    due = ShadowExperiment.objects.filter(
        status__in=[ExperimentStatus.RUNNING, ExperimentStatus.PAUSED], window_end__lte=now)
    for experiment_id in due.values_list("pk", flat=True):
        with transaction.atomic():
            experiment = _lock_experiment(experiment_id)
            if experiment.status in (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED) and \
                    experiment.window_end <= now:
                _transition(experiment, ExperimentStatus.FINISHED, actor=None, action="experiment.finish",
                            source="schedule", now=now, ended_at=experiment.window_end)
                finished.append(experiment_id)
    return finished


def evidence_text(experiment: ShadowExperiment, report: dict[str, Any]) -> str:
    """The proposal's description: a readable summary, then the full report as JSON evidence."""
    quality = report["quality_delta"]
    spend = report["spend"]
    agreement = report["agreement_rate"]
    lines = [
        (f"Shadow experiment #{experiment.pk} \u201c{experiment.name}\u201d: candidate v{experiment.candidate.number} "
         f"routed {report['sampled']} sampled live requests (rate {experiment.sample_rate}) beside production."),
        f"Agreement: {'—' if agreement is None else f'{agreement:.1%}'}.",
        (f"Projected cost delta: {report['cost_delta']['per_request_delta']} $/request, "
         f"{report['cost_delta']['projected_window_delta']} $ over the window."),
        (f"Projected quality delta: {quality['delta_per_request']} (judge-covered disagreements: "
         f"{quality['covered_by_judge']} of {quality['disagreeing']})."),
        (f"Experiment spend: {spend['experiment_spend']} $ = share {spend['share']} of total "
         f"(goal < {spend['goal']})."),
        "",
        "Evidence (shadow report, JSON):",
        json.dumps(report, indent=2, sort_keys=True),
    ]
    return "\n".join(lines)


@_audited("experiment.to_proposal")
def experiment_to_proposal(*, actor: AbstractBaseUser, experiment_id: int, source: str = "api") -> ShadowExperiment:
    """One action: a proposed governance proposal for the candidate's settings, with the report as evidence.

    The proposal's candidate is a new version (the active one with the candidate's differing
    settings), made by `proposal_create`, so the usual diff, evaluation and review apply."""
    from .shadow_selectors import experiment_report

    _require_role(actor, ENGINEER, "turn experiments into proposals")
    with transaction.atomic():
        experiment = _lock_experiment(experiment_id)
        if experiment.status not in (ExperimentStatus.STOPPED, ExperimentStatus.FINISHED):
            raise Conflict(f"only a stopped or finished experiment can become a proposal; this one is "
                           f"{experiment.status}")
        if experiment.proposal_id is not None:
            raise Conflict(f"this experiment already became proposal #{experiment.proposal_id}")
        active = selectors.active_policy_version()
        candidate = experiment.candidate
        changes = {name: getattr(candidate, name) for name in POLICY_FIELDS
                   if active is None or selectors.json_value(getattr(candidate, name))
                   != selectors.json_value(getattr(active, name))}
        report = experiment_report(experiment).as_dict()
        proposal = proposal_create(
            actor=actor, title=f"From shadow experiment #{experiment.pk}: {experiment.name}"[:200],
            settings={k: str(v) if isinstance(v, Decimal) else v for k, v in changes.items()},
            description=evidence_text(experiment, report), source=source,
        )
        proposal = proposal_propose(actor=actor, proposal_id=proposal.pk, source=source)
        experiment.proposal = proposal
        experiment.updated_at = timezone.now()
        experiment.save(update_fields=["proposal", "updated_at"])
        audit_record(actor=actor, action="experiment.to_proposal", outcome=AuditOutcome.SUCCESS, source=source,
                     proposal=proposal, policy_version=candidate, new={**_summary(experiment),
                                                                       "proposal": proposal.pk},
                     message=f"experiment #{experiment.pk} became proposal #{proposal.pk}")
    return experiment
