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
