"""Shadow experiments REST API (/api/v1/experiments/): create, list, detail with report, start,
pause, stop, to-proposal.

Reads need any governance role (engineers, reviewers, finance); writes are the engineer's, checked
(and refusals audited) by `audits.shadow_services`. Errors are 4xx JSON in the governance shape.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from audits import services, shadow_selectors, shadow_services
from audits.models import ShadowExperiment

from .views import GovernanceApi, _limit

DEFAULT_WINDOW = timedelta(days=7)


class ExperimentCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    candidate = serializers.IntegerField(required=False, allow_null=True, default=None,
                                         help_text="An existing, non-active policy version id.")
    settings = serializers.DictField(required=False, allow_null=True, default=None,
                                     help_text="Or: policy fields to change from the active version.")
    sample_rate = serializers.DecimalField(max_digits=5, decimal_places=4, min_value=0, max_value=1)
    window_start = serializers.DateTimeField(required=False, allow_null=True, default=None)
    window_end = serializers.DateTimeField(required=False, allow_null=True, default=None)


def experiment_output(e: ShadowExperiment, *, report: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": e.pk, "name": e.name, "status": e.status,
        "candidate": {"id": e.candidate_id, "number": e.candidate.number, "status": e.candidate.status},
        "sample_rate": str(e.sample_rate), "window_start": e.window_start, "window_end": e.window_end,
        "created_by": e.created_by.get_username() if e.created_by else None, "created_at": e.created_at,
        "started_at": e.started_at, "ended_at": e.ended_at, "proposal": e.proposal_id,
        "sampled": getattr(e, "sampled", None),
    }
    if report:
        data["report"] = shadow_selectors.experiment_report(e).as_dict()
    return data


class ExperimentApi(GovernanceApi):
    """Base: `pk` is an experiment, not a proposal, so a refused write is not linked to a proposal."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **{k: v for k, v in kwargs.items() if k != "pk"})


def _get(pk: int) -> ShadowExperiment:
    experiment = shadow_selectors.experiment_get(experiment_id=pk)
    if experiment is None:
        raise services.NotFound(f"experiment {pk} does not exist")
    return experiment


class ExperimentListCreateApi(ExperimentApi):
    """GET: experiments, newest first. POST (engineer): a draft experiment."""

    action = "experiment.create"

    @extend_schema(operation_id="experiments_list", tags=["experiments"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response({"results": [experiment_output(e)
                                     for e in shadow_selectors.experiment_list()[:_limit(request)]]})

    @extend_schema(operation_id="experiments_create", tags=["experiments"], request=ExperimentCreateInput,
                   responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = self.input(ExperimentCreateInput, request)
        start = data["window_start"] or timezone.now()
        experiment = shadow_services.experiment_create(
            actor=request.user, name=data["name"], candidate_id=data["candidate"], settings=data["settings"],
            sample_rate=data["sample_rate"], window_start=start, window_end=data["window_end"] or start + DEFAULT_WINDOW,
            source="api",
        )
        return Response(experiment_output(_get(experiment.pk), report=True), status=status.HTTP_201_CREATED)


class ExperimentDetailApi(ExperimentApi):
    """GET: one experiment with its report."""

    @extend_schema(operation_id="experiments_retrieve", tags=["experiments"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        return Response(experiment_output(_get(pk), report=True))


def _acted(request: Request, pk: int) -> Response:
    return Response(experiment_output(_get(pk), report=True))


class ExperimentStartApi(ExperimentApi):
    action = "experiment.start"

    @extend_schema(operation_id="experiments_start", tags=["experiments"], request=None,
                   responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        shadow_services.experiment_start(actor=request.user, experiment_id=pk, source="api")
        return _acted(request, pk)


class ExperimentPauseApi(ExperimentApi):
    action = "experiment.pause"

    @extend_schema(operation_id="experiments_pause", tags=["experiments"], request=None,
                   responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        shadow_services.experiment_pause(actor=request.user, experiment_id=pk, source="api")
        return _acted(request, pk)


class ExperimentStopApi(ExperimentApi):
    action = "experiment.stop"

    @extend_schema(operation_id="experiments_stop", tags=["experiments"], request=None,
                   responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        shadow_services.experiment_stop(actor=request.user, experiment_id=pk, source="api")
        return _acted(request, pk)


class ExperimentToProposalApi(ExperimentApi):
    """POST (engineer): a stopped/finished experiment becomes a proposed proposal (report as evidence)."""

    action = "experiment.to_proposal"

    @extend_schema(operation_id="experiments_to_proposal", tags=["experiments"], request=None,
                   responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, pk: int) -> Response:
        shadow_services.experiment_to_proposal(actor=request.user, experiment_id=pk, source="api")
        return _acted(request, pk)
