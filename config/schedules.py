"""Every periodic task, in one place, with why it runs when it does."""

from celery.schedules import crontab

BEAT_SCHEDULE = {
    # Decision rows spooled to disk while the database was away are replayed once it is back;
    # every minute keeps the gap in the log short without hammering a recovering database.
    "replay-decision-spool": {"task": "routing.replay_decision_spool", "schedule": crontab(minute="*")},
    # Scheduled policy activations should go live within a minute of their time.
    "activate-due-proposals": {"task": "audits.activate_due_proposals", "schedule": crontab(minute="*")},
}
