"""Pages: who may see them, what they show, their CSVs, their query counts, their empty states."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db.models import Sum

from dashboard.models import RollupDay
from routing.models import Decision
from routing.services import decisions_insert

from .conftest import decision_row, random_rows

PAGES = {
    "overview": "/",
    "cost": "/dashboard/cost/",
    "quality": "/dashboard/quality/",
    "latency": "/dashboard/latency/",
    "mix": "/dashboard/mix/",
    "calculator": "/dashboard/calculator/",
}
RANGE = "start=2026-05-01&end=2026-05-31"


@pytest.fixture
def traffic(catalog):
    rows = random_rows(300, seed=3)
    decisions_insert(records=rows)
    return rows


def _csv(response) -> list[dict[str, str]]:
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("role,status", [("engineer", 200), ("reviewer", 200), ("finance", 200), ("outsider", 403)])
def test_each_role_gets_each_page(client, catalog, personas, page, role, status):
    client.force_login(personas[role])
    assert client.get(PAGES[page]).status_code == status


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_users_are_sent_to_log_in(client, db, page):
    response = client.get(PAGES[page] + "?" + RANGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


# auth (session, user, groups) 3 + filter options 3 + simulated marker 1, then each page's own reads
PAGE_QUERIES = {"overview": 7 + 2, "cost": 7 + 4, "quality": 7 + 1, "latency": 7 + 1, "mix": 7 + 1,
                "calculator": 7 + 5}


@pytest.mark.parametrize("page", PAGES)
def test_pages_read_a_fixed_number_of_queries(client, traffic, personas, page, django_assert_num_queries):
    client.force_login(personas["finance"])
    with django_assert_num_queries(PAGE_QUERIES[page]):
        response = client.get(PAGES[page] + "?" + RANGE)
    assert response.status_code == 200


def test_pages_never_read_raw_decision_rows(client, traffic, personas, django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(personas["engineer"])
    for url in PAGES.values():
        with CaptureQueriesContext(connection) as queries:
            client.get(url + "?" + RANGE)
        assert not [q for q in queries if "routing_decision" in q["sql"]], url


def test_overview_shows_the_totals_and_its_csv_matches_the_database(client, traffic, personas):
    client.force_login(personas["finance"])
    response = client.get("/?" + RANGE)
    body = response.content.decode()
    raw = Decision.objects.aggregate(n=Sum("cost"), b=Sum("baseline_cost"))
    assert f'data-testid="kpi-requests">{len(traffic)}<' in body
    assert 'id="chart-spend"' in body and "download CSV" in body
    rows = _csv(client.get("/?" + RANGE + "&csv=spend"))
    assert sum(Decimal(r["spend_usd"]) for r in rows) == raw["n"]
    assert sum(Decimal(r["baseline_spend_usd"]) for r in rows) == raw["b"]
    summary = {r["metric"]: r["value"] for r in _csv(client.get("/?" + RANGE + "&csv=summary"))}
    assert int(summary["requests"]) == len(traffic)
    assert Decimal(summary["savings_usd"]) == raw["b"] - raw["n"]
    from dashboard.services import has_cache_hit_field

    # Decision.cache_hit is added by the decision-cache work; until it exists the figure is "n/a"
    assert (summary["cache_hit_percent"] == "n/a") is not has_cache_hit_field()


def test_overview_headline_metrics_are_hand_checkable(client, catalog, personas):
    """Two requests: one cheap and liked, one expensive with no signal."""
    decisions_insert(records=[
        decision_row(route="simple_qa", cost=Decimal("1.00"), baseline_cost=Decimal("4.00"),
                     sentinel_cost=Decimal("0.10"), feedback_score=5),
        decision_row(route="complex_reasoning", cost=Decimal("3.00"), baseline_cost=Decimal("4.00"),
                     sentinel_cost=Decimal("0.20"), feedback_score=None, judge_score=3),
    ])
    client.force_login(personas["finance"])
    summary = {r["metric"]: r["value"] for r in _csv(client.get("/?" + RANGE + "&csv=summary"))}
    assert Decimal(summary["spend_usd"]) == Decimal("4.00")
    assert Decimal(summary["baseline_spend_usd"]) == Decimal("8.00")
    assert Decimal(summary["savings_usd"]) == Decimal("4.00")
    assert summary["savings_percent"] == "50.00"
    assert summary["routing_efficiency_ratio"] == "0.500000"
    assert summary["cost_per_successful_interaction_usd"] == "4.000000"  # $4 over one liked answer
    assert summary["cheap_tier_percent"] == "50.00"  # simple_qa is cheap tier in the default catalog
    assert Decimal(summary["sentinel_spend_usd"]) == Decimal("0.30")


def test_filters_narrow_every_figure(client, traffic, personas):
    client.force_login(personas["engineer"])
    rows = _csv(client.get(f"/dashboard/cost/?{RANGE}&route=simple_qa&csv=cost_per_million"))
    assert [r["route"] for r in rows] == ["simple_qa"]
    raw = Decision.objects.filter(route="simple_qa")
    assert int(rows[0]["requests"]) == raw.count()
    assert Decimal(rows[0]["spend_usd"]) == raw.aggregate(s=Sum("cost"))["s"]
    day = date(2026, 5, 4)
    rows = _csv(client.get(f"/dashboard/mix/?start={day}&end={day}&csv=route_share"))
    assert sum(int(r["requests"]) for r in rows) == Decision.objects.filter(
        created_at__gte=datetime(2026, 5, 4, tzinfo=UTC), created_at__lt=datetime(2026, 5, 5, tzinfo=UTC)).count()
    assert all(r["period_start_utc"].startswith("2026-05-04T") for r in rows)  # one day: per hour


def test_every_chart_offers_its_csv(client, traffic, personas):
    client.force_login(personas["reviewer"])
    charts = {"/": ["spend", "summary"], "/dashboard/cost/": ["spend_by_route", "cost_per_million", "tokens",
                                                              "top_applications"],
              "/dashboard/quality/": ["by_route", "by_model", "reliability"],
              "/dashboard/latency/": ["sentinel", "executor", "overhead"], "/dashboard/mix/": ["route_share"]}
    for url, names in charts.items():
        body = client.get(f"{url}?{RANGE}").content.decode()
        for name in names:
            assert f'csv={name}"' in body, (url, name)
            assert len(_csv(client.get(f"{url}?{RANGE}&csv={name}"))) > 0, (url, name)
    assert client.get(f"/?{RANGE}&csv=nope").status_code == 404


def test_latency_percentiles_come_from_the_histograms(client, catalog, personas):
    decisions_insert(records=[decision_row(executor_ms=ms) for ms in (100.0, 150.0, 150.0, 400.0)])
    client.force_login(personas["engineer"])
    rows = _csv(client.get(f"/dashboard/latency/?{RANGE}&csv=executor"))
    overall = next(r for r in rows if r["period_start_utc"] == "all")
    # buckets [100,200) ×3 and [300,500) ×1: p50 = 100 + 100 × 2/3
    assert float(overall["p50_ms"]) == pytest.approx(166.6667, abs=1e-3)
    assert float(overall["p99_ms"]) == pytest.approx(300 + 200 * 0.96, abs=1e-6)


def test_quality_explains_that_judge_audits_are_not_there_yet(client, catalog, personas):
    decisions_insert(records=[decision_row(feedback_score=5, judge_score=None, confidence=0.95),
                              decision_row(feedback_score=2, judge_score=None, confidence=0.95)])
    client.force_login(personas["engineer"])
    body = client.get(f"/dashboard/quality/?{RANGE}").content.decode()
    assert 'data-testid="empty-judge"' in body
    assert 'id="chart-reliability"' in body  # feedback is plotted meanwhile
    rows = _csv(client.get(f"/dashboard/quality/?{RANGE}&csv=reliability"))
    top = next(r for r in rows if r["confidence_bucket"] == "0.9–1.0")
    assert top["feedback_acceptable_rate"] == "0.500000"


def test_empty_ranges_explain_what_will_appear(client, catalog, personas):
    client.force_login(personas["finance"])
    for url, marker in [("/", "empty-spend"), ("/dashboard/cost/", "empty-spend_by_route"),
                        ("/dashboard/quality/", "empty-reliability"), ("/dashboard/latency/", "empty-executor"),
                        ("/dashboard/mix/", "empty-route_share"), ("/dashboard/mix/", "empty-drift")]:
        assert f'data-testid="{marker}"' in client.get(url).content.decode(), url


def test_the_simulated_marker_shows_while_simulated_rows_exist(client, catalog, personas):
    client.force_login(personas["finance"])
    decisions_insert(records=[decision_row(simulated=False)])
    assert "simulated-marker" not in client.get("/").content.decode()
    decisions_insert(records=[decision_row(simulated=True)])
    assert "simulated-marker" in client.get("/dashboard/cost/").content.decode()
    RollupDay.objects.filter(simulated=True).delete()
    assert "simulated-marker" not in client.get("/").content.decode()


def test_bad_filters_fall_back_to_the_default_range(client, catalog, personas):
    client.force_login(personas["finance"])
    response = client.get("/?start=2026-06-10&end=2026-06-01")
    assert response.status_code == 200
    assert "start date is after the end date" in response.content.decode()


def test_plotly_js_is_served_from_the_package_with_caching(client, db):
    import plotly

    response = client.get("/dashboard/plotly.min.js")
    assert response.status_code == 200
    assert response["Cache-Control"] == "public, max-age=31536000, immutable"
    assert b"plotly" in response.content[:2000].lower()
    assert client.get("/dashboard/plotly.min.js", HTTP_IF_NONE_MATCH=f'"plotly-{plotly.__version__}"').status_code == 304


def test_pages_load_plotly_from_this_server_only(client, traffic, personas):
    client.force_login(personas["finance"])
    body = client.get("/?" + RANGE).content.decode()
    assert 'src="/dashboard/plotly.min.js?v=' in body
    assert "cdn" not in body.lower()


def test_the_calculator_starts_from_recent_traffic_and_recomputes_from_the_form(client, catalog, personas):
    from django.utils import timezone

    now = timezone.now()
    decisions_insert(records=[decision_row(created_at=now, route="simple_qa", executor_input_tokens=1000,
                                           executor_cached_tokens=200, executor_output_tokens=500)] * 1
                     + [decision_row(created_at=now, route="complex_reasoning", executor_model="claude-opus-4-7",
                                     executor_input_tokens=1000, executor_cached_tokens=200,
                                     executor_output_tokens=500) for _ in range(3)])
    client.force_login(personas["finance"])
    body = client.get("/dashboard/calculator/").content.decode()
    assert 'name="share__simple_qa" value="25.00"' in body and 'name="share__complex_reasoning" value="75.00"' in body
    assert 'name="cached_input_percent" value="20.00"' in body
    # The hand-computed case of test_calculator, entered through the form.
    params = {"requests_per_day": "1000", "input_tokens": "1000", "output_tokens": "500", "cached_input_percent": "20",
              "sentinel_model": "claude-haiku-4-5", "sentinel_input_tokens": "300", "sentinel_output_tokens": "50",
              "baseline_model": "claude-opus-4-7", "days_per_month": "30"}
    from routing.models import Route

    for route in Route.objects.filter(enabled=True).values_list("name", flat=True):
        params[f"share__{route}"] = {"simple_qa": "60", "complex_reasoning": "40"}.get(route, "0")
        params[f"model__{route}"] = {"simple_qa": "claude-haiku-4-5"}.get(route, "claude-opus-4-7")
    response = client.get("/dashboard/calculator/", params)
    assert 'data-testid="calc-daily">$9.18<' in response.content.decode()
    assert 'data-testid="calc-monthly">$275.46<' in response.content.decode()
    rows = _csv(client.get("/dashboard/calculator/", {**params, "csv": "estimate"}))
    total = next(r for r in rows if r["route"] == "total")
    assert (total["daily_usd"], total["baseline_daily_usd"], total["savings_monthly_usd"]) == ("9.18", "16.60", "222.54")
    params["share__simple_qa"] = "61"
    assert "not 100 %" in client.get("/dashboard/calculator/", params).content.decode()
