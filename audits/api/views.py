"""Governance REST API (session auth, DRF sync views: not on the serving hot path).

Views parse input, call one service or selector and serialise. Role checks for *writes* are the
services' (so that a refused attempt is audited the same way from every entry point); reads need
any governance role. Every error is a 4xx JSON body `{"error": {"code", "message", "field"}}`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audits import selectors, services

from .serializers import (
    ActivateInput,
    AuditEventOutput,
    ProposalCreateInput,
    ReviewInput,
    RollbackInput,
    proposal_detail,
    proposal_summary,
)

MAX_LIMIT = 1000


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def _first_error(detail: Any, field: str | None = None) -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for key, value in detail.items():
            return _first_error(value, None if key == "non_field_errors" else str(key))
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], field)
    return field, str(detail)


class GovernanceApi(APIView):
    """Base: JSON errors in the native shape; lazy due-activation when tasks run in-process."""

    action = "api.read"  # the audit action of a refused write by a user without any governance role

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not selectors.user_roles(request.user):
            message = "a governance role (engineer, reviewer or finance) is required"
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                services.audit_denied_access(actor=request.user, action=self.action, source="api", message=message,
                                             proposal_id=kwargs.get("pk"))
            raise exceptions.PermissionDenied(message)
        if settings.CELERY_TASK_ALWAYS_EAGER:
            # No beat process in the embedded mode: scheduled activations happen on the next visit.
            services.proposals_activate_due()

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, services.GovernanceError):
            return Response(error_body(exc.code, exc.message, exc.field), status=exc.status)
        if isinstance(exc, exceptions.ValidationError):
            field, message = _first_error(exc.detail)
            body = error_body("invalid", f"{field}: {message}" if field else message, field)
            body["error"]["details"] = exc.detail
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        response = super().handle_exception(exc)
        if isinstance(exc, exceptions.APIException):
            code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
            response.data = error_body(str(code), str(exc.detail))
        return response

    def input(self, serializer_class: type, request: Request) -> dict[str, Any]:
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


def _limit(request: Request, default: int = 200) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise exceptions.ValidationError({"limit": [f"must be an integer between 1 and {MAX_LIMIT}"]})
    return int(raw)


class ProposalListCreateApi(GovernanceApi):
    """GET: proposals, newest first (?status=). POST (engineer): a draft (or, with propose, proposed)."""

    action = "proposal.create"

    @extend_schema(operation_id="proposals_list", tags=["governance"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        proposals = selectors.proposal_list(status=request.query_params.get("status") or None)[:_limit(request)]
        return Response({"results": [proposal_summary(p) for p in proposals]})

    @extend_schema(operation_id="proposals_create", tags=["governance"],
                   request=ProposalCreateInput, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = self.input(ProposalCreateInput, request)
        proposal = services.proposal_create(
            actor=request.user, title=data["title"], description=data["description"], settings=data["settings"],
            activate_at=data["activate_at"], source="api",
        )
        if data["propose"]:
            services.proposal_propose(actor=request.user, proposal_id=proposal.pk, source="api")
        proposal = selectors.proposal_get(proposal_id=proposal.pk)
        return Response(proposal_detail(proposal, user=request.user), status=status.HTTP_201_CREATED)


class ProposalDetailApi(GovernanceApi):
    """GET: one proposal with its readable diff against the base version and its evaluation."""

    @extend_schema(operation_id="proposals_retrieve", tags=["governance"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        proposal = selectors.proposal_get(proposal_id=pk)
        if proposal is None:
            raise services.NotFound(f"proposal {pk} does not exist")
        return Response(proposal_detail(proposal, user=request.user))


class _ProposalActionApi(GovernanceApi):
    def respond(self, request: Request, pk: int) -> Response:
        proposal = selectors.proposal_get(proposal_id=pk)
        return Response(proposal_detail(proposal, user=request.user))


class ProposalProposeApi(_ProposalActionApi):
    action = "proposal.propose"

    @extend_schema(operation_id="proposals_propose", tags=["governance"], request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        services.proposal_propose(actor=request.user, proposal_id=pk, source="api")
        return self.respond(request, pk)


class ProposalEvaluateApi(_ProposalActionApi):
    action = "proposal.evaluate"

    @extend_schema(operation_id="proposals_evaluate", tags=["governance"], request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        services.proposal_reevaluate(actor=request.user, proposal_id=pk, source="api")
        return self.respond(request, pk)


class ProposalApproveApi(_ProposalActionApi):
    action = "proposal.approve"

    @extend_schema(operation_id="proposals_approve", tags=["governance"],
                   request=ReviewInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        data = self.input(ReviewInput, request)
        services.proposal_approve(actor=request.user, proposal_id=pk, comment=data["comment"], source="api")
        return self.respond(request, pk)


class ProposalRejectApi(_ProposalActionApi):
    action = "proposal.reject"

    @extend_schema(operation_id="proposals_reject", tags=["governance"],
                   request=ReviewInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        data = self.input(ReviewInput, request)
        services.proposal_reject(actor=request.user, proposal_id=pk, comment=data["comment"], source="api")
        return self.respond(request, pk)


class ProposalActivateApi(_ProposalActionApi):
    action = "proposal.activate"

    @extend_schema(operation_id="proposals_activate", tags=["governance"],
                   request=ActivateInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        data = self.input(ActivateInput, request)
        services.proposal_activate(actor=request.user, proposal_id=pk, activate_at=data["activate_at"], source="api")
        return self.respond(request, pk)


class PolicyRollbackApi(GovernanceApi):
    """POST (engineer): restore the previously active version's settings, at once."""

    action = "policy.rollback"

    @extend_schema(operation_id="proposals_rollback", tags=["governance"],
                   request=RollbackInput, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = self.input(RollbackInput, request)
        proposal = services.policy_rollback(actor=request.user, reason=data["reason"], source="api")
        proposal = selectors.proposal_get(proposal_id=proposal.pk)
        return Response(proposal_detail(proposal, user=request.user), status=status.HTTP_201_CREATED)


class AuditEventListApi(GovernanceApi):
    """GET: the audit trail, newest first (?proposal=, ?outcome=success|denied, ?action=, ?limit=)."""

    @extend_schema(operation_id="audit_events_list", tags=["governance"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        proposal = request.query_params.get("proposal")
        if proposal is not None and not proposal.isdigit():
            raise exceptions.ValidationError({"proposal": ["must be a proposal id"]})
        events = selectors.audit_event_list(
            proposal_id=int(proposal) if proposal else None,
            outcome=request.query_params.get("outcome") or None,
            action=request.query_params.get("action") or None,
        )[:_limit(request)]
        return Response({"results": AuditEventOutput(events, many=True).data})
