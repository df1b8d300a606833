"""Celery entry points for routing: thin, idempotent, named."""

from __future__ import annotations

from pathlib import Path

from celery import shared_task
from django.conf import settings

from .recorder import replay_spool_file


@shared_task(name="routing.replay_decision_spool", acks_late=True)
def replay_decision_spool() -> int:
    """Replay spooled decision rows (inserts skip stored request ids, so redelivery is safe)."""
    replayed = 0
    for path in sorted(Path(settings.DECISION_SPOOL_DIR).glob("decisions-*.jsonl")):
        if not replay_spool_file(path):
            break
        replayed += 1
    return replayed
