"""A reviewer, in a real browser against the live gateway, logs in and approves a proposal.

Chromium comes from the system (`scripts/install_browser.sh`); Playwright never downloads one.
Without chromium the test skips locally but FAILS when the `CI` environment variable is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audits.models import AuditEvent, Proposal
from tests.audits.conftest import PASSWORD, create_proposal

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _browser_or_skip():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install -r requirements-dev.txt)"
        sync_playwright = None
    if missing is None and not os.access(CHROMIUM, os.X_OK):
        missing = f"{CHROMIUM} is missing (run scripts/install_browser.sh)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {missing}")
        pytest.skip(missing)
    return sync_playwright


def test_a_reviewer_logs_in_and_approves_a_proposal_in_the_browser(live_gateway, people, small_evalset, settings):
    sync_playwright = _browser_or_skip()
    # The live server speaks plain HTTP on loopback: secure-only cookies would never be sent back.
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    data = create_proposal(people.engineer, {"confidence_threshold": "0.900"}, propose=True,
                           title="Escalate below 0.9")
    assert data["status"] == "evaluated"
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live_gateway.url}/governance/proposals/{data['id']}/")
            assert "/admin/login/" in page.url  # not logged in yet: sent to the login page
            page.fill("#id_username", people.reviewer.user.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"**/governance/proposals/{data['id']}/")
            assert page.locator("[data-testid=status]").inner_text() == "Evaluated (awaiting review)"
            assert page.locator("[data-testid=diff]").inner_text().count("0.900") == 1
            assert page.locator("[data-testid=before-after-evalset]").is_visible()
            page.fill("[data-testid=approve-comment]", "Numbers look right; approving.")
            page.click("[data-testid=approve]")
            page.wait_for_selector("text=Done: approve.")
            assert page.locator("[data-testid=status]").inner_text() == "Approved"
            assert "Reviewed by rita-reviewer" in page.inner_text("main")
            page.screenshot(path=str(ARTIFACTS / "governance-reviewer-approves.png"), full_page=True)
        finally:
            browser.close()

    proposal = Proposal.objects.get(pk=data["id"])
    assert proposal.status == "approved" and proposal.reviewer == people.reviewer.user
    event = AuditEvent.objects.get(action="proposal.approve")
    assert event.outcome == "success" and event.source == "page" and event.actor_username == "rita-reviewer"
