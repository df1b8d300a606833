"""The authorization matrix: EVERY URL pattern the resolver knows × GET/POST/PUT/PATCH/DELETE × six
personas, against an explicit table of expected outcomes. A URL added without a row here fails.

Personas (as `manage.py bootstrap --demo` makes them): anonymous; an outsider signed in without
any role; an engineer, a reviewer and a finance user (staff, each in their group); an admin
(superuser). Outcomes, per request:

    ok       the view ran past its access checks (2xx, a redirect that is not to a login page,
             or a 400/404/409 about the input or the object)
    refused  a service refused the action and wrote a denied audit row (a page that redirects with
             the error instead of answering 403)
    login    302 to a login page
    401 403 405

Objects referenced by `<pk>` and admin `<object_id>` exist (so that a check done after a lookup
is exercised too), except proposal actions, which name a missing proposal: their services check
the role before the lookup, and a real one would start evaluations. Admin requests carry no form
data, so even an allowed delete only shows its confirmation page.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import URLResolver, get_resolver
from django.utils import timezone

from tests.audits.conftest import small_evalset  # noqa: F401 - re-exported fixture

pytestmark = pytest.mark.django_db(transaction=True)

PERSONAS = ("anonymous", "outsider", "engineer", "reviewer", "finance", "admin")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MISSING = 999999

# ---- the table: pattern → {method or "*": outcomes for the six personas, in PERSONAS order} ----
ALL_LOGIN = "login login login login login login"
KEY_ONLY = {"POST": "401 401 401 401 401 401", "*": "405 405 405 405 405 405"}  # API-key endpoints
PUBLIC_GET = {"GET": "ok ok ok ok ok ok", "*": "405 405 405 405 405 405"}
GOV_READ = {"GET": "403 403 ok ok ok ok", "*": "403 403 405 405 405 405"}  # governance API, read-only
ENGINEER_WRITE = {"POST": "403 403 ok 403 403 ok", "*": "403 403 405 405 405 405"}
REVIEWER_WRITE = {"POST": "403 403 403 ok 403 ok", "*": "403 403 405 405 405 405"}
PAGE_READ = {"GET": "login 403 ok ok ok ok", "*": "login 405 405 405 405 405"}
PAGE_ENGINEER_POST = {"POST": "login 403 ok 403 403 ok", "*": "login 405 405 405 405 405"}
DASHBOARD = {"GET": "login 403 ok ok ok ok", "*": "405 405 405 405 405 405"}

EXPECTED: dict[str, dict[str, str]] = {
    # operations
    "healthz": {"*": "ok ok ok ok ok ok"},  # a load balancer's probe: any method, no auth
    "metrics": {"*": "ok ok ok ok ok ok"},  # public unless METRICS_TOKEN is set (tested below)
    # the serving API: API keys only, a session is worth nothing
    "api/v1/route": KEY_ONLY, "api/v1/complete": KEY_ONLY, "api/v1/feedback": KEY_ONLY,
    "v1/chat/completions": KEY_ONLY, "v1/messages": KEY_ONLY,
    "api/v1/stats/cache": {"GET": "401 401 401 401 401 401", "*": "405 405 405 405 405 405"},
    "api/schema/": PUBLIC_GET, "api/docs/": PUBLIC_GET,
    # governance API (session auth; the services check write roles and audit refusals)
    "api/v1/proposals/": {"GET": "403 403 ok ok ok ok", "POST": "403 403 ok 403 403 ok",
                          "*": "403 403 405 405 405 405"},
    "api/v1/proposals/rollback": ENGINEER_WRITE,
    "api/v1/proposals/<int:pk>/": GOV_READ,
    "api/v1/proposals/<int:pk>/propose": ENGINEER_WRITE,
    "api/v1/proposals/<int:pk>/evaluate": ENGINEER_WRITE,
    "api/v1/proposals/<int:pk>/approve": REVIEWER_WRITE,
    "api/v1/proposals/<int:pk>/reject": REVIEWER_WRITE,
    "api/v1/proposals/<int:pk>/activate": ENGINEER_WRITE,
    "api/v1/audit-events/": GOV_READ,
    "api/v1/quality/audits/": GOV_READ,
    "api/v1/quality/report/": GOV_READ,
    "api/v1/drift/alerts/": GOV_READ,
    "api/v1/drift/alerts/<int:pk>/acknowledge": ENGINEER_WRITE,
    "api/v1/drift/baseline/": {"GET": "403 403 ok ok ok ok", "POST": "403 403 ok 403 403 ok",
                               "*": "403 403 405 405 405 405"},
    "api/v1/experiments/": {"GET": "403 403 ok ok ok ok", "POST": "403 403 ok 403 403 ok",
                            "*": "403 403 405 405 405 405"},
    "api/v1/experiments/<int:pk>/": GOV_READ,
    "api/v1/experiments/<int:pk>/start": ENGINEER_WRITE,
    "api/v1/experiments/<int:pk>/pause": ENGINEER_WRITE,
    "api/v1/experiments/<int:pk>/stop": ENGINEER_WRITE,
    "api/v1/experiments/<int:pk>/to-proposal": ENGINEER_WRITE,
    # governance pages
    "governance/proposals/": PAGE_READ,
    "governance/proposals/rollback": {"POST": "login 403 ok refused refused ok", "*": "login 405 405 405 405 405"},
    "governance/proposals/<int:pk>/": PAGE_READ,
    "governance/proposals/<int:pk>/<slug:action>": {"POST": "login 403 403 ok 403 ok",  # approve
                                                     "*": "login 405 405 405 405 405"},
    "governance/audit/": PAGE_READ,
    "governance/quality/": PAGE_READ,
    "governance/alerts/": PAGE_READ,
    "governance/alerts/<int:pk>/acknowledge": PAGE_ENGINEER_POST,
    "governance/alerts/baseline": PAGE_ENGINEER_POST,
    "governance/experiments/": PAGE_READ,
    "governance/experiments/<int:pk>/": PAGE_READ,
    "governance/experiments/<int:pk>/<slug:action>": PAGE_ENGINEER_POST,  # start
    # dashboards
    "": DASHBOARD, "dashboard/cost/": DASHBOARD, "dashboard/quality/": DASHBOARD,
    "dashboard/latency/": DASHBOARD, "dashboard/mix/": DASHBOARD, "dashboard/calculator/": DASHBOARD,
    "dashboard/plotly.min.js": {"*": "ok ok ok ok ok ok"},  # a static asset
    # the admin site (staff only; role users are staff without model permissions)
    "admin/": {"*": "login login ok ok ok ok"},
    "admin/login/": {"GET": "ok ok ok ok ok ok", "POST": "ok ok ok ok ok ok", "PUT": "ok ok ok ok ok ok",
                     "*": "405 405 405 405 405 405"},
    "admin/logout/": {"POST": "ok ok ok ok ok ok", "*": "ok ok 405 405 405 405"},
    "admin/password_change/": {"GET": "login login ok ok ok ok", "POST": "login login ok ok ok ok",
                               "PUT": "login login ok ok ok ok", "*": "login login 405 405 405 405"},
    "admin/password_change/done/": {"GET": "login login ok ok ok ok", "*": "login login 405 405 405 405"},
    "admin/autocomplete/": {"GET": "login login 403 403 403 403", "*": "login login 405 405 405 405"},
    "admin/jsi18n/": {"GET": "login login ok ok ok ok", "*": "login login 405 405 405 405"},
    "admin/r/<path:content_type_id>/<path:object_id>/": {"*": "login login ok ok ok ok"},
    "admin/^(?P<app_label>auth|routing|audits)/$": {"*": "login login ok ok ok ok"},
    "admin/(?P<url>.*)$": {"*": "login login ok ok ok ok"},
}

# Admin model pages: each registered model has an access class; the class gives the outcomes of its
# six pages. Staff role users see the governance models and the decision log, read-only; only
# superusers edit the catalog, keys and users; nobody adds or deletes governance or log rows.
ADMIN_MODELS = {
    "auth/group": "superuser", "auth/user": "superuser",
    "routing/modelprice": "superuser", "routing/route": "superuser", "routing/tool": "superuser",
    "routing/application": "superuser", "routing/apikey": "superuser_no_delete",
    "routing/catalogsettings": "superuser_singleton",
    "routing/catalogchange": "superuser_read", "routing/feedback": "superuser_read",
    "routing/policyversion": "superuser_read",
    "routing/decision": "staff_read",
    "audits/proposal": "staff_read", "audits/auditevent": "staff_read", "audits/judgeaudit": "staff_read",
    "audits/driftalert": "staff_read", "audits/shadowexperiment": "staff_read",
    "audits/shadowdecision": "staff_read",
}
_S = "login login 403 403 403 ok"  # superuser only
_R = "login login ok ok ok ok"  # every staff user (role users are staff)
_N = "login login 403 403 403 403"  # nobody
ADMIN_CLASSES: dict[str, dict[str, str]] = {
    # page: changelist, add, history, delete, change, object (the redirect to change)
    "superuser": {"changelist": _S, "add": _S, "history": _S, "delete": _S, "change": _S, "object": _R},
    "superuser_no_delete": {"changelist": _S, "add": _S, "history": _S, "delete": _N, "change": _S, "object": _R},
    "superuser_singleton": {"changelist": _S, "add": _N, "history": _S, "delete": _N, "change": _S, "object": _R},
    "superuser_read": {"changelist": _S, "add": _N, "history": _S, "delete": _N, "change": _S,
                       "change:POST": _N, "object": _R},
    "staff_read": {"changelist": _R, "add": _N, "history": _R, "delete": _N, "change": _R,
                   "change:POST": _N, "object": _R},
}
ADMIN_PAGE = re.compile(r"^admin/(?P<model>\w+/\w+)/(?:<path:object_id>/)?(?P<page>add/|history/|delete/|change/)?$")


def expected_for(pattern: str, method: str) -> str | None:
    if pattern in EXPECTED:
        row = EXPECTED[pattern]
        return row.get(method, row.get("*"))
    if pattern == "admin/auth/user/<id>/password/":
        return _S
    match = ADMIN_PAGE.match(pattern)
    if match and match["model"] in ADMIN_MODELS:
        page = (match["page"] or "").rstrip("/") or ("object" if "<path:object_id>" in pattern else "changelist")
        rules = ADMIN_CLASSES[ADMIN_MODELS[match["model"]]]
        return rules.get(f"{page}:{method}", rules[page])
    return None


# ---- enumeration ----------------------------------------------------------------------------------

def url_patterns() -> list[tuple[str, str | None]]:
    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            else:
                yield prefix + str(p.pattern), p.name
    return list(walk(get_resolver().url_patterns))


def test_every_url_pattern_has_a_row_in_the_table():
    missing = [p for p, _ in url_patterns() if any(expected_for(p, m) is None for m in METHODS)]
    assert not missing, f"URL patterns without an expected outcome: {missing}"
    stale = set(EXPECTED) - {p for p, _ in url_patterns()}
    assert not stale, f"table rows for URLs that no longer exist: {stale}"


# ---- the objects and the personas -----------------------------------------------------------------

def objects(engineer) -> dict[str, object]:
    from audits.models import AuditSample, DriftAlert, JudgeAudit, ShadowDecision, ShadowExperiment
    from audits.services import proposal_create
    from routing.models import (
        ApiKey, CatalogChange, CatalogSettings, Decision, Feedback, ModelPrice, PolicyVersion, Route, Tool,
    )
    from routing.services import api_key_create, application_get_or_create

    proposal = proposal_create(actor=engineer, title="matrix", settings={"confidence_threshold": "0.800"})
    experiment = ShadowExperiment.objects.create(
        name="matrix", candidate=PolicyVersion.objects.create(
            number=PolicyVersion.objects.count() + 10, status="draft", confidence_threshold=Decimal("0.9")),
        sample_rate=Decimal("0.5"), window_start=timezone.now() - timedelta(hours=1),
        window_end=timezone.now() + timedelta(days=1))
    request_id = uuid.uuid4()
    app = application_get_or_create(name="matrix-app")
    api_key_create(name="matrix key", application=app)
    Decision.objects.create(request_id=request_id, endpoint="complete", route="simple_qa")
    Feedback.objects.create(request_id=request_id, application=app, score=4)
    sample = AuditSample.objects.create(request_id=request_id, route="simple_qa", executor_model="m", confidence=0.9,
                                        stratum="simple_qa|high", probability=1.0, weight=1.0, prompt="q",
                                        answer="a")
    JudgeAudit.objects.create(sample=sample, request_id=request_id, judge_model="claude-opus-4-7")
    alert = DriftAlert.objects.create(kind="model_version", key="matrix", message="matrix alert")
    ShadowDecision.objects.create(experiment=experiment, request_id=request_id, production_route="simple_qa",
                                  candidate_route="simple_qa", candidate_reason="same")
    return {
        "auth/group": Group.objects.first(), "auth/user": engineer, "routing/modelprice": ModelPrice.objects.first(),
        "routing/route": Route.objects.first(), "routing/tool": Tool.objects.first(), "routing/application": app,
        "routing/apikey": ApiKey.objects.first(), "routing/catalogsettings": CatalogSettings.objects.first(),
        "routing/catalogchange": CatalogChange.objects.first(), "routing/feedback": Feedback.objects.first(),
        "routing/policyversion": PolicyVersion.objects.first(), "routing/decision": Decision.objects.first(),
        "audits/proposal": proposal, "audits/auditevent": _first_audit_event(),
        "audits/judgeaudit": JudgeAudit.objects.first(), "audits/driftalert": alert,
        "audits/shadowexperiment": experiment, "audits/shadowdecision": ShadowDecision.objects.first(),
        "proposal": proposal, "experiment": experiment, "alert": alert,
    }


def _first_audit_event():
    from audits.models import AuditEvent

    return AuditEvent.objects.first()


def concrete_url(pattern: str, name: str | None, objs: dict) -> str:
    url = pattern.replace("^", "").replace("$", "")
    url = re.sub(r"\(\?P<app_label>[^)]*\)", "routing", url)
    url = re.sub(r"\(\?P<url>\.\*\)", "no-such-page/", url)
    url = url.replace("<path:content_type_id>", "1")
    if "<int:pk>" in url:
        if url.startswith(("api/v1/experiments", "governance/experiments")):
            pk = objs["experiment"].pk
        elif "alerts" in url:
            pk = objs["alert"].pk
        elif name in ("api-proposal-detail", "proposal-detail"):
            pk = objs["proposal"].pk
        else:
            pk = MISSING  # proposal actions: see the module docstring
        url = url.replace("<int:pk>", str(pk))
    url = url.replace("<slug:action>", "start" if url.startswith("governance/experiments") else "approve")
    if "<path:object_id>" in url or "<id>" in url:
        model = re.match(r"admin/(\w+/\w+)/", url)
        obj = objs.get(model[1]) if model else None
        object_id = str(obj.pk) if obj is not None else str(MISSING)
        url = url.replace("<path:object_id>", object_id).replace("<id>", object_id)
    return "/" + url


BODIES = {  # a plausible body, so that an allowed POST gets past input validation to the role check
    "/api/v1/proposals/": {"title": "matrix", "settings": {"confidence_threshold": "0.850"}},
    "/api/v1/experiments/": {"name": "matrix", "sample_rate": "0.5", "settings": {"confidence_threshold": "0.85"}},
}


def request(client: Client, method: str, url: str):
    if method == "POST" and url.startswith("/api/v1/"):
        body = BODIES.get(url, {"comment": "matrix"})
        return client.post(url, data=body, content_type="application/json")
    if method == "POST" and url.startswith("/governance/"):
        return client.post(url, data={"comment": "matrix", "reason": "matrix"})
    return getattr(client, method.lower())(url)


def outcome(response, denied_before: int) -> str:
    from audits.models import AuditEvent

    status = response.status_code
    if status in (301, 302, 303) and "/login/" in response.get("Location", ""):
        return "login"
    if status in (401, 403, 405):
        return str(status)
    if status >= 500:
        return "500"
    # A refusal for lack of a role (or by the four-eyes rule) that the response did not show as a
    # 403; refusals about the object's state or existence are the view working, hence "ok".
    new = AuditEvent.objects.filter(outcome="denied").order_by("id")[denied_before:]
    if any(ROLE_REFUSAL.search(event.message) for event in new):
        return "refused"
    return "ok"


ROLE_REFUSAL = re.compile(r"role|four-eyes")


def persona_client(name: str) -> tuple[Client, object | None]:
    User = get_user_model()
    client = Client()
    if name == "anonymous":
        return client, None
    if name == "admin":
        user = User.objects.create_superuser("matrix-admin", password="x")
    elif name == "outsider":
        user = User.objects.create_user("matrix-outsider", password="x")
    else:
        user = User.objects.create_user(f"matrix-{name}", password="x", is_staff=True)
        user.groups.add(Group.objects.get(name=name))
    client.force_login(user)
    return client, user


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_persona_gets_exactly_the_expected_outcome_everywhere(persona, catalog, emu, small_evalset, settings):
    from audits.models import AuditEvent

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.METRICS_TOKEN = None
    engineer = get_user_model().objects.create_user("matrix-author", is_staff=True)
    engineer.groups.add(Group.objects.get(name="engineer"))
    objs = objects(engineer)
    client, user = persona_client(persona)
    column = PERSONAS.index(persona)
    wrong = []
    for pattern, name in url_patterns():
        url = concrete_url(pattern, name, objs)
        for method in METHODS:
            denied = AuditEvent.objects.filter(outcome="denied").count()
            response = request(client, method, url)
            got = outcome(response, denied)
            want = expected_for(pattern, method).split()[column]
            if got != want:
                wrong.append(f"{method:6} {url:60} expected {want:8} got {got} ({response.status_code})")
            if "logout" in url and user is not None:
                client.force_login(user)
    assert not wrong, f"{persona}: {len(wrong)} outcome(s) differ from the table:\n" + "\n".join(wrong)


def test_metrics_with_a_token_refuses_every_persona_without_it(settings, catalog):
    settings.METRICS_TOKEN = "matrix-metrics-token"
    admin = get_user_model().objects.create_superuser("metrics-admin", password="x")
    signed_in = Client()
    signed_in.force_login(admin)
    for client in (Client(), signed_in):
        for method in ("get", "post"):
            assert getattr(client, method)("/metrics").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer matrix-metrics-tokenX").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer matrix-metrics-token").status_code == 200
