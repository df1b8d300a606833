"""Shadow experiment pages: the list and a detail page with the report; engineers get the buttons.
Thin: reads call one selector, each POST one service (which checks the role and audits refusals)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from . import selectors, shadow_selectors, shadow_services
from .services import GovernanceError
from .views import _forbidden

ACTIONS = {
    "start": shadow_services.experiment_start,
    "pause": shadow_services.experiment_pause,
    "stop": shadow_services.experiment_stop,
    "to-proposal": shadow_services.experiment_to_proposal,
}


@login_required
@require_GET
def experiment_list_page(request: HttpRequest) -> HttpResponse:
    roles = selectors.user_roles(request.user)
    if not roles:
        return _forbidden(request)
    return render(request, "audits/experiment_list.html", {
        "experiments": shadow_selectors.experiment_list()[:200], "roles": sorted(roles),
    })


@login_required
@require_GET
def experiment_detail_page(request: HttpRequest, pk: int) -> HttpResponse:
    roles = selectors.user_roles(request.user)
    if not roles:
        return _forbidden(request)
    experiment = shadow_selectors.experiment_get(experiment_id=pk)
    if experiment is None:
        return render(request, "audits/forbidden.html", {"message": f"Experiment {pk} does not exist."}, status=404)
    report = shadow_selectors.experiment_report(experiment)
    return render(request, "audits/experiment_detail.html", {
        "experiment": experiment, "report": report, "evidence": report.as_dict(),
        "can_manage": selectors.ENGINEER in roles, "roles": sorted(roles),
    })


@login_required
@require_POST
def experiment_action_page(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    service = ACTIONS.get(action)
    if service is None:
        return render(request, "audits/forbidden.html", {"message": f"Unknown action {action!r}."}, status=404)
    try:
        service(actor=request.user, experiment_id=pk, source="page")
    except GovernanceError as exc:
        if exc.status == 403:
            return _forbidden(request, exc.message)
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Experiment {pk}: {action.replace('-', ' ')} done.")
    return HttpResponseRedirect(reverse("audits:experiment-detail", args=[pk]))
