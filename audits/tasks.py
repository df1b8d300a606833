"""Celery entry points for governance: thin, idempotent, named.

`audits.evaluate_proposal` claims the evaluation with an atomic conditional update, so a
redelivered (acks_late) or duplicated task does nothing; `audits.activate_due_proposals` runs
on the beat schedule and activates approved proposals whose `activate_at` has come.
`audits.judge_audit`, `audits.check_drift` and `audits.send_alert_webhook` are the quality
entry points (docs/QUALITY.md). `audits.requeue_stale_work` is the outbox sweep: sampled rows are
stored before their task is published, so work the broker never got is re-enqueued from the rows
(docs/RELIABILITY.md, "Infrastructure faults").
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db.models import F

from routing.providers.base import ProviderError

from . import services
from .evaluation import run_evaluation
from .models import Proposal

logger = logging.getLogger(__name__)


@shared_task(name="audits.evaluate_proposal", acks_late=True)
def evaluate_proposal(proposal_id: int) -> str:
    """Evaluate a proposed candidate against its base version and store the result."""
    if not services.proposal_evaluation_claim(proposal_id=proposal_id):
        return "skipped: not awaiting evaluation, or another worker has it"
    proposal = Proposal.objects.select_related("candidate", "base_version").get(pk=proposal_id)
    try:
        result = run_evaluation(current=proposal.base_version, candidate=proposal.candidate)
    except Exception as exc:  # recorded on the proposal and in the audit trail, then re-runnable
        logger.exception("evaluation of proposal %s failed", proposal_id)
        services.proposal_evaluation_fail(proposal_id=proposal_id, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    services.proposal_evaluation_record(proposal_id=proposal_id, result=result)
    return "evaluated"


@shared_task(name="audits.activate_due_proposals", acks_late=True)
def activate_due_proposals() -> list[int]:
    """Activate approved proposals whose scheduled activation time has passed."""
    return services.proposals_activate_due()


# ---- quality: judge audits, drift checks, alert webhooks (issue 5) ------------------------------


@shared_task(name="audits.judge_audit", bind=True, acks_late=True, max_retries=5)
def judge_audit(self: Any, request_id: str) -> str:
    """Score one sampled answer with the judge model and put the score on the decision row.

    Idempotent: the audit is claimed with a conditional update, so a duplicate or redelivered
    task neither calls the judge twice nor moves the rollups twice."""
    from . import judge
    from .models import JudgeAudit, JudgeStatus

    if judge.audit_claim(request_id=request_id) or _reclaim_after_lost_worker(self, request_id):
        audit = JudgeAudit.objects.select_related("sample").get(request_id=request_id)
        try:
            verdict = judge.judge_call(question=audit.sample.prompt, answer=audit.sample.answer,
                                       model=audit.judge_model)
        except (ProviderError, ValueError) as exc:
            judge.audit_fail(request_id=request_id, error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, ProviderError) and exc.retryable and not self.request.is_eager:
                raise self.retry(exc=exc, countdown=30 * 2 ** self.request.retries) from exc
            return "failed"
        judge.audit_record_score(request_id=request_id, verdict=verdict)
    elif not JudgeAudit.objects.filter(request_id=request_id, status=JudgeStatus.SCORED).exists():
        return "skipped: another worker has it, or no such audit"
    if judge.audit_apply_score(request_id=request_id):
        return "scored"
    if not self.request.is_eager:
        # The decision row is still in a recorder batch (or spooled): try again shortly.
        raise self.retry(countdown=15 * 2 ** self.request.retries)
    return "scored; decision row not written yet (applied by the next drift check)"


def _reclaim_after_lost_worker(task: Any, request_id: str) -> bool:
    """Take over an audit left `running` by a worker that died mid-task.

    The broker redelivers an unacknowledged message (`acks_late`) only when the worker holding it
    is gone: its pool process was killed (`reject_on_worker_lost`), or the whole worker and the
    visibility timeout passed. So a redelivered message whose audit is `running` belongs to a dead
    worker, and this one claims it (a conditional update: one redelivery wins). Keep the broker's
    visibility timeout above the longest judge call, or a slow call is run twice (scored once)."""
    from .models import JudgeAudit, JudgeStatus

    if not (task.request.delivery_info or {}).get("redelivered"):
        return False
    reclaimed = JudgeAudit.objects.filter(request_id=request_id, status=JudgeStatus.RUNNING).update(
        attempts=F("attempts") + 1) == 1
    if reclaimed:
        logger.warning("judge audit %s: redelivered after a lost worker; running it here", request_id)
    return reclaimed


@shared_task(name="audits.requeue_stale_work", acks_late=True)
def requeue_stale_work(older_than_s: float = 120) -> dict[str, int]:
    """The outbox sweep: re-enqueue sampled audits and shadow captures stored but never processed."""
    from .sampling import outbox_requeue

    return outbox_requeue(older_than_s=older_than_s)


@shared_task(name="audits.check_drift", acks_late=True)
def check_drift() -> list[int]:
    """Compare the last window's routing with the previous window and the pinned baseline."""
    from . import drift, judge
    from .models import JudgeAudit, JudgeStatus

    for request_id in JudgeAudit.objects.filter(status=JudgeStatus.SCORED, applied=False).values_list(
            "request_id", flat=True)[:10_000]:
        judge.audit_apply_score(request_id=str(request_id))
    return drift.drift_check()


@shared_task(name="audits.send_alert_webhook", bind=True, acks_late=True, max_retries=6)
def send_alert_webhook(self: Any, alert_id: int) -> str:
    """POST one alert as JSON to `ALERT_WEBHOOK_URL`, retrying with exponential backoff."""
    from . import drift

    try:
        return drift.alert_webhook_post(alert_id=alert_id)
    except drift.WebhookError as exc:
        if self.request.retries >= self.max_retries:
            drift.alert_webhook_mark(alert_id=alert_id, status="failed")
            return "failed"
        backoff = float(getattr(settings, "ALERT_WEBHOOK_BACKOFF_S", 2.0))
        raise self.retry(exc=exc, countdown=backoff * 2 ** self.request.retries) from exc


# ---- shadow routing experiments (issue 5) --------------------------------------------------------


@shared_task(name="audits.shadow_route", bind=True, acks_late=True, max_retries=5)
def shadow_route(self: Any, experiment_id: int, request_id: str) -> str:
    """Route one shadow-sampled request with the experiment's candidate policy and store it.

    Idempotent: the capture is claimed with a conditional update and the decision is unique per
    (experiment, request), so a duplicate or redelivered task stores nothing twice."""
    from . import shadow

    result = shadow.shadow_process(experiment_id=experiment_id, request_id=request_id)
    if result == shadow.NOT_YET and not self.request.is_eager:
        # The decision row is still in a recorder batch (or spooled): try again shortly.
        raise self.retry(countdown=15 * 2 ** self.request.retries)
    return result


@shared_task(name="audits.finish_due_experiments", acks_late=True)
def finish_due_experiments() -> list[int]:
    """Mark running or paused experiments whose window has ended as finished."""
    from . import shadow_services

    return shadow_services.experiments_finish_due()
