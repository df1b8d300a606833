"""The retry layer, circuit breakers and the deadline, with an injected clock, sleep and random source.

Calls here are plain coroutines standing in for provider calls (what `Calls.call` is given is any
`timeout -> awaitable`); the real SDKs against the emulator are exercised in tests/faults.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest

from routing.engine.catalog import Price
from routing.engine.pricing import Usage
from routing.engine.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerRegistry,
    Calls,
    CircuitBreaker,
    CircuitOpen,
    Deadline,
    DeadlineExceeded,
    RetryPolicy,
)
from routing.providers.base import RETRYABLE_STATUSES, ProviderError, status_error


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeper:
    """Records the waits and moves the injected clock instead of sleeping."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


PRICE = Price("m", Decimal("1.00"), Decimal("5.00"), Decimal("0.10"), Decimal("1.25"))


class Result:
    def __init__(self, usage: Usage) -> None:
        self.usage = usage


def failing_then_ok(errors: list[ProviderError]):
    calls: list[float] = []

    async def call(timeout: float) -> Result:
        calls.append(timeout)
        if errors:
            raise errors.pop(0)
        return Result(Usage(input_tokens=100, output_tokens=10))

    return call, calls


def make_calls(clock: Clock, *, seconds: float = 60.0, policy: RetryPolicy | None = None,
               breakers: BreakerRegistry | None = None) -> tuple[Calls, Sleeper]:
    sleeper = Sleeper(clock)
    calls = Calls(deadline=Deadline(seconds, clock=clock), policy=policy or RetryPolicy(), breakers=breakers,
                  rng=random.Random(7), sleep=sleeper)
    return calls, sleeper


# ---- backoff, jitter and retry-after -----------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_ceiling_that_stops_at_the_maximum():
    policy = RetryPolicy(base_s=0.2, max_backoff_s=1.0)
    rng = random.Random(1)
    for retry, ceiling in ((1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)):
        waits = [policy.backoff(retry, rng) for _ in range(500)]
        assert all(0.0 <= w <= ceiling for w in waits)
        # Full jitter spreads the waits over the whole range, not around one value.
        assert min(waits) < ceiling * 0.1 and max(waits) > ceiling * 0.9


def test_a_retry_after_is_honoured_up_to_the_cap_and_a_longer_one_is_not_waited_for():
    policy = RetryPolicy(retry_after_cap_s=10.0)
    limited = ProviderError("429", provider="p", status=429, retryable=True, retry_after=4.0)
    assert policy.delay(limited, 1, remaining=60.0) == 4.0
    too_long = ProviderError("429", provider="p", status=429, retryable=True, retry_after=11.0)
    assert policy.delay(too_long, 1, remaining=60.0) is None


def test_no_wait_starts_that_would_end_past_the_deadline():
    policy = RetryPolicy(retry_after_cap_s=30.0)
    limited = ProviderError("429", provider="p", status=429, retryable=True, retry_after=5.0)
    assert policy.delay(limited, 1, remaining=4.9) is None
    server = ProviderError("503", provider="p", status=503, retryable=True)
    assert policy.delay(server, 1, remaining=0.0) is None


def test_retries_stop_at_the_maximum_number_of_attempts():
    policy = RetryPolicy(max_attempts=3)
    server = ProviderError("503", provider="p", status=503, retryable=True)
    assert policy.delay(server, 2, remaining=60.0) is not None
    assert policy.delay(server, 3, remaining=60.0) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_other_4xx_are_never_retried(status):
    error = status_error("p", status)
    assert not error.retryable
    assert RetryPolicy().delay(error, 1, remaining=60.0) is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
def test_rate_limits_and_server_errors_are_retryable(status):
    assert status_error("p", status).retryable


def test_408_counts_as_a_timeout_and_409_is_not_retryable():
    assert status_error("p", 408).kind == "timeout" and status_error("p", 408).retryable
    assert 409 not in RETRYABLE_STATUSES


# ---- Calls: one target, with retries -----------------------------------------------------------


async def test_a_flaky_call_is_retried_and_every_attempt_is_logged_with_its_cost():
    clock = Clock()
    calls, sleeper = make_calls(clock)
    fn, made = failing_then_ok([status_error("p", 503), status_error("p", 502)])
    result = await calls.call(fn, role="executor", provider="p", model="m", limit=30.0, price=PRICE)
    assert result.usage.input_tokens == 100
    assert len(made) == 3 and len(sleeper.waits) == 2 and calls.retries == 2
    assert [a.outcome for a in calls.attempts] == ["error", "error", "ok"]
    assert [a.status for a in calls.attempts] == [503, 502, None]
    # Failed calls bill nothing; the row's cost is what the one answered call billed.
    assert calls.cost() == calls.attempts[2].cost == Decimal("0.0001500000")
    assert calls.attempts[0].to_dict()["cost"] == "0E-10" or Decimal(calls.attempts[0].to_dict()["cost"]) == 0


async def test_a_4xx_is_raised_at_once_without_a_retry():
    clock = Clock()
    calls, sleeper = make_calls(clock)
    fn, made = failing_then_ok([status_error("p", 400)])
    with pytest.raises(ProviderError) as caught:
        await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    assert caught.value.status == 400 and len(made) == 1 and sleeper.waits == []


async def test_each_call_gets_the_smaller_of_the_time_left_and_its_own_limit():
    clock = Clock()
    calls, _ = make_calls(clock, seconds=10.0)
    fn, made = failing_then_ok([])
    await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    clock.advance(8.0)
    await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    await calls.call(fn, role="executor", provider="p", model="m", limit=1.0)
    assert made == [10.0, 2.0, 1.0]


async def test_a_retry_after_longer_than_the_time_left_fails_at_once():
    clock = Clock()
    calls, sleeper = make_calls(clock, seconds=5.0)
    fn, made = failing_then_ok([status_error("p", 429, {"retry-after": "8"})])
    with pytest.raises(ProviderError) as caught:
        await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    assert caught.value.status == 429 and caught.value.retry_after == 8.0
    assert len(made) == 1 and sleeper.waits == []
    assert calls.failure(caught.value).status == 503 and calls.failure(caught.value).retry_after == 8.0


async def test_no_call_goes_out_once_the_deadline_has_passed():
    clock = Clock()
    calls, _ = make_calls(clock, seconds=1.0)
    clock.advance(1.5)
    fn, made = failing_then_ok([])
    with pytest.raises(DeadlineExceeded):
        await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    assert made == [] and calls.failure(None).status == 504


async def test_a_hanging_call_is_cut_at_the_deadline():
    calls = Calls(deadline=Deadline(0.3))  # the real clock: the bound is what is tested

    async def hang(timeout: float) -> Result:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await calls.call(hang, role="executor", provider="p", model="m", limit=30.0)
    assert loop.time() - started < 2.0
    assert [a.outcome for a in calls.attempts] == ["timeout"]
    assert calls.failure(None).status == 504


# ---- the circuit breaker -----------------------------------------------------------------------


def test_the_circuit_opens_after_n_consecutive_failures_and_a_success_resets_the_count():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown_s=10.0, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.retry_in() == pytest.approx(10.0)


def test_after_the_cool_down_a_single_probe_goes_out_and_its_success_closes_the_circuit():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=10.0, clock=clock)
    breaker.failure()
    clock.advance(9.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow(), "only one probe at a time"
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow() and breaker.allow()


def test_a_failed_probe_opens_the_circuit_for_another_cool_down():
    clock = Clock()
    breaker = CircuitBreaker(failures=2, cooldown_s=5.0, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allow()
    clock.advance(5.0)
    assert breaker.allow() and breaker.state == HALF_OPEN


def test_a_probe_that_never_reports_does_not_hold_the_circuit_half_open_for_ever():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=5.0, clock=clock)
    breaker.failure()
    clock.advance(5.0)
    assert breaker.allow()
    clock.advance(5.0)
    assert breaker.allow(), "a second probe after a whole cool-down without a verdict"


def test_the_registry_keeps_one_breaker_per_provider_and_model_and_reports_changes():
    clock = Clock()
    changes: list[tuple[str, str, str]] = []
    registry = BreakerRegistry(failures=1, cooldown_s=5.0, clock=clock, on_change=lambda *c: changes.append(c))
    registry.get("anthropic", "haiku").failure()
    assert registry.get("anthropic", "haiku").state == OPEN
    assert registry.get("anthropic", "opus").state == CLOSED
    assert ("anthropic", "haiku", OPEN) in changes
    registry.reset()
    assert registry.states() == {} and changes[-1][2] == CLOSED


async def test_an_open_circuit_refuses_the_call_without_reaching_the_provider():
    clock = Clock()
    registry = BreakerRegistry(failures=2, cooldown_s=30.0, clock=clock)
    calls, _ = make_calls(clock, policy=RetryPolicy(max_attempts=5), breakers=registry)
    fn, made = failing_then_ok([status_error("p", 500)] * 5)
    with pytest.raises(ProviderError) as caught:
        await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    # Two failures opened the circuit: the retries stop there, with the real error.
    assert len(made) == 2 and caught.value.status == 500
    with pytest.raises(CircuitOpen) as refused:
        await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    assert len(made) == 2 and refused.value.retry_after == pytest.approx(30.0)
    assert calls.attempts[-1].outcome == "circuit_open" and not calls.attempts[-1].called
    assert calls.failure(refused.value).status == 503


async def test_a_4xx_does_not_count_against_the_circuit():
    clock = Clock()
    registry = BreakerRegistry(failures=1, cooldown_s=30.0, clock=clock)
    calls, _ = make_calls(clock, breakers=registry)
    fn, _ = failing_then_ok([status_error("p", 400)])
    with pytest.raises(ProviderError):
        await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    assert registry.get("p", "m").state == CLOSED


def disconnected() -> ProviderError:
    return ProviderError("p: connection closed before an answer", provider="p", retryable=True, kind="disconnected")


def test_a_connection_closed_before_an_answer_is_retried_at_once_then_with_backoff():
    policy = RetryPolicy(base_s=0.2)
    rng = random.Random(3)
    assert policy.delay(disconnected(), 1, remaining=60.0, rng=rng) == 0.0
    second = [policy.delay(disconnected(), 2, remaining=60.0, rng=rng) for _ in range(50)]
    assert all(0.0 <= wait <= 0.4 for wait in second) and max(second) > 0.2  # the usual backoff of a 2nd retry
    assert policy.delay(disconnected(), 3, remaining=60.0) is None  # max_attempts still holds


async def test_a_first_attempt_closed_before_an_answer_does_not_count_against_the_circuit_but_its_retry_does():
    clock = Clock()
    registry = BreakerRegistry(failures=1, cooldown_s=30.0, clock=clock)
    calls, sleeper = make_calls(clock, breakers=registry)
    fn, made = failing_then_ok([disconnected()])
    await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    assert len(made) == 2 and sleeper.waits == [0.0] and registry.get("p", "m").state == CLOSED
    assert [(a.outcome, a.error, a.retry) for a in calls.attempts] == [
        ("error", "disconnected", False), ("ok", "", True)]

    fn, made = failing_then_ok([disconnected(), disconnected()])  # a fresh connection closed too: a real failure
    with pytest.raises(ProviderError):
        await calls.call(fn, role="executor", provider="p", model="m", limit=30.0)
    assert len(made) == 2 and registry.get("p", "m").state == OPEN


def test_a_nested_deadline_never_outlives_its_parent():
    clock = Clock()
    outer = Deadline(2.0, clock=clock)
    assert outer.sub(5.0).remaining() == pytest.approx(2.0)
    assert outer.sub(0.5).remaining() == pytest.approx(0.5)
    clock.advance(3.0)
    assert outer.expired and outer.sub(1.0).expired
