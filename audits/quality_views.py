"""Quality pages: judge audits and the weighted quality report; drift alerts (acknowledge, pin baseline).
Thin: reads call one selector, each POST one service; engineers write, every governance role reads."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from . import drift, selectors
from .models import DriftAlert, DriftBaseline, JudgeAudit
from .quality_selectors import NO_INFORMATION, quality_report
from .views import _forbidden


@login_required
@require_GET
def quality_page(request: HttpRequest) -> HttpResponse:
    roles = selectors.user_roles(request.user)
    if not roles:
        return _forbidden(request)
    return render(request, "audits/quality.html", {
        "report": quality_report(),
        "audits": JudgeAudit.objects.select_related("sample")[:100],
        "no_information": NO_INFORMATION,
        "roles": sorted(roles),
    })


@login_required
@require_GET
def alerts_page(request: HttpRequest) -> HttpResponse:
    roles = selectors.user_roles(request.user)
    if not roles:
        return _forbidden(request)
    return render(request, "audits/drift_alerts.html", {
        "alerts": DriftAlert.objects.all()[:200],
        "baseline": DriftBaseline.objects.filter(pinned=True).first(),
        "can_manage": selectors.ENGINEER in roles,
        "roles": sorted(roles),
    })


def _engineer_only(request: HttpRequest) -> HttpResponse | None:
    if selectors.ENGINEER not in selectors.user_roles(request.user):
        return _forbidden(request, "You need the engineer role to do this.")
    return None


@login_required
@require_POST
def alert_acknowledge_page(request: HttpRequest, pk: int) -> HttpResponse:
    if (refused := _engineer_only(request)) is not None:
        return refused
    if drift.alert_acknowledge(alert_id=pk, actor=request.user.get_username()) is None:
        messages.error(request, f"Alert {pk} does not exist.")
    return HttpResponseRedirect(reverse("audits:drift-alerts"))


@login_required
@require_POST
def baseline_pin_page(request: HttpRequest) -> HttpResponse:
    if (refused := _engineer_only(request)) is not None:
        return refused
    drift.baseline_pin(actor=request.user.get_username())
    messages.success(request, "The last 7 days are now the pinned drift baseline.")
    return HttpResponseRedirect(reverse("audits:drift-alerts"))
