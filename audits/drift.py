"""Drift: has routing moved since last week, or since the pinned baseline? And model versions.

1. `window_stats` summarises decisions in [start, end): per route its count, share, mean
   confidence and mean judge score.
2. `compare` (pure) lists findings against a reference: a route whose share moved more than
   `SHARE_POINTS` (5 percentage points), a mean confidence drop > `CONFIDENCE_DROP` (0.1),
   a mean judge score drop > `JUDGE_DROP` (0.5 points).
3. `model_version_findings` flags every (route, version) whose reported
   `executor_model_version` differs from the route's pinned `model_version`; an alert per
   (route, version) is raised once (unique constraint), however often it recurs.
4. `drift_check` runs 1-3 for the last window against the previous window and against the
   pinned baseline, stores `DriftAlert`s and enqueues their webhooks after commit.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count
from django.utils import timezone

from routing.models import Decision, Route

from .models import DriftAlert, DriftBaseline, DriftKind

SHARE_POINTS = 0.05
CONFIDENCE_DROP = 0.1
JUDGE_DROP = 0.5
DEFAULT_WINDOW = timedelta(days=7)


class WebhookError(Exception):
    """The webhook did not accept the alert (retryable)."""


@dataclass(frozen=True)
class Finding:
    kind: str
    key: str
    message: str
    details: dict[str, Any]


def window_stats(start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
    rows = (Decision.objects.filter(created_at__gte=start, created_at__lt=end).values("route")
            .annotate(n=Count("id"), confidence=Avg("confidence"), judge=Avg("judge_score")).order_by("route"))
    total = sum(r["n"] for r in rows)
    return {
        r["route"]: {"count": r["n"], "share": r["n"] / total if total else 0.0,
                     "mean_confidence": r["confidence"], "mean_judge": r["judge"]}
        for r in rows
    }


def snapshot(start: datetime, end: datetime) -> dict[str, Any]:
    return {"window_start": start.isoformat(), "window_end": end.isoformat(), "routes": window_stats(start, end)}


def compare(current: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]], *,
            against: str) -> list[Finding]:
    """Findings of `current` against `reference` (both as `window_stats` returns). An empty
    reference (no traffic then) yields nothing: there is nothing to have drifted from."""
    findings: list[Finding] = []
    if not reference or not current:
        return findings
    for route in sorted(set(current) | set(reference)):
        now, before = current.get(route, {}), reference.get(route, {})
        share_now, share_before = now.get("share", 0.0), before.get("share", 0.0)
        if abs(share_now - share_before) > SHARE_POINTS:
            findings.append(Finding(
                DriftKind.ROUTE_SHARE, route,
                f"{route}: share moved {share_before:.1%} → {share_now:.1%} against the {against}",
                {"against": against, "before": share_before, "now": share_now}))
        c_now, c_before = now.get("mean_confidence"), before.get("mean_confidence")
        if c_now is not None and c_before is not None and c_before - c_now > CONFIDENCE_DROP:
            findings.append(Finding(
                DriftKind.CONFIDENCE, route,
                f"{route}: mean confidence fell {c_before:.2f} → {c_now:.2f} against the {against}",
                {"against": against, "before": c_before, "now": c_now}))
        j_now, j_before = now.get("mean_judge"), before.get("mean_judge")
        if j_now is not None and j_before is not None and j_before - j_now > JUDGE_DROP:
            findings.append(Finding(
                DriftKind.JUDGE_SCORE, route,
                f"{route}: mean judge score fell {j_before:.2f} → {j_now:.2f} against the {against}",
                {"against": against, "before": j_before, "now": j_now}))
    return findings


def model_version_findings(start: datetime | None = None) -> list[Finding]:
    pinned = dict(Route.objects.exclude(provider="guardrail").values_list("name", "model_version"))
    rows = Decision.objects.exclude(executor_model_version="")
    if start is not None:
        rows = rows.filter(created_at__gte=start)
    findings = []
    for route, version in rows.values_list("route", "executor_model_version").distinct().order_by():
        expected = pinned.get(route)
        if expected and version != expected:
            findings.append(Finding(
                DriftKind.MODEL_VERSION, f"{route}|{version}",
                f"{route}: the provider returned model version {version!r}, pinned is {expected!r}",
                {"route": route, "pinned": expected, "returned": version}))
    return findings


def baseline_pin(*, actor: str, now: datetime | None = None, window: timedelta = DEFAULT_WINDOW) -> DriftBaseline:
    """Pin the last window as the baseline (the previous pin stays in history, unpinned)."""
    end = now or timezone.now()
    start = end - window
    with transaction.atomic():
        DriftBaseline.objects.filter(pinned=True).update(pinned=False)
        return DriftBaseline.objects.create(created_by=actor, window_start=start, window_end=end,
                                            snapshot=snapshot(start, end), pinned=True)


def _store(findings: list[Finding]) -> list[DriftAlert]:
    alerts = []
    for finding in findings:
        try:
            with transaction.atomic():
                alerts.append(DriftAlert.objects.create(
                    kind=finding.kind, key=finding.key, message=finding.message[:500], details=finding.details))
        except IntegrityError:
            continue  # a model version already alerted
    return alerts


def _enqueue_webhooks(alerts: list[DriftAlert]) -> None:
    if not getattr(settings, "ALERT_WEBHOOK_URL", None):
        return
    from .tasks import send_alert_webhook

    for alert in alerts:
        pk = alert.pk
        transaction.on_commit(lambda pk=pk: send_alert_webhook.delay(pk))


def drift_check(*, now: datetime | None = None, window: timedelta = DEFAULT_WINDOW) -> list[int]:
    """Steps 1-4 of the module docstring; the ids of the alerts raised."""
    end = now or timezone.now()
    current = window_stats(end - window, end)
    previous = window_stats(end - 2 * window, end - window)
    findings = compare(current, previous, against="previous window")
    baseline = DriftBaseline.objects.filter(pinned=True).first()
    if baseline is not None:
        findings += compare(current, baseline.snapshot.get("routes", {}), against="pinned baseline")
    findings += model_version_findings(end - window)
    with transaction.atomic():
        alerts = _store(findings)
        _enqueue_webhooks(alerts)
    return [a.pk for a in alerts]


def model_version_check(*, request_ids: list[Any]) -> list[int]:
    """The same version rule for a batch of just-written decisions (callable on ingest)."""
    rows = Decision.objects.filter(request_id__in=request_ids)
    pinned = dict(Route.objects.values_list("name", "model_version"))
    findings = [
        Finding(DriftKind.MODEL_VERSION, f"{route}|{version}",
                f"{route}: the provider returned model version {version!r}, pinned is {pinned[route]!r}",
                {"route": route, "pinned": pinned[route], "returned": version})
        for route, version in rows.exclude(executor_model_version="").values_list(
            "route", "executor_model_version").distinct().order_by()
        if pinned.get(route) and version != pinned[route]
    ]
    with transaction.atomic():
        alerts = _store(findings)
        _enqueue_webhooks(alerts)
    return [a.pk for a in alerts]


def alert_acknowledge(*, alert_id: int, actor: str) -> DriftAlert | None:
    """Acknowledge once (a second acknowledgement keeps the first one's time and actor)."""
    DriftAlert.objects.filter(pk=alert_id, acknowledged_at__isnull=True).update(
        acknowledged_at=timezone.now(), acknowledged_by=actor)
    return DriftAlert.objects.filter(pk=alert_id).first()


def alert_payload(alert: DriftAlert) -> dict[str, Any]:
    return {"id": alert.pk, "kind": alert.kind, "key": alert.key, "message": alert.message,
            "details": alert.details, "created_at": alert.created_at.isoformat(),
            "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None}


def alert_webhook_mark(*, alert_id: int, status: str) -> None:
    DriftAlert.objects.filter(pk=alert_id).update(webhook_status=status)


def alert_webhook_post(*, alert_id: int) -> str:
    url = getattr(settings, "ALERT_WEBHOOK_URL", None)
    alert = DriftAlert.objects.filter(pk=alert_id).first()
    if not url or alert is None:
        return "skipped"
    body = json.dumps({"alert": alert_payload(alert)}).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - operator-configured URL
            if not 200 <= response.status < 300:
                raise WebhookError(f"webhook answered {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise WebhookError(str(exc)) from exc
    alert_webhook_mark(alert_id=alert_id, status="sent")
    return "sent"
