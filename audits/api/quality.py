"""Quality REST API: judge audits, the quality report, drift alerts and the drift baseline.

Reads need any governance role (engineer, reviewer, finance); acknowledging alerts and pinning
the baseline need the engineer role. Errors are 4xx JSON in the governance shape.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from audits import drift, selectors, services
from audits.models import DriftAlert, JudgeAudit
from audits.quality_selectors import quality_report

from .views import GovernanceApi, _limit


def require_engineer(request: Request) -> None:
    if selectors.ENGINEER not in selectors.user_roles(request.user):
        raise exceptions.PermissionDenied("the engineer role is required")


def audit_output(a: JudgeAudit) -> dict[str, Any]:
    return {
        "request_id": str(a.request_id), "status": a.status, "route": a.sample.route,
        "executor_model": a.sample.executor_model, "confidence": a.sample.confidence,
        "stratum": a.sample.stratum, "probability": a.sample.probability, "weight": a.sample.weight,
        "judge_model": a.judge_model, "judge_model_version": a.judge_model_version, "score": a.score,
        "rationale": a.rationale, "question_complexity": a.question_complexity, "misroute": a.misroute,
        "applied": a.applied, "created_at": a.created_at, "scored_at": a.scored_at,
    }


class JudgeAuditListApi(GovernanceApi):
    """GET: judge audits, newest first (?misroute=under_routed|over_routed, ?limit=)."""

    @extend_schema(operation_id="judge_audits_list", tags=["quality"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        rows = JudgeAudit.objects.select_related("sample")
        misroute = request.query_params.get("misroute")
        if misroute:
            if misroute not in ("under_routed", "over_routed"):
                raise exceptions.ValidationError({"misroute": ["must be under_routed or over_routed"]})
            rows = rows.filter(misroute=misroute)
        return Response({"results": [audit_output(a) for a in rows[:_limit(request)]]})


class QualityReportApi(GovernanceApi):
    """GET: weighted quality by route, executor model and confidence bucket; calibration; feedback."""

    @extend_schema(operation_id="quality_report", tags=["quality"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(asdict(quality_report()))


def alert_output(a: DriftAlert) -> dict[str, Any]:
    return {**drift.alert_payload(a), "acknowledged_by": a.acknowledged_by, "webhook_status": a.webhook_status}


class DriftAlertListApi(GovernanceApi):
    """GET: drift alerts, newest first (?open=1 for unacknowledged only)."""

    @extend_schema(operation_id="drift_alerts_list", tags=["quality"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        rows = DriftAlert.objects.all()
        if request.query_params.get("open") in ("1", "true"):
            rows = rows.filter(acknowledged_at__isnull=True)
        return Response({"results": [alert_output(a) for a in rows[:_limit(request)]]})


class DriftAlertAcknowledgeApi(GovernanceApi):
    action = "drift_alert.acknowledge"

    @extend_schema(operation_id="drift_alerts_acknowledge", tags=["quality"], request=None,
                   responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        require_engineer(request)
        alert = drift.alert_acknowledge(alert_id=pk, actor=request.user.get_username())
        if alert is None:
            raise services.NotFound(f"alert {pk} does not exist")
        return Response(alert_output(alert))


class DriftBaselineApi(GovernanceApi):
    """GET: the pinned baseline. POST (engineer): pin the last 7 days as the baseline."""

    action = "drift_baseline.pin"

    @extend_schema(operation_id="drift_baseline_get", tags=["quality"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        from audits.models import DriftBaseline

        baseline = DriftBaseline.objects.filter(pinned=True).first()
        if baseline is None:
            raise services.NotFound("no baseline is pinned")
        return Response({"id": baseline.pk, "created_at": baseline.created_at, "created_by": baseline.created_by,
                         "snapshot": baseline.snapshot})

    @extend_schema(operation_id="drift_baseline_pin", tags=["quality"], request=None,
                   responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        require_engineer(request)
        baseline = drift.baseline_pin(actor=request.user.get_username())
        return Response({"id": baseline.pk, "created_at": baseline.created_at, "created_by": baseline.created_by,
                         "snapshot": baseline.snapshot}, status=status.HTTP_201_CREATED)
