"""Which requests a judge audits, and keeping their question and answer for it.

1. The API views call `maybe_sample(record, prompt, answer)` right after handing the
   decision row to the recorder. On the response path it only hashes the request id and
   compares it with the inclusion probability (when the policy's rate is already cached);
   a request that is not sampled costs a hash and nothing else.
2. A request that may be sampled goes onto an in-memory queue; a background thread
   (never the event loop) resolves the policy's `judge_sample_rate`, decides, waits for
   the decision log to drain (so the judge finds the decision row), stores an
   `AuditSample` (prompt and answer: sampled requests only) with a pending `JudgeAudit`,
   and enqueues the Celery task `audits.judge_audit`.
3. Sampling is stratified by route and confidence bucket: low-confidence decisions
   (below `LOW_CONFIDENCE`) are sampled at `OVERSAMPLE` x the rate, capped at 1. Each
   sample stores its inclusion probability p and weight 1/p, so weighted aggregates over
   audits estimate the traffic's, not the sample's, quality.
4. The stored rows are the outbox: enqueueing is best effort. A publish that fails (broker
   down or hung) is tried once, within the broker's timeouts, and for `BROKER_RETRY_S`
   afterwards the thread does not try the broker at all; `outbox_requeue` (the periodic task
   `audits.requeue_stale_work`) re-enqueues whatever was stored but not processed, so the
   work drains once the broker is back. The tasks claim their rows, so a duplicate is a no-op.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, close_old_connections, connections, transaction

from routing.recorder import db_deadline
from routing.redaction import redact_for_storage

log = logging.getLogger("audits.sampling")

# After a failed publish the broker is left alone this long: the outbox sweep re-enqueues.
BROKER_RETRY_S = 30.0
# A sampler database call that takes longer than this is cut (see routing.recorder.db_deadline).
DB_DEADLINE_S = 8.0

DEFAULT_RATE = Decimal("0.0150")
LOW_CONFIDENCE = 0.75
OVERSAMPLE = 3
BUCKET_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RATE_TTL_S = 10.0


def confidence_bucket(confidence: float | None) -> str:
    """'0.0-0.5', '0.5-0.6', ... '0.9-1.0'; 'none' when the sentinel gave no confidence."""
    if confidence is None:
        return "none"
    for lo, hi in zip(BUCKET_EDGES, BUCKET_EDGES[1:], strict=False):
        if confidence < hi or hi == 1.0:
            return f"{lo:.1f}-{hi:.1f}"
    return "0.9-1.0"  # pragma: no cover - the loop always returns


def inclusion_probability(rate: float | Decimal, confidence: float | None) -> float:
    """The probability that a decision is audited: the rate, x OVERSAMPLE below LOW_CONFIDENCE
    (and when there is no confidence: a failed sentinel is the least trustworthy case), capped at 1."""
    base = float(rate)
    if confidence is None or confidence < LOW_CONFIDENCE:
        base *= OVERSAMPLE
    return max(0.0, min(1.0, base))


def hash_unit(request_id: uuid.UUID | str) -> float:
    """A deterministic number in [0, 1) from the request id: the same request always decides alike."""
    digest = hashlib.sha256(str(request_id).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_sampled(request_id: uuid.UUID | str, probability: float) -> bool:
    return probability >= 1.0 or hash_unit(request_id) < probability


def stratum(route: str, confidence: float | None) -> str:
    return f"{route}|{confidence_bucket(confidence)}"


@dataclass
class Candidate:
    record: Any  # routing.engine.dispatch.DecisionRecord
    prompt: str
    answer: str


@dataclass
class ShadowCandidate:
    """A request that may be shadow-sampled: a separate queue item, so judge sampling is unaffected."""

    record: Any  # routing.engine.dispatch.DecisionRecord
    prompt: str


@dataclass(frozen=True)
class ShadowTarget:
    """A running experiment as the response path sees it (cached for RATE_TTL_S)."""

    experiment_id: int
    candidate_id: int
    rate: float
    window_start: Any
    window_end: Any

    def samples(self, request_id: uuid.UUID | str, at: Any) -> bool:
        return self.window_start <= at < self.window_end and is_sampled(request_id, self.rate)


class Sampler:
    """The queue and thread of step 2. One per process (`get_sampler()`)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Candidate | ShadowCandidate | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._rates: dict[int | None, tuple[float, Decimal]] = {}
        self._experiments: tuple[float, list[ShadowTarget]] | None = None
        self.stored = 0
        self.shadow_captured = 0
        self.publish_failures = 0
        self._broker_retry_at = 0.0  # monotonic; before it, nothing is published (the sweep will)

    # -- response path ----------------------------------------------------------------------
    def offer(self, record: Any, prompt: str, answer: str) -> None:
        if not answer or not prompt or record.route == "" or record.status == "error":
            return  # nothing a judge could score
        cached = self._rates.get(record.policy_version_id)
        if cached is not None and time.monotonic() - cached[0] < RATE_TTL_S:
            if not is_sampled(record.request_id, inclusion_probability(cached[1], record.confidence)):
                return
        self._ensure_thread()
        self._idle.clear()
        self._queue.put_nowait(Candidate(record, prompt, answer))

    def shadow_offer(self, record: Any, prompt: str) -> None:
        """Queue a request for shadow routing unless the cached experiments say it is not sampled."""
        if record.sentinel_kind == "bypass" or not record.route:
            return  # an explicit model: production did not route, so there is nothing to compare
        cached = self._experiments
        if (cached is not None and time.monotonic() - cached[0] < RATE_TTL_S
                and not any(t.samples(record.request_id, record.created_at) for t in cached[1])):
            return
        self._ensure_thread()
        self._idle.clear()
        self._queue.put_nowait(ShadowCandidate(record, prompt))

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-sampler", daemon=True)
                self._thread.start()
                atexit.register(self.close)

    # -- background thread ------------------------------------------------------------------
    def rate_for(self, policy_version_id: int | None) -> Decimal:
        cached = self._rates.get(policy_version_id)
        if cached is not None and time.monotonic() - cached[0] < RATE_TTL_S:
            return cached[1]
        from routing.models import PolicyStatus, PolicyVersion

        rows = PolicyVersion.objects.all()
        rows = rows.filter(pk=policy_version_id) if policy_version_id else rows.filter(status=PolicyStatus.ACTIVE)
        rate = rows.values_list("judge_sample_rate", flat=True).first()
        rate = DEFAULT_RATE if rate is None else Decimal(rate)
        self._rates[policy_version_id] = (time.monotonic(), rate)
        return rate

    def running_experiments(self) -> list[ShadowTarget]:
        cached = self._experiments
        if cached is not None and time.monotonic() - cached[0] < RATE_TTL_S:
            return cached[1]
        from .models import ExperimentStatus, ShadowExperiment

        targets = [
            ShadowTarget(e.pk, e.candidate_id, float(e.sample_rate), e.window_start, e.window_end)
            for e in ShadowExperiment.objects.filter(status=ExperimentStatus.RUNNING)
        ]
        self._experiments = (time.monotonic(), targets)
        return targets

    def invalidate(self) -> None:
        self._rates.clear()
        self._experiments = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                connections.close_all()
                self._idle.set()
                return
            try:
                close_old_connections()
                if isinstance(item, ShadowCandidate):
                    self._handle_shadow(item)
                else:
                    self._handle(item)
            except Exception:  # noqa: BLE001 - an audit sample is best effort; the request is served
                log.warning("audit sampling failed for %s", item.record.request_id, exc_info=True)
            if self._queue.empty():
                connections.close_all()
                self._idle.set()

    def _handle(self, item: Candidate) -> None:
        record = item.record
        with db_deadline(DB_DEADLINE_S):
            rate = self.rate_for(record.policy_version_id)
        probability = inclusion_probability(rate, record.confidence)
        if not is_sampled(record.request_id, probability):
            return
        from routing.runtime import get_runtime

        get_runtime().recorder.flush(10)  # the judge needs the decision row; this waits here, not on a request
        with db_deadline(DB_DEADLINE_S):
            stored = sample_store(record=record, prompt=item.prompt, answer=item.answer, probability=probability)
        if stored:
            self.stored += 1
            from .tasks import judge_audit

            self.enqueue(judge_audit, str(record.request_id))

    def _handle_shadow(self, item: ShadowCandidate) -> None:
        record = item.record
        with db_deadline(DB_DEADLINE_S):
            targets = [t for t in self.running_experiments() if t.samples(record.request_id, record.created_at)]
            if not targets:
                return
            captured = [t.experiment_id for t in targets
                        if shadow_capture_store(target=t, record=record, prompt=item.prompt)]
        if not captured:
            return
        self.shadow_captured += len(captured)
        from routing.runtime import get_runtime

        get_runtime().recorder.flush(10)  # the task re-uses the stored decision row
        from .tasks import shadow_route

        for experiment_id in captured:
            self.enqueue(shadow_route, experiment_id, str(record.request_id))

    def enqueue(self, task: Any, *args: Any) -> bool:
        """Publish a task for a stored row; False when the broker is away (the row waits for the sweep).

        In-process (eager) mode runs the task here, and its errors are the task's, not the broker's."""
        from django.conf import settings

        if settings.CELERY_TASK_ALWAYS_EAGER:
            task.delay(*args)
            return True
        if time.monotonic() < self._broker_retry_at:
            return False
        try:
            # One attempt: bounded by the broker's connect and socket timeouts (config/settings/tasks.py),
            # so a dead or hung broker costs this thread a few seconds once per BROKER_RETRY_S.
            task.apply_async(args=args, retry=False)
        except Exception as exc:  # noqa: BLE001 - kombu/redis/amqp raise different types; the row is the outbox
            self.publish_failures += 1
            self._broker_retry_at = time.monotonic() + BROKER_RETRY_S
            log.warning("broker unavailable (%s: %s); %s left for the outbox sweep",
                        type(exc).__name__, str(exc)[:200], task.name)
            return False
        return True

    # -- control ----------------------------------------------------------------------------
    def flush(self, timeout: float = 15.0) -> bool:
        if self._thread is None:
            return True
        return self._idle.wait(timeout)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=15)


def sample_store(*, record: Any, prompt: str, answer: str, probability: float) -> bool:
    """Store the sample and its pending audit; False when this request is already sampled."""
    from django.conf import settings

    from .models import AuditSample, JudgeAudit

    try:
        with transaction.atomic():
            sample = AuditSample.objects.create(
                request_id=record.request_id, route=record.route, executor_model=record.executor_model or "",
                confidence=record.confidence, stratum=stratum(record.route, record.confidence),
                probability=probability, weight=1.0 / probability,
                prompt=redact_for_storage(prompt), answer=redact_for_storage(answer),
            )
            JudgeAudit.objects.create(
                sample=sample, request_id=record.request_id,
                judge_model=getattr(settings, "JUDGE_MODEL", None) or "claude-opus-4-7",
            )
    except IntegrityError:
        return False
    return True


def shadow_capture_store(*, target: ShadowTarget, record: Any, prompt: str) -> bool:
    """Capture one shadow-sampled request; the prompt only when the candidate must call its own
    sentinel (its sentinel settings differ from the production policy's). False if already captured."""
    from .models import ShadowCapture
    from .shadow import sentinel_settings_differ

    needs = sentinel_settings_differ(candidate_id=target.candidate_id, production_id=record.policy_version_id)
    try:
        with transaction.atomic():
            ShadowCapture.objects.create(experiment_id=target.experiment_id, request_id=record.request_id,
                                         prompt=redact_for_storage(prompt) if needs else "",
                                         needs_sentinel=needs)
    except IntegrityError:
        return False
    return True


REQUEUE_EVERY_S = 600  # a row is re-enqueued at most this often, however long the broker's backlog


def outbox_requeue(*, older_than_s: float = 120, limit: int = 500) -> dict[str, int]:
    """Re-enqueue stored work that was never processed; returns counts by kind.

    1. Judge audits still pending (never claimed) and stored more than `older_than_s` ago.
    2. Shadow captures without a shadow decision, unclaimed (or claimed longer than the shadow
       claim timeout ago: a dead worker), stored more than `older_than_s` ago.
    3. Scored audits whose score is not on the decision row yet: applied here (idempotent).
    A row is re-enqueued at most once per `REQUEUE_EVERY_S` (a cache marker), so a message
    that is merely waiting in a long broker queue is not multiplied; and every task claims its
    row, so a duplicate that does get through is a no-op.
    """
    from datetime import timedelta

    from django.core.cache import cache
    from django.db.models import Exists, OuterRef, Q
    from django.utils import timezone

    from . import judge
    from .models import JudgeAudit, JudgeStatus, ShadowCapture, ShadowDecision
    from .shadow import CLAIM_TIMEOUT
    from .tasks import judge_audit, shadow_route

    def first_time(key: str) -> bool:
        try:
            return bool(cache.add(f"outbox-requeued:{key}", 1, timeout=REQUEUE_EVERY_S))
        except Exception:  # noqa: BLE001 - without the cache, a duplicate is still a no-op
            return True

    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_s)
    counts = {"judge": 0, "shadow": 0, "applied": 0}
    pending = JudgeAudit.objects.filter(status=JudgeStatus.PENDING, created_at__lt=cutoff).order_by("created_at")
    for request_id in pending.values_list("request_id", flat=True)[:limit]:
        if first_time(f"judge:{request_id}"):
            judge_audit.delay(str(request_id))
            counts["judge"] += 1
    decided = ShadowDecision.objects.filter(experiment_id=OuterRef("experiment_id"), request_id=OuterRef("request_id"))
    captures = (ShadowCapture.objects.filter(created_at__lt=cutoff)
                .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_TIMEOUT))
                .exclude(Exists(decided)).order_by("created_at"))
    for experiment_id, request_id in captures.values_list("experiment_id", "request_id")[:limit]:
        if first_time(f"shadow:{experiment_id}:{request_id}"):
            shadow_route.delay(experiment_id, str(request_id))
            counts["shadow"] += 1
    unapplied = JudgeAudit.objects.filter(status=JudgeStatus.SCORED, applied=False, scored_at__lt=cutoff)
    for request_id in unapplied.values_list("request_id", flat=True)[:limit]:
        counts["applied"] += int(judge.audit_apply_score(request_id=str(request_id)))
    return counts


_sampler: Sampler | None = None


def get_sampler() -> Sampler:
    global _sampler
    if _sampler is None:
        _sampler = Sampler()
    return _sampler


def maybe_sample(record: Any, prompt: str, answer: str) -> None:
    """The hook the API views call after recording a decision (non-blocking)."""
    try:
        get_sampler().offer(record, prompt, answer)
    except Exception:  # noqa: BLE001 - sampling must never fail a request
        log.warning("audit sampling hook failed", exc_info=True)
    try:
        get_sampler().shadow_offer(record, prompt)
    except Exception:  # noqa: BLE001 - a shadow experiment must never fail a request
        log.warning("shadow sampling hook failed", exc_info=True)


def last_user_text(messages: Any) -> str:
    for message in reversed(list(messages or [])):
        if getattr(message, "role", "") == "user":
            return str(message.content)
    return ""
