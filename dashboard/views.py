"""Dashboard pages: parse the filters, call one selector, build the charts, render (or send a CSV).

Access: every page is for the `engineer`, `reviewer` and `finance` groups (and superusers);
anyone else signed in gets 403, anonymous users go to the admin login.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import plotly
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import render
from django.utils.http import http_date
from django.views.decorators.http import require_GET

from routing.models import CatalogSettings, Route
from routing.selectors import active_policy, prices_in_effect

from . import charts, selectors
from .calculator import ScenarioError, estimate
from .filters import parse_filters
from .forms import CalculatorForm, calculator_initial
from .selectors import Table

DASHBOARD_GROUPS = ("engineer", "reviewer", "finance")
# Which groups see which page: all three see every page today (finance needs cost and the
# calculator, engineers and reviewers need quality, latency and the mix to judge policy changes).
PAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "overview": DASHBOARD_GROUPS, "cost": DASHBOARD_GROUPS, "quality": DASHBOARD_GROUPS,
    "latency": DASHBOARD_GROUPS, "mix": DASHBOARD_GROUPS, "calculator": DASHBOARD_GROUPS,
}
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def dashboard_page(page: str) -> Callable:
    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
            if not (user.is_superuser or user.groups.filter(name__in=PAGE_GROUPS[page]).exists()):
                raise PermissionDenied("Dashboards are for the engineer, reviewer and finance groups.")
            return view(request, *args, **kwargs)

        return require_GET(wrapper)

    return decorate


def csv_response(table: Table, filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    writer = csv.writer(response)
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow("" if value is None else value for value in row)
    return response


def _render(request: HttpRequest, page: str, data, chart_figures: dict[str, object], extra: dict | None = None):
    """The CSV of one chart when `?csv=<chart>` is asked for, the page otherwise."""
    wanted = request.GET.get("csv")
    if wanted:
        tables = data.tables()
        if wanted not in tables:
            raise Http404("no such chart")
        return csv_response(tables[wanted], f"{page}-{wanted}-{data.filters.start}-{data.filters.end}")
    filters = data.filters
    context = {
        "page": page,
        "data": data,
        "filters": filters,
        "querystring": filters.querystring(),
        "charts": {name: charts.to_html(fig, f"chart-{name}") for name, fig in chart_figures.items()},
        "options": selectors.filter_options(),
        "simulated": selectors.simulated_data_present(),
        "plotly_version": plotly.__version__,
        **(extra or {}),
    }
    return render(request, f"dashboard/{page}.html", context)


@dashboard_page("overview")
def home(request: HttpRequest) -> HttpResponse:
    filters, form = parse_filters(request.GET)
    data = selectors.overview(filters)
    return _render(request, "overview", data, {"spend": charts.overview_spend(data)}, {"filter_form": form})


@dashboard_page("cost")
def cost(request: HttpRequest) -> HttpResponse:
    filters, form = parse_filters(request.GET)
    data = selectors.cost(filters)
    figures = {
        "spend_by_route": charts.cost_spend_by_route(data),
        "cost_per_million": charts.cost_per_million(data),
        "tokens": charts.cost_tokens(data),
        "top_applications": charts.cost_top_applications(data),
    }
    return _render(request, "cost", data, figures, {"filter_form": form})


@dashboard_page("quality")
def quality(request: HttpRequest) -> HttpResponse:
    filters, form = parse_filters(request.GET)
    data = selectors.quality(filters)
    figures = {
        "by_route": charts.quality_by(data.by_route, "Acceptable answers by route"),
        "by_model": charts.quality_by(data.by_model, "Acceptable answers by executor model"),
        "reliability": charts.quality_reliability(data),
    }
    return _render(request, "quality", data, figures, {"filter_form": form})


@dashboard_page("latency")
def latency(request: HttpRequest) -> HttpResponse:
    filters, form = parse_filters(request.GET)
    try:
        q = int(request.GET.get("pct", 95))
    except ValueError:
        q = 95
    q = q if q in selectors.PERCENTILES else 95
    data = selectors.latency(filters)
    figures = {stage: charts.latency_stage(data, stage, q) for stage in ("sentinel", "executor", "overhead")}
    return _render(request, "latency", data, figures, {"filter_form": form, "pct": q,
                                                       "percentiles": selectors.PERCENTILES})


@dashboard_page("mix")
def mix(request: HttpRequest) -> HttpResponse:
    filters, form = parse_filters(request.GET)
    data = selectors.mix(filters)
    return _render(request, "mix", data, {"route_share": charts.mix_shares(data)}, {"filter_form": form})


@dashboard_page("calculator")
def calculator(request: HttpRequest) -> HttpResponse:
    filters, filter_form = parse_filters(request.GET)  # default: the last 30 days
    profile = selectors.traffic_profile(filters)
    prices = prices_in_effect()
    routes = list(Route.objects.filter(enabled=True).order_by("position", "name").values_list("name", "model"))
    settings_row = CatalogSettings.objects.filter(id=1).first()
    baseline_model = settings_row.baseline_model if settings_row else "claude-opus-4-7"
    initial = calculator_initial(profile=profile, routes=routes, sentinel_model=active_policy().sentinel_model,
                                 baseline_model=baseline_model)
    route_names = initial.pop("_routes")
    models = sorted(set(prices) | {m for _, m in routes} | {baseline_model})
    submitted = "requests_per_day" in request.GET
    data = {**{k: str(v) for k, v in initial.items()}, **(request.GET.dict() if submitted else {})}
    form = CalculatorForm(data, routes=route_names, models=models)
    result = None
    if form.is_valid():
        try:
            result = estimate(form.scenario(), prices)
        except ScenarioError as exc:
            form.add_error(None, str(exc))
    if request.GET.get("csv") == "estimate" and result is not None:
        rows = [(r.route, r.model, r.share_percent, r.requests_per_day, r.daily, r.monthly, r.baseline_daily,
                 r.baseline_monthly, r.savings_daily, r.savings_monthly) for r in result.routes]
        rows.append(("sentinel", form.cleaned_data["sentinel_model"], "", "", result.sentinel_daily,
                     result.sentinel_monthly, "", "", "", ""))
        rows.append(("total", "", "100", form.cleaned_data["requests_per_day"], result.daily, result.monthly,
                     result.baseline_daily, result.baseline_monthly, result.savings_daily, result.savings_monthly))
        table = Table(("route", "model", "share_percent", "requests_per_day", "daily_usd", "monthly_usd",
                       "baseline_daily_usd", "baseline_monthly_usd", "savings_daily_usd", "savings_monthly_usd"), rows)
        return csv_response(table, "calculator-estimate")
    return render(request, "dashboard/calculator.html", {
        "page": "calculator", "form": form, "result": result, "profile": profile, "filters": filters,
        "filter_form": filter_form, "options": selectors.filter_options(), "querystring": request.GET.urlencode(),
        "simulated": selectors.simulated_data_present(), "plotly_version": plotly.__version__,
    })


def plotly_js(request: HttpRequest) -> HttpResponse:
    """plotly.min.js from the installed plotly package (never a CDN), cached for a year by version."""
    etag = f'"plotly-{plotly.__version__}"'
    if request.headers.get("If-None-Match") == etag:
        return HttpResponseNotModified(headers={"ETag": etag})
    # A plain response, not FileResponse: under ASGI a file iterator is consumed synchronously anyway.
    response = HttpResponse(PLOTLY_JS.read_bytes(), content_type="text/javascript")
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["ETag"] = etag
    response["Last-Modified"] = http_date(PLOTLY_JS.stat().st_mtime)
    return response

