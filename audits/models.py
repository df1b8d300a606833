"""Governance records: routing-policy proposals and the append-only audit trail.

A `Proposal` carries one candidate `routing.PolicyVersion` through review
(draft → proposed → evaluated → approved/rejected → active → superseded or
rolled back). Transitions happen only in `audits.services`; this module holds
fields, constraints and the guards that keep `AuditEvent` append-only.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from routing.models import PolicyVersion


class ProposalStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PROPOSED = "proposed", "Proposed (evaluating)"
    EVALUATED = "evaluated", "Evaluated (awaiting review)"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    ACTIVE = "active", "Active"
    SUPERSEDED = "superseded", "Superseded"
    ROLLED_BACK = "rolled_back", "Rolled back"


class ProposalKind(models.TextChoices):
    CHANGE = "change", "Policy change"
    ROLLBACK = "rollback", "Rollback"


class Proposal(models.Model):
    """A reviewed change of the routing policy: one candidate version, measured against its base."""

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=ProposalKind.choices, default=ProposalKind.CHANGE)
    status = models.CharField(max_length=16, choices=ProposalStatus.choices, default=ProposalStatus.DRAFT,
                              db_index=True)
    candidate = models.OneToOneField(PolicyVersion, on_delete=models.PROTECT, related_name="proposal")
    base_version = models.ForeignKey(PolicyVersion, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+", help_text="The active version when the proposal was made.")
    restores = models.ForeignKey(PolicyVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                 help_text="Rollbacks: the version whose settings are restored.")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+")
    review_comment = models.TextField(blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    proposed_at = models.DateTimeField(null=True, blank=True)
    evaluation = models.JSONField(null=True, blank=True)
    evaluation_claimed_at = models.DateTimeField(null=True, blank=True)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    activate_at = models.DateTimeField(null=True, blank=True, help_text="Scheduled activation time (UTC).")
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="active"),
                                    name="one_active_proposal"),
        ]

    def __str__(self) -> str:
        return f"proposal #{self.pk}: {self.title} ({self.status})"

    @property
    def evaluation_complete(self) -> bool:
        return bool(self.evaluation) and self.evaluation.get("status") == "complete"


class AuditOutcome(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Refused"


class AppendOnlyError(Exception):
    """Audit rows are never changed or deleted."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("audit events are append-only: update is not allowed")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit events are append-only: delete is not allowed")


class AuditEvent(models.Model):
    """Who did what to which proposal or policy, when, with old and new values; refusals included.

    Append-only: `save()` refuses to update a stored row, `delete()` refuses, the queryset refuses
    bulk update/delete, and the database has triggers (see migration 0002) that refuse UPDATE
    (and, on PostgreSQL, DELETE).
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="+")
    actor_username = models.CharField(max_length=150, help_text="Kept even if the user is renamed.")
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=16, choices=AuditOutcome.choices, db_index=True)
    source = models.CharField(max_length=16, help_text="api, page, admin, task, schedule")
    proposal = models.ForeignKey(Proposal, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    policy_version = models.ForeignKey(PolicyVersion, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="+")
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username} {self.action} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit events are append-only: a stored row cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit events are append-only: delete is not allowed")


# ---- quality: judge audits and drift (issue 5) ---------------------------------------------------


class AuditSample(models.Model):
    """A sampled request's question and answer, kept so that a judge can score it later.

    Only sampled requests are stored (the decision log never keeps prompt text). `weight` is
    1 / inclusion probability, so that weighted aggregates over audits are unbiased.
    """

    request_id = models.UUIDField(unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    route = models.CharField(max_length=64)
    executor_model = models.CharField(max_length=120, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    stratum = models.CharField(max_length=100, help_text="route|confidence bucket the sample was drawn from")
    probability = models.FloatField()
    weight = models.FloatField()
    prompt = models.TextField()
    answer = models.TextField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"sample {self.request_id}"


class JudgeStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SCORED = "scored"
    FAILED = "failed"


class Misroute(models.TextChoices):
    NONE = "", "None"
    UNDER = "under_routed", "Under-routed"
    OVER = "over_routed", "Over-routed"


class JudgeAudit(models.Model):
    """A judge model's 1-5 score of one sampled answer, with its rationale and misroute flag."""

    sample = models.OneToOneField(AuditSample, on_delete=models.CASCADE, related_name="audit")
    request_id = models.UUIDField(unique=True)
    status = models.CharField(max_length=16, choices=JudgeStatus.choices, default=JudgeStatus.PENDING, db_index=True)
    judge_model = models.CharField(max_length=120)
    judge_model_version = models.CharField(max_length=160, blank=True)
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    question_complexity = models.CharField(max_length=16, blank=True)
    misroute = models.CharField(max_length=16, choices=Misroute.choices, blank=True, default="")
    applied = models.BooleanField(default=False, help_text="The score is on the decision row.")
    error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    scored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"audit {self.request_id}: {self.score}"


class DriftBaseline(models.Model):
    """A pinned snapshot of the route distribution and per-route means, to compare windows against."""

    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    snapshot = models.JSONField(default=dict)
    pinned = models.BooleanField(default=True)

    class Meta:
        ordering = ["-created_at"]


class DriftKind(models.TextChoices):
    ROUTE_SHARE = "route_share", "Route share moved"
    CONFIDENCE = "confidence", "Mean confidence dropped"
    JUDGE_SCORE = "judge_score", "Mean judge score dropped"
    MODEL_VERSION = "model_version", "Provider returned an unpinned model version"


class DriftAlert(models.Model):
    """One drift finding; acknowledged by an engineer, optionally POSTed to a webhook."""

    kind = models.CharField(max_length=32, choices=DriftKind.choices)
    key = models.CharField(max_length=300, help_text="What moved (route, route|version), for dedup of version alerts.")
    message = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    webhook_status = models.CharField(max_length=16, blank=True, help_text="'', sent, failed")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A model version is alerted the first time only.
            models.UniqueConstraint(fields=["key"], condition=models.Q(kind="model_version"),
                                    name="one_alert_per_model_version"),
        ]


# ---- shadow routing experiments (issue 5) --------------------------------------------------------


class ExperimentStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    STOPPED = "stopped", "Stopped"
    FINISHED = "finished", "Finished (window ended)"


class ShadowExperiment(models.Model):
    """A candidate policy version routed in the shadow of production for a sample of live traffic.

    Transitions (draft → running ⇄ paused → stopped; running/paused → finished when the window
    ends) happen only in `audits.shadow_services`.
    """

    name = models.CharField(max_length=200)
    candidate = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT, related_name="shadow_experiments")
    sample_rate = models.DecimalField(max_digits=5, decimal_places=4,
                                      help_text="Share of live requests routed in the shadow (0-1).")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT,
                              db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    proposal = models.ForeignKey(Proposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 help_text="The governance proposal made from this experiment.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(sample_rate__gte=0, sample_rate__lte=1),
                                   name="shadow_sample_rate_0_1"),
            models.CheckConstraint(condition=models.Q(window_end__gt=models.F("window_start")),
                                   name="shadow_window_ordered"),
        ]

    def __str__(self) -> str:
        return f"experiment #{self.pk}: {self.name} ({self.status})"


class ShadowCapture(models.Model):
    """A shadow-sampled request waiting for (or done with) its candidate routing.

    `prompt` is kept only when the candidate needs its own sentinel call, and emptied once the
    candidate has decided: the decision log never keeps prompt text.
    """

    experiment = models.ForeignKey(ShadowExperiment, on_delete=models.CASCADE, related_name="captures")
    request_id = models.UUIDField()
    prompt = models.TextField(blank=True)
    needs_sentinel = models.BooleanField(default=False)
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["experiment", "request_id"], name="one_capture_per_request")]


class ShadowDecision(models.Model):
    """The candidate's routing of one sampled request, beside production's."""

    experiment = models.ForeignKey(ShadowExperiment, on_delete=models.CASCADE, related_name="decisions")
    request_id = models.UUIDField()
    production_route = models.CharField(max_length=64)
    candidate_route = models.CharField(max_length=64)
    candidate_reason = models.CharField(max_length=300)
    candidate_escalated = models.BooleanField(default=False)
    candidate_decision = models.JSONField(null=True, blank=True)
    candidate_sentinel_called = models.BooleanField(default=False)
    candidate_sentinel_cost = models.DecimalField(max_digits=24, decimal_places=10, default=0,
                                                  help_text="Zero when production's stored decision is re-used.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["experiment", "request_id"], name="one_shadow_per_request")]

    def __str__(self) -> str:
        return f"shadow {self.request_id}: {self.production_route} / {self.candidate_route}"
