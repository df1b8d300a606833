"""Admin: proposals are read-only here except for the approve action, which goes through the same
service as the API and the pages (role and four-eyes checks, audit row); the audit trail is
read-only with no delete."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest

from . import selectors, services
from .models import AuditEvent, Proposal


class GovernanceReadOnlyAdmin(admin.ModelAdmin):
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(selectors.user_roles(request.user)) and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Proposal)
class ProposalAdmin(GovernanceReadOnlyAdmin):
    list_display = ("id", "title", "kind", "status", "author", "reviewer", "base_version", "candidate",
                    "created_at", "activate_at", "activated_at")
    list_filter = ("status", "kind")
    search_fields = ("title",)
    actions = ["approve"]

    @admin.action(description="Approve selected proposals (reviewers; never your own)")
    def approve(self, request: HttpRequest, queryset) -> None:
        for proposal in queryset:
            try:
                services.proposal_approve(actor=request.user, proposal_id=proposal.pk, source="admin")
            except services.GovernanceError as exc:
                self.message_user(request, f"Proposal #{proposal.pk}: {exc.message}", level=messages.ERROR)
            else:
                self.message_user(request, f"Proposal #{proposal.pk} approved.")


@admin.register(AuditEvent)
class AuditEventAdmin(GovernanceReadOnlyAdmin):
    list_display = ("created_at", "actor_username", "action", "outcome", "source", "proposal", "policy_version",
                    "message")
    list_filter = ("outcome", "action", "source")
    search_fields = ("actor_username", "message")
    date_hierarchy = "created_at"


# ---- quality (issue 5) ----------------------------------------------------------------------------

from .models import DriftAlert, JudgeAudit  # noqa: E402


@admin.register(JudgeAudit)
class JudgeAuditAdmin(GovernanceReadOnlyAdmin):
    list_display = ("request_id", "status", "score", "misroute", "judge_model", "created_at")
    list_filter = ("status", "misroute")
    readonly_fields = [f.name for f in JudgeAudit._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(DriftAlert)
class DriftAlertAdmin(GovernanceReadOnlyAdmin):
    list_display = ("created_at", "kind", "key", "message", "acknowledged_at")
    list_filter = ("kind",)
    actions = ["pin_current_as_baseline"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Pin current as baseline (last 7 days)")
    def pin_current_as_baseline(self, request: HttpRequest, queryset) -> None:
        from . import drift

        if selectors.ENGINEER not in selectors.user_roles(request.user):
            self.message_user(request, "You need the engineer role.", messages.ERROR)
            return
        drift.baseline_pin(actor=request.user.get_username())
        self.message_user(request, "Pinned the last 7 days as the drift baseline.")


# ---- shadow experiments (issue 5) -----------------------------------------------------------------

from .models import ShadowDecision, ShadowExperiment  # noqa: E402


@admin.register(ShadowExperiment)
class ShadowExperimentAdmin(GovernanceReadOnlyAdmin):
    """Read-only: transitions go through audits.shadow_services (API and pages)."""

    list_display = ("id", "name", "candidate", "sample_rate", "status", "window_start", "window_end", "proposal")
    list_filter = ("status",)
    search_fields = ("name",)


@admin.register(ShadowDecision)
class ShadowDecisionAdmin(GovernanceReadOnlyAdmin):
    list_display = ("created_at", "experiment", "request_id", "production_route", "candidate_route",
                    "candidate_escalated", "candidate_sentinel_cost")
    list_filter = ("experiment",)
