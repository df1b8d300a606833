"""Governance pages: proposal list, proposal detail (diff, before/after table, review buttons),
and the audit trail. Thin: every POST calls one service; the services decide who may do what."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_POST

from . import selectors, services
from .models import AuditOutcome

ROLE_MESSAGE = "You need a governance role (engineer, reviewer or finance) to see this page."


def _forbidden(request: HttpRequest, message: str = ROLE_MESSAGE, *, action: str | None = None,
               proposal_id: int | None = None) -> HttpResponse:
    if action is not None:
        services.audit_denied_access(actor=request.user, action=action, source="page", message=message,
                                     proposal_id=proposal_id)
    return render(request, "audits/forbidden.html", {"message": message}, status=403)


def _activate_due() -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        services.proposals_activate_due()


@login_required
@require_GET
def proposal_list_page(request: HttpRequest) -> HttpResponse:
    roles = selectors.user_roles(request.user)
    if not roles:
        return _forbidden(request)
    _activate_due()
    status = request.GET.get("status") or None
    return render(request, "audits/proposal_list.html", {
        "proposals": selectors.proposal_list(status=status)[:200],
        "active": selectors.active_policy_version(),
        "roles": sorted(roles),
        "can_rollback": selectors.ENGINEER in roles,
        "status": status,
    })


def _detail_context(request: HttpRequest, proposal: Any) -> dict[str, Any]:
    evaluation = proposal.evaluation or {}
    table = evaluation.get("table") or []
    return {
        "proposal": proposal,
        "diff": selectors.proposal_diff(proposal),
        "evaluation": evaluation,
        "evalset_rows": [r for r in table if r["dataset"] == "evalset"],
        "traffic_rows": [r for r in table if r["dataset"] == "traffic"],
        "risk": evaluation.get("risk") or {},
        "actions": selectors.proposal_actions_for(request.user, proposal),
        "events": selectors.audit_event_list(proposal_id=proposal.pk)[:100],
        "roles": sorted(selectors.user_roles(request.user)),
    }


@login_required
@require_GET
def proposal_detail_page(request: HttpRequest, pk: int) -> HttpResponse:
    if not selectors.user_roles(request.user):
        return _forbidden(request)
    _activate_due()
    proposal = selectors.proposal_get(proposal_id=pk)
    if proposal is None:
        return render(request, "audits/forbidden.html", {"message": f"Proposal {pk} does not exist."}, status=404)
    return render(request, "audits/proposal_detail.html", _detail_context(request, proposal))


def _parse_activate_at(raw: str) -> datetime | None:
    if not raw.strip():
        return None
    value = parse_datetime(raw.strip())
    if value is None:
        raise services.Invalid(f"activate_at {raw!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)",
                               field="activate_at")
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


ACTIONS = {
    "propose": ("proposal.propose", lambda r, pk: services.proposal_propose(actor=r.user, proposal_id=pk,
                                                                            source="page")),
    "evaluate": ("proposal.evaluate", lambda r, pk: services.proposal_reevaluate(actor=r.user, proposal_id=pk,
                                                                                 source="page")),
    "approve": ("proposal.approve", lambda r, pk: services.proposal_approve(
        actor=r.user, proposal_id=pk, comment=r.POST.get("comment", ""), source="page")),
    "reject": ("proposal.reject", lambda r, pk: services.proposal_reject(
        actor=r.user, proposal_id=pk, comment=r.POST.get("comment", ""), source="page")),
    "activate": ("proposal.activate", lambda r, pk: services.proposal_activate(
        actor=r.user, proposal_id=pk, activate_at=_parse_activate_at(r.POST.get("activate_at", "")), source="page")),
}


@login_required
@require_POST
def proposal_action_page(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """POST one workflow action; success redirects to the detail page, a refusal re-renders it (4xx)."""
    if action not in ACTIONS:
        return render(request, "audits/forbidden.html", {"message": f"Unknown action {action!r}."}, status=404)
    audit_action, call = ACTIONS[action]
    if not selectors.user_roles(request.user):
        return _forbidden(request, action=audit_action, proposal_id=pk)
    try:
        call(request, pk)
    except services.GovernanceError as exc:
        proposal = selectors.proposal_get(proposal_id=pk)
        if proposal is None:
            return render(request, "audits/forbidden.html", {"message": exc.message}, status=exc.status)
        context = _detail_context(request, proposal)
        context["error"] = exc.message
        return render(request, "audits/proposal_detail.html", context, status=exc.status)
    messages.success(request, f"Done: {action}.")
    return HttpResponseRedirect(reverse("audits:proposal-detail", args=[pk]), status=303)


@login_required
@require_POST
def rollback_page(request: HttpRequest) -> HttpResponse:
    if not selectors.user_roles(request.user):
        return _forbidden(request, action="policy.rollback")
    try:
        proposal = services.policy_rollback(actor=request.user, reason=request.POST.get("reason", ""), source="page")
    except services.GovernanceError as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(reverse("audits:proposal-list"), status=303)
    messages.success(request, f"Rolled back: v{proposal.candidate.number} is active.")
    return HttpResponseRedirect(reverse("audits:proposal-detail", args=[proposal.pk]), status=303)


@login_required
@require_GET
def audit_trail_page(request: HttpRequest) -> HttpResponse:
    if not selectors.user_roles(request.user):
        return _forbidden(request)
    proposal = request.GET.get("proposal", "")
    outcome = request.GET.get("outcome") or None
    events = selectors.audit_event_list(
        proposal_id=int(proposal) if proposal.isdigit() else None,
        outcome=outcome if outcome in AuditOutcome.values else None,
    )[:500]
    return render(request, "audits/audit_trail.html", {"events": events, "outcome": outcome, "proposal": proposal})
