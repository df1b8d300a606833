"""manage.py simulate_traffic --requests N --days D — demo traffic through the real routing engine.

1. Make sure a provider emulator answers at settings.EMULATOR_URL; if none does, start one in
   this process and point the runtime at it (providers without an API key use the emulator).
2. Send real prompts (data/sentinel/heldout.jsonl) through `get_runtime().gateway()`: sentinel,
   policy and executor exactly as the API runs them, a few at a time.
3. Backdate each record uniformly across the last D days (`created_at` is set on the record
   before it is recorded), mark it simulated, and give about a third of them user feedback
   (stored first, as feedback that arrives before its row, so the insert copies it on).
4. Write the rows through `decisions_insert` in batches, which also maintains the rollups.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.utils import timezone

from routing.engine.dispatch import GatewayRequest
from routing.models import Feedback, Route
from routing.providers.base import Message
from routing.services import application_get_or_create, decisions_insert

PROMPTS = Path(settings.BASE_DIR) / "data" / "sentinel" / "heldout.jsonl"
APPLICATIONS = ("support-bot", "code-assistant", "research-desk")
CONCURRENCY = 16
BATCH = 200


def emulator_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError:
        return True  # it answered, with an error status
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def feedback_score(rng: random.Random, route: str, confidence: float | None) -> int:
    """A plausible user rating: mostly good, worse when the sentinel was unsure."""
    good = 0.85 if (confidence or 0) >= 0.75 else 0.6
    if route == "refusal_required":
        good -= 0.2
    return rng.choice((4, 5)) if rng.random() < good else rng.choice((1, 2, 3))


class Command(BaseCommand):
    help = "Send real prompts through the routing engine (emulated providers), backdated across D days."

    def add_arguments(self, parser):
        parser.add_argument("--requests", type=int, default=500)
        parser.add_argument("--days", type=int, default=14)
        parser.add_argument("--feedback-rate", type=float, default=0.35)
        parser.add_argument("--seed", type=int, default=20260501)
        parser.add_argument("--audit-rate", type=float, default=0.1,
                            help="judge-audit sample rate for the simulated traffic (oversampled below 0.75)")
        parser.add_argument("--shadow-rate", type=float, default=0.5,
                            help="sample rate of the demo shadow experiment (0 to skip it)")

    def handle(self, *args, requests: int, days: int, feedback_rate: float, seed: int, audit_rate: float,
               shadow_rate: float, **options):
        if requests < 1 or days < 1:
            raise CommandError("--requests and --days must be at least 1")
        if not Route.objects.exists():
            raise CommandError("No routes: run `manage.py bootstrap` first.")
        prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()]
        apps = [application_get_or_create(name=name) for name in APPLICATIONS]
        server = None
        if not emulator_answers(settings.EMULATOR_URL):
            from routing.providers.emulator.testing import EmulatorServer

            server = EmulatorServer().start()
            settings.EMULATOR_URL = server.url
            self.stdout.write(f"Started a provider emulator at {server.url}.")
        try:
            written, feedback, exchanges = asyncio.run(
                self._run(requests, days, feedback_rate, seed, prompts, apps))
            audited = self._judge_audits(exchanges, audit_rate)
            experiment, shadowed = self._shadow_experiment(exchanges, days, shadow_rate)
        finally:
            if server is not None:
                server.stop()
        self.stdout.write(self.style.SUCCESS(
            f"Recorded {written} simulated decisions across {days} days ({feedback} with feedback, "
            f"{audited} judge audits)."))
        if experiment is not None:
            self.stdout.write(f"Shadow experiment #{experiment.pk} ({experiment.name}) routed {shadowed} "
                              f"sampled requests; report at /governance/experiments/{experiment.pk}/")

    def _judge_audits(self, exchanges, rate: float) -> int:
        """Judge a stratified sample of the simulated answers, as live sampling would (same weights)."""
        from audits.sampling import inclusion_probability, is_sampled, sample_store
        from audits.tasks import judge_audit

        audited = 0
        for record, prompt, answer in exchanges:
            if not answer or rate <= 0:
                continue
            probability = inclusion_probability(rate, record.confidence)
            if is_sampled(record.request_id, probability) and sample_store(
                record=record, prompt=prompt, answer=answer, probability=probability
            ):
                judge_audit.apply(args=[str(record.request_id)])  # in this process, broker or not
                audited += 1
        return audited

    def _shadow_experiment(self, exchanges, days: int, rate: float):
        """A demo shadow experiment (escalate below 0.85) over the simulated traffic, with its report."""
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from audits.sampling import ShadowTarget, shadow_capture_store
        from audits.shadow_services import experiment_create, experiment_start
        from audits.tasks import shadow_route

        if rate <= 0:
            return None, 0
        group, _ = Group.objects.get_or_create(name="engineer")
        actor, created = get_user_model().objects.get_or_create(username="simulator")
        if created:
            actor.set_unusable_password()
            actor.save()
        actor.groups.add(group)
        now = timezone.now()
        experiment = experiment_create(
            actor=actor, name="Demo (simulated): escalate below 0.85", sample_rate=str(rate),
            window_start=now - timedelta(days=days, hours=1), window_end=now + timedelta(days=7),
            settings={"confidence_threshold": "0.850"}, source="task",
        )
        experiment = experiment_start(actor=actor, experiment_id=experiment.pk, source="task")
        target = ShadowTarget(experiment.pk, experiment.candidate_id, float(experiment.sample_rate),
                              experiment.window_start, experiment.window_end)
        shadowed = 0
        for record, prompt, _answer in exchanges:
            if target.samples(record.request_id, record.created_at) and shadow_capture_store(
                target=target, record=record, prompt=prompt
            ):
                shadow_route.apply(args=[experiment.pk, str(record.request_id)])
                shadowed += 1
        return experiment, shadowed

    async def _run(self, total, days, feedback_rate, seed, prompts, apps):
        from routing.runtime import get_runtime

        rng = random.Random(seed)
        runtime = get_runtime()
        runtime.invalidate()  # pick up the emulator URL and the current catalog
        gateway = await runtime.gateway()
        now = timezone.now()
        span = days * 86400
        semaphore = asyncio.Semaphore(CONCURRENCY)
        pending: list[dict] = []
        exchanges: list[tuple] = []
        feedback_rows: list[Feedback] = []
        done = written = with_feedback = 0
        started = time.monotonic()

        async def one(i: int) -> None:
            nonlocal done
            app = apps[i % len(apps)]
            request = GatewayRequest(messages=[Message(role="user", content=rng.choice(prompts)[:4000])],
                                     endpoint="complete", application_id=app.pk, api_key_prefix="simulate")
            async with semaphore:
                routed = await gateway.route(request)
                executed = await gateway.execute(routed, request)
            record = gateway.record(routed, executed, request)
            record.created_at = now - timedelta(seconds=rng.uniform(0, span))
            record.simulated = True
            if rng.random() < feedback_rate:
                feedback_rows.append(Feedback(request_id=record.request_id, application_id=app.pk,
                                              score=feedback_score(rng, record.route, record.confidence),
                                              created_at=record.created_at + timedelta(minutes=1)))
            pending.append(record)
            answer = executed.completion.text if executed.completion else ""
            exchanges.append((record, request.messages[0].content, answer))
            done += 1

        for start in range(0, total, BATCH):
            await asyncio.gather(*(one(i) for i in range(start, min(total, start + BATCH))))
            batch, fbs = pending[:], feedback_rows[:]
            pending.clear()
            feedback_rows.clear()
            await sync_to_async(Feedback.objects.bulk_create)(fbs)
            written += await sync_to_async(decisions_insert)(records=batch)
            with_feedback += len(fbs)
            rate = done / max(time.monotonic() - started, 1e-6)
            sys.stdout.write(f"\r  {done}/{total} requests ({rate:.0f}/s)")
            sys.stdout.flush()
        sys.stdout.write("\n")
        await sync_to_async(connections.close_all)()  # the insert thread's connection
        return written, with_feedback, exchanges
