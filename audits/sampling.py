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

log = logging.getLogger("audits.sampling")

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
        probability = inclusion_probability(self.rate_for(record.policy_version_id), record.confidence)
        if not is_sampled(record.request_id, probability):
            return
        from routing.runtime import get_runtime

        get_runtime().recorder.flush(10)  # the judge needs the decision row; this waits here, not on a request
        if sample_store(record=record, prompt=item.prompt, answer=item.answer, probability=probability):
            self.stored += 1
            from .tasks import judge_audit

            judge_audit.delay(str(record.request_id))

    def _handle_shadow(self, item: ShadowCandidate) -> None:
        record = item.record
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
            shadow_route.delay(experiment_id, str(record.request_id))

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
                probability=probability, weight=1.0 / probability, prompt=prompt, answer=answer,
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
                                         prompt=prompt if needs else "", needs_sentinel=needs)
    except IntegrityError:
        return False
    return True


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
