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

    def handle(self, *args, requests: int, days: int, feedback_rate: float, seed: int, **options):
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
            written, feedback = asyncio.run(self._run(requests, days, feedback_rate, seed, prompts, apps))
        finally:
            if server is not None:
                server.stop()
        self.stdout.write(self.style.SUCCESS(
            f"Recorded {written} simulated decisions across {days} days ({feedback} with feedback)."))

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
        return written, with_feedback
