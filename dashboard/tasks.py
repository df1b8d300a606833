"""Celery entry points for the dashboards: thin, idempotent, named."""

from __future__ import annotations

from celery import shared_task

from .services import rollups_rebuild_recent

# Hours recomputed exactly from raw rows on each run: late feedback, judge scores and replayed
# spool files inside this window reach the rollups even without a hook.
RECENT_HOURS = 48


@shared_task(name="dashboard.rebuild_recent_rollups", acks_late=True)
def rebuild_recent_rollups(hours: int = RECENT_HOURS) -> int:
    """Recompute the last `hours` hours of rollups (and their days) from raw decision rows.

    Idempotent: each hour is replaced wholesale under the rollup lock, so a redelivered or
    overlapping run writes the same rows.
    """
    return rollups_rebuild_recent(hours=hours)
