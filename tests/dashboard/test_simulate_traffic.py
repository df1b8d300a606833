"""simulate_traffic: real prompts through the real engine, backdated, simulated, with feedback, rolled up."""

from __future__ import annotations

import io
import socket
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from dashboard.models import RollupDay
from routing.models import Decision


@pytest.mark.django_db(transaction=True)
def test_it_records_backdated_simulated_traffic_with_feedback(emu, runtime, catalog):
    out = io.StringIO()
    call_command("simulate_traffic", requests=40, days=5, feedback_rate=0.5, stdout=out)
    assert "Recorded 40 simulated decisions across 5 days" in out.getvalue()
    rows = Decision.objects.all()
    assert rows.count() == 40 and not rows.filter(simulated=False).exists()
    oldest = rows.order_by("created_at").first().created_at
    assert timezone.now() - oldest < timedelta(days=5)
    assert rows.values("created_at__date").distinct().count() > 1  # spread across days
    assert rows.exclude(feedback_score=None).count() > 5
    assert len(set(rows.values_list("route", flat=True))) > 1  # the sentinel really routed
    sums = RollupDay.objects.aggregate(n=Sum("requests"), fb=Sum("feedback_count"), c=Sum("cost"))
    assert sums["n"] == 40
    assert sums["fb"] == rows.exclude(feedback_score=None).count()
    assert sums["c"] == rows.aggregate(c=Sum("cost"))["c"]


@pytest.mark.django_db(transaction=True)
def test_it_starts_its_own_emulator_when_none_answers(emu, runtime, catalog, monkeypatch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    monkeypatch.setattr(settings, "EMULATOR_URL", dead)
    out = io.StringIO()
    call_command("simulate_traffic", requests=5, days=1, stdout=out)
    assert "Started a provider emulator" in out.getvalue()
    assert Decision.objects.count() == 5
    runtime.invalidate()


@pytest.mark.django_db(transaction=True)
def test_it_produces_judge_audits_and_a_shadow_experiment_report(emu, runtime, catalog):
    from audits.models import JudgeAudit, ShadowDecision, ShadowExperiment
    from audits.shadow_selectors import experiment_report

    out = io.StringIO()
    call_command("simulate_traffic", requests=60, days=3, audit_rate=0.3, shadow_rate=1, stdout=out)
    audits = JudgeAudit.objects.all()
    assert audits.count() > 5 and not audits.exclude(status="scored").exists()
    scored = Decision.objects.exclude(judge_score=None)
    assert scored.count() == audits.count()  # every score reached its decision row
    assert RollupDay.objects.aggregate(j=Sum("judge_count"))["j"] == audits.count()
    experiment = ShadowExperiment.objects.get()
    assert experiment.status == "running" and "simulated" in experiment.name
    assert ShadowDecision.objects.filter(experiment=experiment).count() == 60  # rate 1: every request
    report = experiment_report(experiment)
    assert report.sampled == 60 and report.agreement is not None and 0 <= report.agreement <= 1
    # escalating below 0.85 instead of 0.75 can only move traffic away from the cheap routes
    assert report.agreement < 1 or not Decision.objects.filter(confidence__gte=0.75, confidence__lt=0.85).exists()
    assert f"/governance/experiments/{experiment.pk}/" in out.getvalue()
