"""One retry layer for every provider call, circuit breakers, and the per-request deadline.

Plain Python (no Django). `Gateway.route` creates one `Calls` per request; the sentinel,
the chained call and every executor attempt go through it, so that:

1. every provider call is bounded by `min(time left on the request's Deadline, the
   provider's own timeout)`, so a hanging provider never holds a request past its deadline;
2. a retryable failure (429, 500, 502, 503, 504, 529, 408 and other timeouts, connection
   errors) is retried on the same provider+model after exponential backoff with full
   jitter, or after the provider's `retry-after` when it sent one no longer than
   `RetryPolicy.retry_after_cap_s`; no other 4xx is ever retried;
3. a wait is never started when it would end past the deadline (a `retry-after` longer
   than the time left is not waited for: the caller moves on to its fallback or fails);
4. each provider+model has a `CircuitBreaker`: `failures` consecutive failures open it;
   while open, calls are refused at once (`CircuitOpen`) so the caller skips to the
   route's fallback; after `cooldown_s` one probe is let through (half-open); its
   success closes the circuit, its failure opens it again;
5. every call is appended to the request's attempt log (role, provider, model, outcome,
   HTTP status, error kind, milliseconds, tokens and cost), which the decision row stores.

Streams are retried only before their first delta reached the client; `Gateway.stream`
drives that with the same pieces (`admit`, `timeout_for`, `retry_delay`, `log`).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from routing.providers.base import ProviderError

from .catalog import Price
from .pricing import Usage, cost_of, quantize

T = TypeVar("T")
Clock = Callable[[], float]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
CIRCUIT_STATES = (CLOSED, OPEN, HALF_OPEN)
# Outcomes in the attempt log: ok, error, timeout, partial (a stream cut after data reached
# the client), cancelled (the client went away, or speculation was cancelled), circuit_open
# (no call was made: the circuit was open).
OUTCOMES = ("ok", "error", "timeout", "partial", "cancelled", "circuit_open")


class DeadlineExceeded(ProviderError):
    """The request's deadline passed (or left no time) before a provider answered."""

    def __init__(self, message: str = "request deadline exceeded", *, provider: str = "") -> None:
        super().__init__(message, provider=provider, retryable=False, kind="deadline")


class CircuitOpen(ProviderError):
    """The circuit for this provider+model is open: no call was made."""

    def __init__(self, provider: str, model: str, retry_in: float) -> None:
        super().__init__(f"{provider}: circuit open for {model}", provider=provider, retryable=False,
                         kind="circuit_open", retry_after=retry_in)


# ---- the deadline ------------------------------------------------------------------------------


class Deadline:
    """A point in (monotonic) time that a request must not outlive."""

    def __init__(self, seconds: float, *, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.seconds = max(0.0, seconds)
        self.expires_at = clock() + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.expires_at - self.clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def timeout_for(self, limit: float) -> float:
        """A call's timeout: what is left, but never more than the call's own limit."""
        return min(self.remaining(), limit)

    def sub(self, seconds: float) -> Deadline:
        """A tighter deadline inside this one (e.g. the sentinel's budget)."""
        inner = Deadline(0.0, clock=self.clock)
        inner.expires_at = min(self.expires_at, self.clock() + max(0.0, seconds))
        inner.seconds = inner.expires_at - self.clock()
        return inner


# ---- retry policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # per provider+model, the first call included
    base_s: float = 0.2  # backoff before the first retry is uniform in [0, base_s]
    max_backoff_s: float = 5.0  # the exponential ceiling never grows past this
    retry_after_cap_s: float = 30.0  # a longer `retry-after` is not waited for

    @classmethod
    def from_settings(cls, settings: Any) -> RetryPolicy:
        """From Django settings (or any object with the GATEWAY_RETRY_* attributes)."""
        return cls(
            max_attempts=int(getattr(settings, "GATEWAY_RETRY_MAX_ATTEMPTS", cls.max_attempts)),
            base_s=int(getattr(settings, "GATEWAY_RETRY_BASE_MS", cls.base_s * 1000)) / 1000,
            max_backoff_s=int(getattr(settings, "GATEWAY_RETRY_MAX_BACKOFF_MS", cls.max_backoff_s * 1000)) / 1000,
            retry_after_cap_s=float(getattr(settings, "GATEWAY_RETRY_AFTER_CAP_S", cls.retry_after_cap_s)),
        )

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max_backoff, base * 2^(retry-1))] for retry 1, 2, ..."""
        ceiling = min(self.max_backoff_s, self.base_s * (2 ** max(0, retry - 1)))
        return (rng or random).uniform(0.0, ceiling)

    def delay(self, error: ProviderError, attempt: int, remaining: float,
              rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when not to retry.

        `attempt` is how many calls were made so far; `remaining` the time left on the deadline.
        """
        if not error.retryable or attempt >= self.max_attempts:
            return None
        if error.kind == "disconnected" and attempt == 1:
            return 0.0  # a pooled connection closed under the request: a fresh one, at once
        if error.retry_after is not None:
            if error.retry_after > self.retry_after_cap_s:
                return None
            wait = error.retry_after
        else:
            wait = self.backoff(attempt, rng)
        if wait >= remaining:
            return None  # the wait would end past the deadline: don't start it
        return wait


# ---- circuit breakers --------------------------------------------------------------------------


class CircuitBreaker:
    """closed → (N consecutive failures) → open → (cool-down) → half-open: one probe → closed/open."""

    def __init__(self, *, failures: int, cooldown_s: float, clock: Clock = time.monotonic,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.failures_to_open = max(1, failures)
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self._probe_started: float | None = None
        self._lock = threading.Lock()  # one runtime may serve several event loops (threads)

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(state)

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when closed)."""
        if self.state == CLOSED:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - self.clock())

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time is let through."""
        with self._lock:
            now = self.clock()
            if self.state == CLOSED:
                return True
            if self.state == OPEN:
                if now - self.opened_at < self.cooldown_s:
                    return False
                self._set(HALF_OPEN)
                self._probe_started = now
                return True
            # Half-open: a probe is out. If it vanished without a verdict for a whole
            # cool-down, let another one go rather than stay half-open for ever.
            if self._probe_started is None or now - self._probe_started >= self.cooldown_s:
                self._probe_started = now
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self.consecutive_failures = 0
            self._probe_started = None
            self._set(CLOSED)

    def failure(self) -> None:
        with self._lock:
            self.consecutive_failures += 1
            if self.state == HALF_OPEN or self.consecutive_failures >= self.failures_to_open:
                self.opened_at = self.clock()
                self._probe_started = None
                self._set(OPEN)

    def release(self) -> None:
        """A call ended with no verdict on the provider's health (cancelled, our own error)."""
        with self._lock:
            self._probe_started = None


class BreakerRegistry:
    """One CircuitBreaker per (provider, model), created on first use; lives on the runtime."""

    def __init__(self, *, failures: int = 5, cooldown_s: float = 30.0, clock: Clock = time.monotonic,
                 on_change: Callable[[str, str, str], None] | None = None) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_change = on_change
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, *, on_change: Callable[[str, str, str], None] | None = None
                      ) -> BreakerRegistry:
        return cls(
            failures=int(getattr(settings, "GATEWAY_BREAKER_FAILURES", 5)),
            cooldown_s=int(getattr(settings, "GATEWAY_BREAKER_COOLDOWN_MS", 30_000)) / 1000,
            on_change=on_change,
        )

    def get(self, provider: str, model: str) -> CircuitBreaker:
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(key)
                if breaker is None:
                    notify = None
                    if self.on_change is not None:
                        callback = self.on_change

                        def notify(state: str, _p: str = provider, _m: str = model) -> None:
                            callback(_p, _m, state)

                    breaker = CircuitBreaker(failures=self.failures, cooldown_s=self.cooldown_s,
                                             clock=self.clock, on_change=notify)
                    self._breakers[key] = breaker
                    if notify is not None:
                        notify(CLOSED)
        return breaker

    def states(self) -> dict[tuple[str, str], str]:
        return {key: b.state for key, b in list(self._breakers.items())}

    def reset(self, *, failures: int | None = None, cooldown_s: float | None = None) -> None:
        """Forget every circuit (config reload, tests); optionally with new thresholds."""
        with self._lock:
            if failures is not None:
                self.failures = failures
            if cooldown_s is not None:
                self.cooldown_s = cooldown_s
            old, self._breakers = self._breakers, {}
        if self.on_change is not None:
            for provider, model in old:
                self.on_change(provider, model, CLOSED)


# ---- the attempt log ---------------------------------------------------------------------------


@dataclass
class Attempt:
    """One provider call (or a call refused by an open circuit), as the decision row stores it."""

    role: str  # sentinel, executor, speculative
    provider: str
    model: str
    outcome: str
    status: int | None = None
    error: str = ""  # error kind: error, timeout, connection, disconnected, malformed, deadline, circuit_open, ...
    ms: float = 0.0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = field(default_factory=lambda: quantize(Decimal(0)))
    retry: bool = False  # a retry of a failed call to the same provider+model

    @property
    def called(self) -> bool:
        return self.outcome != "circuit_open"

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role, "provider": self.provider, "model": self.model, "outcome": self.outcome,
            "status": self.status, "error": self.error, "ms": round(self.ms, 3),
            "input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens,
            "cached_tokens": self.usage.cached_tokens, "cache_write_tokens": self.usage.cache_write_tokens,
            "cost": str(self.cost), "retry": self.retry,
        }


def outcome_of(error: BaseException) -> str:
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(error, ProviderError):
        if error.kind == "circuit_open":
            return "circuit_open"
        return "timeout" if error.kind in ("timeout", "deadline") else "error"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "error"


# ---- the per-request caller --------------------------------------------------------------------


@dataclass
class ClientFailure:
    """What the client is told when no executor answered."""

    status: int  # 502 upstream failed, 503 unavailable (circuit open / rate limited), 504 deadline
    code: str
    retry_after: float | None = None


class Calls:
    """The provider calls of one request: its deadline, retry policy, breakers and attempt log."""

    def __init__(self, *, deadline: Deadline, policy: RetryPolicy | None = None,
                 breakers: BreakerRegistry | None = None, rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.deadline = deadline
        self.policy = policy or RetryPolicy()
        self.breakers = breakers
        self.rng = rng
        self.sleep = sleep
        self.attempts: list[Attempt] = []

    # -- pieces (also used by streams) ---------------------------------------------------------
    def breaker(self, provider: str, model: str) -> CircuitBreaker | None:
        return self.breakers.get(provider, model) if self.breakers is not None else None

    def admit(self, role: str, provider: str, model: str) -> CircuitBreaker | None:
        """The breaker for a call about to go out; raises CircuitOpen (and logs it) if it may not."""
        breaker = self.breaker(provider, model)
        if breaker is not None and not breaker.allow():
            error = CircuitOpen(provider, model, breaker.retry_in())
            self.attempts.append(Attempt(role, provider, model, "circuit_open", error="circuit_open"))
            raise error
        return breaker

    def timeout_for(self, limit: float, budget: Deadline | None = None) -> float:
        timeout = (budget or self.deadline).timeout_for(limit)
        if timeout <= 0:
            raise DeadlineExceeded()
        return timeout

    def log(self, role: str, provider: str, model: str, *, started: float, outcome: str,
            error: BaseException | None = None, usage: Usage | None = None, price: Price | None = None,
            retry: bool = False) -> Attempt:
        usage = usage or Usage()
        attempt = Attempt(
            role=role, provider=provider, model=model, outcome=outcome,
            status=getattr(error, "status", None), error=(getattr(error, "kind", "") or type(error).__name__)
            if error is not None and outcome != "ok" else "",
            ms=(time.perf_counter() - started) * 1000, usage=usage, cost=cost_of(usage, price), retry=retry,
        )
        self.attempts.append(attempt)
        return attempt

    @staticmethod
    def judge(breaker: CircuitBreaker | None, error: BaseException | None, *, first_attempt: bool = False) -> None:
        """Tell the breaker what a call says about the provider's health.

        A first attempt whose connection was closed before any answer ("disconnected") says
        nothing yet: a burst of requests on keep-alive connections the server had just closed
        would otherwise open the circuit at once. Its immediate retry on a fresh connection is
        judged as usual.
        """
        if breaker is None:
            return
        if first_attempt and isinstance(error, ProviderError) and error.kind == "disconnected":
            breaker.release()
            return
        if error is None:
            breaker.success()
        elif isinstance(error, (TimeoutError, asyncio.TimeoutError)) or (
            isinstance(error, ProviderError) and (error.retryable or error.kind == "deadline")
        ):
            breaker.failure()
        elif isinstance(error, ProviderError) and error.status is not None:
            breaker.success()  # a 4xx: the provider is up and answering; the request was at fault
        else:
            breaker.release()

    def retry_delay(self, error: ProviderError, attempt: int, budget: Deadline | None = None) -> float | None:
        return self.policy.delay(error, attempt, (budget or self.deadline).remaining(), self.rng)

    # -- one target, with retries --------------------------------------------------------------
    async def call(
        self,
        fn: Callable[[float], Awaitable[T]],
        *,
        role: str,
        provider: str,
        model: str,
        limit: float,
        price: Price | None = None,
        usage_of: Callable[[T], Usage] = lambda result: result.usage,  # type: ignore[attr-defined]
        budget: Deadline | None = None,
        cancel_usage: Usage | None = None,
    ) -> T:
        """Call `fn(timeout)` on one provider+model until it succeeds or may not be retried.

        `budget` is a tighter deadline for this step (the sentinel's); `cancel_usage` what a
        call cancelled in flight is taken to have consumed (the prompt). Raises the last
        ProviderError, `CircuitOpen`, or `DeadlineExceeded`.
        """
        attempt = 0
        last: ProviderError | None = None
        while True:
            try:
                breaker = self.admit(role, provider, model)
            except CircuitOpen:
                if last is None:
                    raise
                self.attempts.pop()  # not a new call: the failure that opened it is the answer
                raise last from None
            try:
                timeout = self.timeout_for(limit, budget)
            except DeadlineExceeded:
                if breaker is not None:
                    breaker.release()
                raise
            bound_by_deadline = timeout < limit
            attempt += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):  # a hard bound, whatever the SDK does with its timeout
                    result = await fn(timeout)
            except asyncio.CancelledError:
                self.log(role, provider, model, started=started, outcome="cancelled", usage=cancel_usage,
                         price=price, retry=attempt > 1)
                self.judge(breaker, asyncio.CancelledError())
                raise
            except (ProviderError, TimeoutError) as exc:
                error = exc if isinstance(exc, ProviderError) else ProviderError(
                    f"{provider}: timeout after {timeout:.2f}s", provider=provider, retryable=True, kind="timeout")
                if error.kind == "timeout" and bound_by_deadline and (budget or self.deadline).remaining() < 0.05:
                    error = DeadlineExceeded(f"{provider}: no answer before the deadline", provider=provider)
                self.log(role, provider, model, started=started, outcome=outcome_of(error), error=error,
                         price=price, retry=attempt > 1)
                self.judge(breaker, error, first_attempt=attempt == 1)
                wait = self.retry_delay(error, attempt, budget)
                if breaker is not None and breaker.state == OPEN:
                    wait = None  # this failure opened the circuit: no retry, the fallback's turn
                if wait is None:
                    if error is not exc:
                        raise error from exc
                    raise
                last = error
                await self.sleep(wait)
                continue
            self.log(role, provider, model, started=started, outcome="ok", usage=usage_of(result), price=price,
                     retry=attempt > 1)
            self.judge(breaker, None)
            return result

    # -- summaries -----------------------------------------------------------------------------
    def calls_made(self, role: str | None = None) -> int:
        return sum(1 for a in self.attempts if a.called and (role is None or a.role == role))

    @property
    def retries(self) -> int:
        return sum(1 for a in self.attempts if a.retry)

    def cost(self, role: str | None = None) -> Decimal:
        return quantize(sum((a.cost for a in self.attempts if role is None or a.role == role), Decimal(0)))

    def failure(self, error: ProviderError | None) -> ClientFailure:
        """The client-facing status when no executor answered, from the last error."""
        if isinstance(error, DeadlineExceeded) or self.deadline.expired:
            return ClientFailure(504, "deadline_exceeded")
        if isinstance(error, CircuitOpen):
            return ClientFailure(503, "upstream_unavailable", error.retry_after)
        if error is not None and error.status == 429:
            return ClientFailure(503, "upstream_rate_limited", error.retry_after)
        return ClientFailure(502, "upstream_error")


__all__ = [
    "CIRCUIT_STATES", "Attempt", "BreakerRegistry", "Calls", "CircuitBreaker", "CircuitOpen", "ClientFailure",
    "Deadline", "DeadlineExceeded", "RetryPolicy",
]
