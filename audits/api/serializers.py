"""Input and output shapes of the governance API (validation of policy values is the service's)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from audits import selectors
from audits.models import AuditEvent, Proposal


class ProposalCreateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    settings = serializers.DictField(help_text="Policy fields to change, e.g. {\"confidence_threshold\": \"0.8\"}.")
    activate_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    propose = serializers.BooleanField(required=False, default=False,
                                       help_text="Propose at once (freezes the candidate and starts the evaluation).")


class ReviewInput(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class ActivateInput(serializers.Serializer):
    activate_at = serializers.DateTimeField(required=False, allow_null=True, default=None,
                                            help_text="Schedule instead of activating now.")


class RollbackInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


def _user(user: Any) -> str | None:
    return user.get_username() if user is not None else None


def _version(policy: Any) -> int | None:
    return policy.number if policy is not None else None


def proposal_summary(proposal: Proposal) -> dict[str, Any]:
    evaluation = proposal.evaluation or {}
    return {
        "id": proposal.pk,
        "title": proposal.title,
        "kind": proposal.kind,
        "status": proposal.status,
        "author": _user(proposal.author),
        "reviewer": _user(proposal.reviewer),
        "base_version": _version(proposal.base_version),
        "candidate_version": proposal.candidate.number,
        "restores_version": _version(proposal.restores),
        "evaluation_status": evaluation.get("status", "pending" if proposal.status == "proposed" else None),
        "created_at": proposal.created_at,
        "activate_at": proposal.activate_at,
        "activated_at": proposal.activated_at,
        "url": f"/api/v1/proposals/{proposal.pk}/",
    }


def proposal_detail(proposal: Proposal, *, user: Any) -> dict[str, Any]:
    data = proposal_summary(proposal)
    data.update({
        "description": proposal.description,
        "review_comment": proposal.review_comment,
        "reviewed_at": proposal.reviewed_at,
        "proposed_at": proposal.proposed_at,
        "evaluated_at": proposal.evaluated_at,
        "activated_by": _user(proposal.activated_by),
        "candidate_settings": selectors.policy_settings(proposal.candidate),
        "diff": [row.as_dict() for row in selectors.proposal_diff(proposal)],
        "evaluation": proposal.evaluation,
        "actions": selectors.proposal_actions_for(user, proposal),
        "page": f"/governance/proposals/{proposal.pk}/",
    })
    return data


class AuditEventOutput(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_username")
    proposal = serializers.IntegerField(source="proposal_id", allow_null=True)
    policy_version = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "action", "outcome", "source", "proposal", "policy_version",
                  "old_value", "new_value", "message"]

    def get_policy_version(self, event: AuditEvent) -> int | None:
        return event.policy_version.number if event.policy_version_id else None
