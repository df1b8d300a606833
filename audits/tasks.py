"""Celery entry points for governance: thin, idempotent, named.

`audits.evaluate_proposal` claims the evaluation with an atomic conditional update, so a
redelivered (acks_late) or duplicated task does nothing; `audits.activate_due_proposals` runs
on the beat schedule and activates approved proposals whose `activate_at` has come.
"""

from __future__ import annotations

import logging

from celery import shared_task

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
