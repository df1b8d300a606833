"""In a real browser (Playwright + the system chromium): a finance user sees every chart drawn with data,
narrows the dates, and downloads a CSV whose figures match the database.

Never runs `playwright install`: it drives /usr/bin/chromium. Without chromium (or the playwright
package) the test is skipped locally and FAILS when `CI` is set.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Sum

from routing.models import Decision
from routing.services import decisions_insert

from .conftest import random_rows

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PAGES = {"overview": "/", "cost": "/dashboard/cost/", "quality": "/dashboard/quality/",
         "latency": "/dashboard/latency/", "mix": "/dashboard/mix/"}
POINTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
    el => [el.id, (el.data || []).reduce((n, t) => n + ((t.x || t.y || []).length), 0)])"""


def browser_or_fail():
    missing = [what for what, ok in [("chromium at " + CHROMIUM, Path(CHROMIUM).exists()),
                                     ("the playwright package", importlib.util.find_spec("playwright") is not None)]
               if not ok]
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def finance_login(transactional_db):
    user = get_user_model().objects.create_user(username="fiona", password="finance-pw", is_staff=True)
    user.groups.add(Group.objects.get_or_create(name="finance")[0])
    return "fiona", "finance-pw"


def test_a_finance_user_sees_every_chart_and_downloads_exact_csvs(live_gateway, finance_login):
    browser_or_fail()
    from playwright.sync_api import sync_playwright

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    decisions_insert(records=random_rows(300, seed=5, start=today - timedelta(days=5), hours=6 * 24))
    # Expected figures first: the ORM may not run inside Playwright's event loop.
    start, end = (today - timedelta(days=3)).date(), (today - timedelta(days=2)).date()
    in_range = Decision.objects.filter(
        created_at__gte=datetime.combine(start, datetime.min.time(), UTC),
        created_at__lt=datetime.combine(end + timedelta(days=1), datetime.min.time(), UTC))
    expected_count, expected_spend = in_range.count(), in_range.aggregate(s=Sum("cost"))["s"]
    assert expected_count > 0
    ARTIFACTS.mkdir(exist_ok=True)
    base = live_gateway.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 1000})
        page.goto(f"{base}/admin/login/?next=/")
        page.fill("#id_username", finance_login[0])
        page.fill("#id_password", finance_login[1])
        page.click("input[type=submit]")
        page.wait_for_url(f"{base}/")

        for name, path in PAGES.items():
            page.goto(base + path)
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=15_000)
            assert page.locator(".js-plotly-plot .trace").count() > 0, name
            points = page.evaluate(POINTS_JS)
            assert points and all(n > 0 for _, n in points), (name, points)
            assert page.locator("[data-testid=simulated-marker]").count() == 1  # random_rows has simulated rows
            page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)

        page.goto(base + "/dashboard/calculator/")
        page.fill("#id_requests_per_day", "2000")
        page.click("[data-testid=calculator-form] button[type=submit]")
        page.wait_for_selector("[data-testid=calc-daily]")
        assert "requests_per_day=2000" in page.url
        page.screenshot(path=str(ARTIFACTS / "dashboard-calculator.png"), full_page=True)

        # Narrow the dates to two days on the overview: the headline count follows the database.
        page.goto(base + "/")
        page.fill("input[name=start]", start.isoformat())
        page.fill("input[name=end]", end.isoformat())
        page.click("[data-testid=filters] button[type=submit]")
        page.wait_for_url(f"**start={start.isoformat()}**")
        page.wait_for_selector(".js-plotly-plot .main-svg")
        assert page.inner_text("[data-testid=kpi-requests]") == str(expected_count)
        assert all(n > 0 for _, n in page.evaluate(POINTS_JS))
        page.screenshot(path=str(ARTIFACTS / "dashboard-overview-two-days.png"), full_page=True)

        # Download the chart's CSV: per-hour spend that adds up to the database's, to the 1e-10 dollar.
        with page.expect_download() as download_info:
            page.click("[data-testid=csv-spend]")
        download = download_info.value
        rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
        assert len(rows) > 1 and all(r["period_start_utc"] >= start.isoformat() for r in rows)
        assert sum(Decimal(r["spend_usd"]) for r in rows) == expected_spend
        assert sum(int(r["requests"]) for r in rows) == expected_count
        browser.close()
