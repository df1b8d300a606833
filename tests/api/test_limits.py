"""Per-key rate limits and budgets, the agentic caps (routing/limits.py) and their API (issue 7).

Unit tests drive both backends (process memory, and Redis: skipped without it locally, a
failure in CI) with an injected clock; API tests go through the Django client and the emulator.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import AsyncClient
from django.utils import timezone

from routing.limits import (
    LimitExceeded,
    Limiter,
    LimitsUnavailable,
    MemoryBackend,
    RedisBackend,
    budget_nanos,
    get_limiter,
    to_nanos,
)
from routing.models import ApiKey, Decision
from routing.runtime import KeyInfo, get_runtime
from routing.services import (
    api_key_create,
    api_key_limits_validate,
    api_key_revoke,
    api_key_set_limits,
    application_get_or_create,
    hash_api_key,
)
from tests.conftest import flush_log

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/3"


def _redis_reachable() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.3, socket_timeout=0.3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no Redis here"
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _redis_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required in CI for the shared limits backend")
        pytest.skip(f"no Redis at {REDIS_URL}")
    return REDIS_URL


class Clock:
    """A wall clock the test moves by hand (the limiter's only notion of time)."""

    def __init__(self, at: datetime) -> None:
        self.t = at.timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    # In the future, so that Redis (which expires keys on its own clock) keeps what the test writes.
    return Clock(datetime(2099, 12, 3, 12, 0, 0, tzinfo=UTC))


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    if request.param == "memory":
        return MemoryBackend()
    return RedisBackend(request.getfixturevalue("redis_url"))


@pytest.fixture
def limiter(backend, clock):
    # A fresh prefix per test: Redis counters of other tests (and runs) never meet these.
    prefix = f"test:limits:{uuid.uuid4().hex[:8]}"
    yield Limiter(backend, prefix=prefix, clock=clock, task_token_budget=1000, task_ttl_s=600)
    if isinstance(backend, RedisBackend):
        import redis

        client = redis.Redis.from_url(backend.url)
        for name in client.scan_iter(match=prefix + ":*"):
            client.delete(name)


def key(**limits) -> KeyInfo:
    return KeyInfo(1, uuid.uuid4().hex[:8], 1, "app", True, **limits)


async def refused(coro) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as caught:
        await coro
    return caught.value


# ---- unit: the counters ------------------------------------------------------------------------


async def test_requests_per_minute_admit_up_to_the_limit_then_say_when_the_window_frees(limiter, clock):
    k = key(requests_per_minute=3)
    await limiter.count_request(k)
    clock.advance(20)
    await limiter.count_request(k)
    clock.advance(10)
    await limiter.count_request(k)
    exc = await refused(limiter.count_request(k))
    assert exc.status == 429 and exc.code == "requests_per_minute_exceeded" and exc.retryable
    assert exc.retry_after_s == 30  # the first request leaves the window 60 s after it came
    clock.advance(30.001)
    await limiter.count_request(k)
    exc = await refused(limiter.count_request(k))
    assert exc.retry_after_s == 20  # now the second one is the oldest


async def test_the_minute_window_slides_so_a_minute_boundary_allows_no_burst(limiter, clock):
    clock.t = datetime(2099, 12, 3, 12, 0, 59, tzinfo=UTC).timestamp()
    k = key(requests_per_minute=2)
    await limiter.count_request(k)
    await limiter.count_request(k)
    clock.advance(1.5)  # a new calendar minute: a fixed window would let two more through
    exc = await refused(limiter.count_request(k))
    assert exc.retry_after_s == 59


async def test_settling_gives_the_unused_reservation_back(limiter):
    k = key(tokens_per_minute=1500, daily_budget=Decimal("1"))
    first = limiter.admission(k)
    await first.reserve_routing(Decimal("0.01"))
    await first.reserve_execution(1000, Decimal("0.20"))
    second = limiter.admission(k)
    exc = await refused(second.reserve_execution(1000, Decimal("0.20")))
    assert exc.code == "tokens_per_minute_exceeded" and exc.retryable and 1 <= exc.retry_after_s <= 60
    await first.settle(tokens=200, cost=Decimal("0.0123456789"))
    await second.reserve_execution(1000, Decimal("0.20"))
    usage = await limiter.usage(k)
    assert usage["tokens_per_minute"] == 1200
    assert usage["daily_budget"] == Decimal("0.212345679")  # 0.0123456789 rounded up to the nanodollar


async def test_a_daily_budget_never_overshoots_with_concurrent_requests(limiter):
    k = key(daily_budget=Decimal("0.10"))
    outcomes = []

    async def one() -> None:
        admission = limiter.admission(k)
        try:
            await admission.reserve_routing(Decimal("0.001"))  # the sentinel's worst case
        except LimitExceeded:
            outcomes.append("refused")  # before anything was paid
            return
        await asyncio.sleep(0)
        try:
            await admission.reserve_execution(0, Decimal("0.002"))
        except LimitExceeded:
            await admission.settle(tokens=0, cost=Decimal("0.0004"))  # the sentinel was paid
            outcomes.append("refused after routing")
            return
        assert (await limiter.usage(k))["daily_budget"] <= Decimal("0.10")
        await asyncio.sleep(0)
        await admission.settle(tokens=0, cost=Decimal("0.0025"))
        outcomes.append("served")

    await asyncio.gather(*[one() for _ in range(60)])
    spent = outcomes.count("served") * Decimal("0.0025") + outcomes.count("refused after routing") * Decimal("0.0004")
    assert len(outcomes) == 60 and 10 <= outcomes.count("served") < 60
    assert (await limiter.usage(k))["daily_budget"] == spent <= Decimal("0.10")


def test_the_memory_backend_is_atomic_across_threads():
    limiter = Limiter(MemoryBackend())
    k = key(requests_per_minute=250)
    admitted = []

    def worker() -> None:
        ok = 0
        for _ in range(100):
            try:
                asyncio.run(limiter.count_request(k))
                ok += 1
            except LimitExceeded:
                pass
        admitted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 250


def test_the_redis_backend_is_atomic_across_processes(redis_url):
    prefix = f"test:limits:{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(f"""
        import asyncio
        from decimal import Decimal

        import django

        django.setup()
        from routing.limits import Limiter, LimitExceeded, RedisBackend
        from routing.runtime import KeyInfo

        async def main():
            limiter = Limiter(RedisBackend({redis_url!r}), prefix={prefix!r})
            k = KeyInfo(1, "procs", 1, "app", True, requests_per_minute=60, daily_budget=Decimal("0.05"))
            requests = spend = 0
            for _ in range(40):
                try:
                    await limiter.count_request(k)
                    requests += 1
                except LimitExceeded:
                    pass
                admission = limiter.admission(k)
                try:
                    await admission.reserve_routing(Decimal("0.0007"))
                    spend += 1
                except LimitExceeded:
                    pass
            print(requests, spend)

        asyncio.run(main())
    """)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SECRET_KEY": "t"}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    counts = [tuple(map(int, out.split())) for out, _ in outputs]
    assert sum(c[0] for c in counts) == 60  # 160 tries in four processes, exactly the limit
    assert sum(c[1] for c in counts) == 71  # floor(0.05 / 0.0007)


async def test_retry_after_for_a_budget_is_the_time_to_the_next_utc_midnight(limiter, clock):
    clock.t = datetime(2099, 12, 3, 23, 59, 30, tzinfo=UTC).timestamp()
    k = key(daily_budget=Decimal("0.001"))
    exc = await refused(limiter.admission(k).reserve_routing(Decimal("0.002")))
    assert exc.code == "daily_budget_exceeded" and exc.retry_after_s == 30
    assert not exc.retryable  # more than the whole budget: not before tomorrow
    await limiter.admission(k).reserve_routing(Decimal("0.0008"))
    exc = await refused(limiter.admission(k).reserve_routing(Decimal("0.0008")))
    assert exc.retry_after_s == 30 and exc.retryable and "$0.001" in exc.message
    clock.advance(31)  # a new UTC day, a new count
    await limiter.admission(k).reserve_routing(Decimal("0.0008"))


async def test_a_monthly_budget_resets_at_the_start_of_the_utc_month(limiter, clock):
    clock.t = datetime(2099, 12, 31, 23, 0, 0, tzinfo=UTC).timestamp()
    k = key(monthly_budget=Decimal("5"))
    await limiter.admission(k).reserve_routing(Decimal("4.5"))
    exc = await refused(limiter.admission(k).reserve_routing(Decimal("1")))
    assert exc.code == "monthly_budget_exceeded" and exc.retry_after_s == 3600
    clock.advance(3601)
    await limiter.admission(k).reserve_routing(Decimal("1"))


def test_money_is_counted_in_nanodollars_rounded_against_the_client():
    assert to_nanos(Decimal("0.0000000001")) == 1
    assert to_nanos(Decimal("0.0000000011")) == 2
    assert to_nanos(Decimal("12.5")) == 12_500_000_000
    assert budget_nanos(Decimal("0.0000000019")) == 1
    assert budget_nanos(Decimal("1000000")) == 10**15 < 2**53  # Lua compares doubles: still exact


async def test_an_end_before_the_executor_gives_step_3_back_and_one_after_keeps_it(limiter):
    k = key(tokens_per_minute=10_000, daily_budget=Decimal("1"))
    async with limiter.admission(k) as early:
        await early.reserve_routing(Decimal("0.01"))
        await early.reserve_execution(4000, Decimal("0.30"))
    usage = await limiter.usage(k)
    assert usage["tokens_per_minute"] == 0 and usage["daily_budget"] == Decimal("0.01")
    async with limiter.admission(k) as late:
        await late.reserve_routing(Decimal("0.01"))
        await late.reserve_execution(4000, Decimal("0.30"))
        late.executing()  # cut off while the provider may be billing: the worst case stays
    usage = await limiter.usage(k)
    assert usage["tokens_per_minute"] == 4000 and usage["daily_budget"] == Decimal("0.32")


async def test_a_stream_dropped_before_it_started_gives_its_execution_reservation_back(limiter):
    k = key(tokens_per_minute=10_000)
    admission = limiter.admission(k)
    await admission.reserve_execution(4000, Decimal(0))

    async def never_started():
        yield "x"

    stream = never_started()
    admission.hand_over(stream)
    del stream
    gc.collect()
    for _ in range(20):
        await asyncio.sleep(0.01)
        if admission.state == "settled":
            break
    await asyncio.sleep(0.05)
    assert (await limiter.usage(k))["tokens_per_minute"] == 0


async def test_a_task_budget_counts_each_task_id_apart_and_says_not_to_retry(limiter, clock):
    k = key()
    first = limiter.admission(k, task_id="task-a")
    await first.reserve_execution(800, Decimal(0))
    await first.settle(tokens=700, cost=Decimal(0))
    clock.advance(100)
    exc = await refused(limiter.admission(k, task_id="task-a").reserve_execution(400, Decimal(0)))
    assert exc.code == "task_token_budget_exceeded" and not exc.retryable and "task-a" in exc.message
    assert exc.retry_after_s == 500  # the task's count expires 600 s after it began
    await limiter.admission(k, task_id="task-b").reserve_execution(400, Decimal(0))
    assert (await limiter.usage(k, task_id="task-a"))["task_token_budget"] == 700


async def test_a_request_larger_than_the_whole_limit_is_told_not_to_retry(limiter):
    exc = await refused(limiter.admission(key(tokens_per_minute=500)).reserve_execution(600, Decimal(0)))
    assert not exc.retryable and "lower max_tokens" in exc.message


async def test_an_unreachable_redis_refuses_with_503_rather_than_letting_requests_through():
    limiter = Limiter(RedisBackend("redis://127.0.0.1:1/0", timeout_s=0.2))
    exc = await refused(limiter.count_request(key(requests_per_minute=5)))
    assert isinstance(exc, LimitsUnavailable) and exc.status == 503


async def test_a_key_without_limits_never_touches_the_store():
    limiter = Limiter(RedisBackend("redis://127.0.0.1:1/0", timeout_s=0.2))
    await limiter.count_request(key())
    async with limiter.admission(key()) as admission:
        await admission.reserve_routing(Decimal("1"))
        await admission.reserve_execution(10**6, Decimal("100"))
        await admission.settle(tokens=5, cost=Decimal("0.5"))


# ---- the service, the command, the admin ---------------------------------------------------------


def test_limits_are_validated_positive_rates_and_decimal_budgets():
    limits = api_key_limits_validate(requests_per_minute="60", tokens_per_minute=90_000, daily_budget="2.50",
                                     monthly_budget=Decimal("0"))
    assert limits.requests_per_minute == 60 and limits.daily_budget == Decimal("2.50")
    with pytest.raises(ValidationError) as caught:
        api_key_limits_validate(requests_per_minute=0, tokens_per_minute=-1, daily_budget=1.5,
                                monthly_budget="-3")
    assert set(caught.value.message_dict) == {"requests_per_minute", "tokens_per_minute", "daily_budget",
                                              "monthly_budget"}
    with pytest.raises(ValidationError):
        api_key_limits_validate(daily_budget="NaN")


@pytest.mark.django_db
def test_create_api_key_takes_the_limit_options(catalog, capsys):
    call_command("create_api_key", "--name", "metered", "--rpm", "30", "--tpm", "50000",
                 "--daily-budget", "1.25", "--monthly-budget", "20")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    row = ApiKey.objects.get(key_hash=hash_api_key(raw))
    assert (row.requests_per_minute, row.tokens_per_minute) == (30, 50000)
    assert (row.daily_budget, row.monthly_budget) == (Decimal("1.25"), Decimal("20"))
    with pytest.raises(CommandError, match="--daily-budget"):
        call_command("create_api_key", "--name", "bad", "--daily-budget", "-1")


@pytest.mark.django_db
def test_the_admin_shows_and_edits_the_limits(admin_client, api_key):
    row = ApiKey.objects.get()
    page = admin_client.get(f"/admin/routing/apikey/{row.pk}/change/")
    assert page.status_code == 200 and b"requests_per_minute" in page.content and b"daily_budget" in page.content
    response = admin_client.post(f"/admin/routing/apikey/{row.pk}/change/", {
        "requests_per_minute": "0", "tokens_per_minute": "", "daily_budget": "3.00", "monthly_budget": ""})
    assert response.status_code == 200 and b"positive integer" in response.content
    row.refresh_from_db()
    assert row.requests_per_minute is None
    response = admin_client.post(f"/admin/routing/apikey/{row.pk}/change/", {
        "requests_per_minute": "120", "tokens_per_minute": "", "daily_budget": "3.00", "monthly_budget": ""})
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.requests_per_minute == 120 and row.daily_budget == Decimal("3.00") and row.tokens_per_minute is None


# ---- API ---------------------------------------------------------------------------------------

DIALECTS = {
    "native": ("/api/v1/complete", lambda text, **kw: {"message": text, **kw}),
    "openai": ("/v1/chat/completions",
               lambda text, **kw: {"model": "auto", "messages": [{"role": "user", "content": text}], **kw}),
    "anthropic": ("/v1/messages", lambda text, **kw: {"model": "auto", "max_tokens": kw.pop("max_tokens", 256),
                                                      "messages": [{"role": "user", "content": text}], **kw}),
}


@pytest.fixture
def make_key(catalog, runtime):
    """A new key with the given limits (its counters start empty: the prefix is new)."""

    def make(**limits) -> str:
        _, raw = api_key_create(name="limited", application=application_get_or_create(name="limits-app"), **limits)
        return raw

    return make


def post(client, url, body, raw_key, **headers):
    return client.post(url, data=json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {raw_key}", **headers)


async def drain(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


def usage(raw_key: str, task_id: str | None = None) -> dict:
    info = async_to_sync(get_runtime().authenticate)(raw_key)
    return async_to_sync(get_limiter().usage)(info, task_id=task_id)


def error_of(dialect: str, response) -> tuple[str, str]:
    """(error type or code, message) in the dialect's shape."""
    body = response.json()
    if dialect == "native":
        return body["error"]["code"], body["error"]["message"]
    if dialect == "openai":
        assert body["error"]["type"] == "rate_limit_error"
        return body["error"]["code"], body["error"]["message"]
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    return body["error"]["type"], body["error"]["message"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_dialect_answers_429_with_retry_after_when_the_request_rate_is_spent(client, make_key, dialect):
    raw = make_key(requests_per_minute=2)
    url, body = DIALECTS[dialect]
    for i in range(2):
        assert post(client, url, body(f"What is the capital of Peru? ({i})"), raw).status_code == 200
    response = post(client, url, body("What is the capital of Chile?"), raw)
    assert response.status_code == 429 and response["Content-Type"] == "application/json"
    assert 58 <= int(response["Retry-After"]) <= 60
    kind, message = error_of(dialect, response)
    assert kind in ("requests_per_minute_exceeded", "rate_limit_error")
    assert "2 requests per minute" in message


@pytest.mark.django_db(transaction=True)
def test_tokens_per_minute_reserve_the_worst_case_then_settle_to_the_executor_tokens(client, make_key):
    raw = make_key(tokens_per_minute=1300)
    url, body = DIALECTS["native"]
    ids = []
    for text in ("What is the capital of Peru?", "What is the capital of Chile?"):
        # ~1030 tokens reserved each time: the second fits only because the first gave back the rest.
        response = post(client, url, body(text, max_tokens=1000), raw)
        assert response.status_code == 200, response.content
        ids.append(response.json()["request_id"])
    flush_log()
    rows = Decision.objects.filter(request_id__in=ids)
    assert usage(raw)["tokens_per_minute"] == sum(r.executor_input_tokens + r.executor_output_tokens for r in rows)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_request_that_can_never_fit_the_token_rate_is_refused_after_routing_and_logged(client, make_key, emu,
                                                                                       dialect):
    raw = make_key(tokens_per_minute=100)
    url, body = DIALECTS[dialect]
    response = post(client, url, body("What is the capital of Peru?", max_tokens=1000), raw)
    assert response.status_code == 429 and response["x-should-retry"] == "false"
    assert "lower max_tokens" in error_of(dialect, response)[1]
    assert emu.stats()["by_kind"]["executor"] == 0
    flush_log()
    row = Decision.objects.get(request_id=response["x-request-id"])  # the sentinel was paid for: logged
    assert row.status == "error" and "tokens_per_minute" in row.error and row.cost == row.sentinel_cost
    assert row.executor_cost == 0 and row.baseline_cost == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("budget", ["daily_budget", "monthly_budget"])
def test_a_spent_budget_is_refused_before_the_sentinel_is_paid(client, make_key, emu, budget):
    raw = make_key(**{budget: "0.000001"})
    response = post(client, "/api/v1/complete", {"message": "What is the capital of Peru?"}, raw)
    assert response.status_code == 429 and response.json()["error"]["code"] == f"{budget}_exceeded"
    now = timezone.now()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1) if budget == "daily_budget" else (
        start.replace(day=1) + timedelta(days=32)).replace(day=1)
    assert abs(int(response["Retry-After"]) - (end - now).total_seconds()) <= 2
    assert emu.stats()["total"] == 0 and not Decision.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_spend_is_settled_to_the_decision_rows_cost_for_plain_decide_only_and_streamed_requests(client, make_key):
    raw = make_key(daily_budget="10", monthly_budget="50")
    ids = [post(client, "/api/v1/complete", {"message": "What is the capital of Peru?"}, raw)["x-request-id"],
           post(client, "/api/v1/route", {"message": "Prove that sqrt(2) is irrational."}, raw)["x-request-id"]]

    async def stream() -> str:
        # The async client, so that the stream is opened and read on one event loop (the sync client
        # opens it in one loop and reads it in another, which cuts the provider's stream short).
        streamed = await AsyncClient().post(
            "/v1/chat/completions", data=json.dumps({"model": "auto", "stream": True, "messages": [
                {"role": "user", "content": "Explain how a hash map works."}]}),
            content_type="application/json", headers={"authorization": f"Bearer {raw}"})
        await drain(streamed)
        return streamed["x-request-id"]

    ids.append(async_to_sync(stream)())
    # A stream's row is recorded and its reservation settled as its generator closes, which can come
    # just after the last chunk was read: wait (bounded) for both rather than race them.
    deadline = time.monotonic() + 10
    while True:
        flush_log()
        rows = Decision.objects.filter(request_id__in=ids)
        spent = sum(rows.values_list("cost", flat=True))
        now = usage(raw)
        if (rows.count() == len(ids) and now["daily_budget"] <= spent + Decimal("0.000000003")) or (
                time.monotonic() > deadline):
            break
        time.sleep(0.05)
    assert sorted(rows.values_list("status", flat=True)) == ["ok"] * 3
    assert spent > 0
    # Each request's cost is rounded up to the nanodollar in the counters, never down.
    assert spent <= now["daily_budget"] <= spent + Decimal("0.000000003")
    assert now["monthly_budget"] == now["daily_budget"]


@pytest.mark.django_db(transaction=True)
def test_decide_only_counts_the_request_and_its_sentinel_but_no_tokens(client, make_key):
    raw = make_key(tokens_per_minute=10, requests_per_minute=5)
    response = post(client, "/api/v1/route", {"message": "What is the capital of Peru?", "max_tokens": 5000}, raw)
    assert response.status_code == 200
    assert usage(raw)["tokens_per_minute"] == 0 and usage(raw)["requests_per_minute"] == 1


@pytest.mark.django_db(transaction=True)
def test_the_task_token_budget_is_per_task_id(client, make_key, settings):
    settings.GATEWAY_TASK_TOKEN_BUDGET = 1050
    raw = make_key()
    url, body = DIALECTS["openai"]
    first = post(client, url, body("What is the capital of Peru?", max_tokens=1000), raw, HTTP_X_TASK_ID="job-1")
    assert first.status_code == 200
    used = usage(raw, task_id="job-1")["task_token_budget"]
    assert used == first.json()["usage"]["total_tokens"] > 16
    again = post(client, url, body("What is the capital of Chile?", max_tokens=1000, metadata={"task_id": "job-1"}),
                 raw)
    assert again.status_code == 429 and again["x-should-retry"] == "false"
    assert again.json()["error"]["code"] == "task_token_budget_exceeded"
    other = post(client, url, body("What is the capital of Chile?", max_tokens=1000), raw, HTTP_X_TASK_ID="job-2")
    assert other.status_code == 200
    bad = post(client, url, body("Hi", metadata={"task_id": "b"}), raw, HTTP_X_TASK_ID="a")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-task-id"


def _openai_rounds(n: int) -> list[dict]:
    messages = [{"role": "user", "content": "Find the weather in Lima, then in Quito, and compare."}]
    for i in range(n):
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Lima"}'}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": f"{18 + i} C, cloudy"})
    return messages


def _anthropic_rounds(n: int) -> list[dict]:
    messages = [{"role": "user", "content": "Find the weather in Lima, then in Quito, and compare."}]
    for i in range(n):
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": f"toolu_{i}", "name": "weather", "input": {"city": "Lima"}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": [{"type": "text", "text": f"{18 + i} C"}]}]})
    return messages


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_tool_call_history_is_accepted_up_to_twelve_rounds(client, api_key, runtime, emu, dialect):
    url = DIALECTS[dialect][0]
    rounds = _openai_rounds if dialect == "openai" else _anthropic_rounds
    body = {"model": "auto", "max_tokens": 256}
    ok = post(client, url, {**body, "messages": rounds(12)}, api_key)
    assert ok.status_code == 200, ok.content
    flush_log()
    assert Decision.objects.get(request_id=ok["x-request-id"]).status == "ok"
    response = post(client, url, {**body, "messages": rounds(13)}, api_key)
    assert response.status_code == 429 and response["x-should-retry"] == "false"
    assert "13 tool-call rounds" in error_of(dialect, response)[1]
    assert int(response["Retry-After"]) >= 1


@pytest.mark.django_db(transaction=True)
def test_malformed_tool_calls_are_400_naming_the_field(client, api_key, runtime):
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {}}]}]
    response = post(client, "/v1/chat/completions", {"model": "auto", "messages": messages}, api_key)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[1].tool_calls[0].function.name"


@pytest.mark.django_db(transaction=True)
def test_the_limits_hold_with_the_redis_backend_too(client, make_key, settings, redis_url):
    settings.GATEWAY_LIMITS_REDIS_URL = redis_url
    raw = make_key(requests_per_minute=1, daily_budget="5")
    first = post(client, "/api/v1/complete", {"message": "What is the capital of Peru?"}, raw)
    assert first.status_code == 200
    response = post(client, "/v1/messages", DIALECTS["anthropic"][1]("Hi"), raw)
    assert response.status_code == 429 and response.json()["error"]["type"] == "rate_limit_error"
    assert isinstance(get_limiter().backend, RedisBackend)
    flush_log()
    cost = Decision.objects.get(request_id=first["x-request-id"]).cost
    assert cost <= usage(raw)["daily_budget"] <= cost + Decimal("0.000000002")


@pytest.mark.django_db(transaction=True)
def test_a_revoked_key_is_refused_within_half_a_second(client, api_key, runtime, settings):
    assert settings.GATEWAY_API_KEY_CACHE_S <= 0.5  # the default: "within one second" with room to spare
    body = {"message": "What is the capital of Peru?"}
    assert post(client, "/api/v1/route", body, api_key).status_code == 200
    api_key_revoke(key=ApiKey.objects.get())
    time.sleep(settings.GATEWAY_API_KEY_CACHE_S + 0.05)
    assert post(client, "/api/v1/route", body, api_key).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_limits_changed_in_the_service_apply_to_the_next_requests(client, api_key, runtime, settings):
    settings.GATEWAY_API_KEY_CACHE_S = 0
    row = ApiKey.objects.get()
    assert post(client, "/api/v1/route", {"message": "Hi there"}, api_key).status_code == 200
    api_key_set_limits(key=row, requests_per_minute=1)
    assert post(client, "/api/v1/route", {"message": "Hi there"}, api_key).status_code == 200
    assert post(client, "/api/v1/route", {"message": "Hi there"}, api_key).status_code == 429
