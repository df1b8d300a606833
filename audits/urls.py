"""URLs of the audits app: the governance API (/api/v1/proposals/, /api/v1/audit-events/) and pages
(/governance/...), the quality API (/api/v1/quality/..., /api/v1/drift/...) and shadow experiments
(/api/v1/experiments/..., /governance/experiments/...)."""

from django.urls import include, path

from . import quality_views, shadow_views, views
from .api import quality as quality_api
from .api import shadow as shadow_api
from .api import views as api

app_name = "audits"

api_patterns = [
    path("proposals/", api.ProposalListCreateApi.as_view(), name="api-proposal-list"),
    path("proposals/rollback", api.PolicyRollbackApi.as_view(), name="api-policy-rollback"),
    path("proposals/<int:pk>/", api.ProposalDetailApi.as_view(), name="api-proposal-detail"),
    path("proposals/<int:pk>/propose", api.ProposalProposeApi.as_view(), name="api-proposal-propose"),
    path("proposals/<int:pk>/evaluate", api.ProposalEvaluateApi.as_view(), name="api-proposal-evaluate"),
    path("proposals/<int:pk>/approve", api.ProposalApproveApi.as_view(), name="api-proposal-approve"),
    path("proposals/<int:pk>/reject", api.ProposalRejectApi.as_view(), name="api-proposal-reject"),
    path("proposals/<int:pk>/activate", api.ProposalActivateApi.as_view(), name="api-proposal-activate"),
    path("audit-events/", api.AuditEventListApi.as_view(), name="api-audit-events"),
    path("quality/audits/", quality_api.JudgeAuditListApi.as_view(), name="api-judge-audits"),
    path("quality/report/", quality_api.QualityReportApi.as_view(), name="api-quality-report"),
    path("drift/alerts/", quality_api.DriftAlertListApi.as_view(), name="api-drift-alerts"),
    path("drift/alerts/<int:pk>/acknowledge", quality_api.DriftAlertAcknowledgeApi.as_view(),
         name="api-drift-alert-acknowledge"),
    path("drift/baseline/", quality_api.DriftBaselineApi.as_view(), name="api-drift-baseline"),
    path("experiments/", shadow_api.ExperimentListCreateApi.as_view(), name="api-experiment-list"),
    path("experiments/<int:pk>/", shadow_api.ExperimentDetailApi.as_view(), name="api-experiment-detail"),
    path("experiments/<int:pk>/start", shadow_api.ExperimentStartApi.as_view(), name="api-experiment-start"),
    path("experiments/<int:pk>/pause", shadow_api.ExperimentPauseApi.as_view(), name="api-experiment-pause"),
    path("experiments/<int:pk>/stop", shadow_api.ExperimentStopApi.as_view(), name="api-experiment-stop"),
    path("experiments/<int:pk>/to-proposal", shadow_api.ExperimentToProposalApi.as_view(),
         name="api-experiment-to-proposal"),
]

urlpatterns = [
    path("api/v1/", include(api_patterns)),
    path("governance/proposals/", views.proposal_list_page, name="proposal-list"),
    path("governance/proposals/rollback", views.rollback_page, name="policy-rollback"),
    path("governance/proposals/<int:pk>/", views.proposal_detail_page, name="proposal-detail"),
    path("governance/proposals/<int:pk>/<slug:action>", views.proposal_action_page, name="proposal-action"),
    path("governance/audit/", views.audit_trail_page, name="audit-trail"),
    path("governance/quality/", quality_views.quality_page, name="quality"),
    path("governance/alerts/", quality_views.alerts_page, name="drift-alerts"),
    path("governance/alerts/<int:pk>/acknowledge", quality_views.alert_acknowledge_page,
         name="drift-alert-acknowledge"),
    path("governance/alerts/baseline", quality_views.baseline_pin_page, name="drift-baseline-pin"),
    path("governance/experiments/", shadow_views.experiment_list_page, name="experiment-list"),
    path("governance/experiments/<int:pk>/", shadow_views.experiment_detail_page, name="experiment-detail"),
    path("governance/experiments/<int:pk>/<slug:action>", shadow_views.experiment_action_page,
         name="experiment-action"),
]
