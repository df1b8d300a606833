"""Every periodic task, in one place, with why it runs when it does."""

from celery.schedules import crontab

BEAT_SCHEDULE = {
    # Decision rows spooled to disk while the database was away are replayed once it is back;
    # every minute keeps the gap in the log short without hammering a recovering database.
    "replay-decision-spool": {"task": "routing.replay_decision_spool", "schedule": crontab(minute="*")},
    # Rollups are kept incrementally on ingest; this exact rebuild of the last 48 h catches late
    # feedback/judge scores and anything written around the hooks. Every 15 min keeps pages fresh.
    "rebuild-recent-rollups": {"task": "dashboard.rebuild_recent_rollups", "schedule": crontab(minute="*/15")},
    # Routing drift is a slow signal (traffic mix, provider model changes): compare weekly, Monday
    # 06:00 UTC, so alerts land at the start of the working week; it also applies late judge scores.
    "check-drift": {"task": "audits.check_drift", "schedule": crontab(minute=0, hour=6, day_of_week="mon")},
    # A shadow experiment's window ends on the minute; finish it promptly so its report is final.
    "finish-due-experiments": {"task": "audits.finish_due_experiments", "schedule": crontab(minute="*/5")},
    # The outbox sweep: audits and shadow captures stored while the broker was away (or whose
    # message it lost) are re-enqueued once they are two minutes old; every minute keeps the
    # catch-up after a broker outage short, and tasks claim their rows, so a duplicate is a no-op.
    "requeue-stale-work": {"task": "audits.requeue_stale_work", "schedule": crontab(minute="*")},
    # Scheduled policy activations should go live within a minute of their time.
    "activate-due-proposals": {"task": "audits.activate_due_proposals", "schedule": crontab(minute="*")},
}
