"""Provider faults end to end: the live gateway, official SDKs (or raw HTTP), the emulator injecting
faults, and a ledger check that the decision rows cost exactly what the emulator billed.

Judge sampling is off in these tests (its judge calls are billed but belong to no request row).
Backoff is shortened through settings so that retries do not slow the suite; the breaker's
thresholds are set per test the same way (`runtime.invalidate()` applies them).
"""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal

import anthropic
import httpx2
import openai
import pytest

from routing.metrics import REGISTRY
from routing.models import Decision, PolicyVersion
from tests.conftest import flush_log
from tests.faults.faultproxy import FaultProxy
from tests.faults.ledger import assert_ledger

pytestmark = pytest.mark.django_db(transaction=True)

HAIKU = "claude-haiku-4-5-20251001"  # simple_qa's executor, and the sentinel
FALLBACK = "gpt-5.1"  # the fallback route's executor
CAPITALS = ["Peru", "Chile", "Kenya", "Norway", "Japan", "Canada", "Egypt", "Ghana", "Nepal", "Chad"]


@pytest.fixture
def gw(live_gateway, runtime, settings):
    """The live gateway with judge sampling off and millisecond backoff."""
    from audits.sampling import get_sampler

    PolicyVersion.objects.update(judge_sample_rate=0)
    get_sampler().invalidate()
    settings.GATEWAY_RETRY_BASE_MS = 5
    settings.GATEWAY_RETRY_MAX_BACKOFF_MS = 20
    runtime.invalidate()
    return live_gateway


def deadline_ms(runtime, ms: int) -> None:
    PolicyVersion.objects.update(request_deadline_ms=ms)
    runtime.invalidate()


def sdk(gw, api_key: str) -> openai.OpenAI:
    # The SDK's own retries are off: what is measured is the gateway's behaviour.
    return openai.OpenAI(api_key=api_key, base_url=gw.url + "/v1", max_retries=0, timeout=60)


def ask(client: openai.OpenAI, text: str, model: str = "auto"):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}])
    return raw.headers, raw.parse()


def row(request_id: str) -> Decision:
    flush_log()
    return Decision.objects.get(request_id=request_id)


def circuit(provider: str, model: str) -> float | None:
    return REGISTRY.get_sample_value("gateway_circuit_state", {"provider": provider, "model": model})


def test_a_provider_failing_with_503_for_a_while_is_served_by_the_fallback(gw, api_key, emu, runtime):
    # Anthropic answers 503 to everything: the sentinel (haiku) and the executors (haiku, opus).
    emu.set_faults({"fault": "503", "provider": "anthropic", "times": -1})
    client = sdk(gw, api_key)
    stats_before = emu.stats()
    ids, answered_by = [], []
    for i in range(40):
        headers, completion = ask(client, f"What is the capital of {CAPITALS[i % 10]}? (question {i})")
        ids.append(headers["x-request-id"])
        answered_by.append(completion.model)
    assert answered_by.count(FALLBACK) / len(answered_by) >= 0.99
    # Each model's circuit opened after GATEWAY_BREAKER_FAILURES (5) consecutive failed calls; without
    # the breakers, 40 requests x (3 sentinel + 3 executor attempts) would have hit Anthropic 240 times.
    assert emu.stats()["faults_fired"]["503"] == 2 * 5
    assert circuit("anthropic", HAIKU) == 2 and circuit("anthropic", "claude-opus-4-7") == 2
    last = row(ids[-1])
    assert [(a["role"], a["outcome"]) for a in last.attempt_log] == [
        ("sentinel", "circuit_open"), ("executor", "circuit_open"), ("executor", "ok")]
    assert last.attempts == 1 and last.executor_model == FALLBACK and last.escalated
    assert_ledger(ids, stats_before, emu.stats())


def test_retries_of_a_flaky_provider_are_counted_and_costed_on_the_row(gw, api_key, emu):
    emu.set_faults({"fault": "503", "kind": "executor", "model": HAIKU, "times": 2})
    stats_before = emu.stats()
    retries = {"role": "executor", "provider": "anthropic"}
    retries_before = REGISTRY.get_sample_value("gateway_retries_total", retries) or 0
    headers, completion = ask(sdk(gw, api_key), "What is the capital of Peru?")
    assert completion.model == HAIKU, "the third attempt on the same model answered"
    r = row(headers["x-request-id"])
    executor_calls = [a for a in r.attempt_log if a["role"] == "executor"]
    assert [(a["outcome"], a["status"]) for a in executor_calls] == [("error", 503), ("error", 503), ("ok", None)]
    assert r.attempts == 3 and r.retries == 2
    assert [Decimal(a["cost"]) for a in executor_calls[:2]] == [0, 0], "failed calls bill nothing"
    assert r.executor_cost == Decimal(executor_calls[2]["cost"]) > 0
    assert r.cost == sum(Decimal(a["cost"]) for a in r.attempt_log) == r.sentinel_cost + r.executor_cost
    assert executor_calls[2]["input_tokens"] == r.executor_input_tokens
    assert REGISTRY.get_sample_value("gateway_retries_total", retries) - retries_before == 2
    assert_ledger([headers["x-request-id"]], stats_before, emu.stats())


def test_a_stream_whose_executors_all_fail_before_any_text_gets_an_http_error_not_a_200(gw, api_key, emu):
    emu.set_faults({"fault": "500", "kind": "executor", "times": -1})
    client = sdk(gw, api_key)
    with pytest.raises(openai.InternalServerError) as caught:
        for _ in client.chat.completions.create(
                model="auto", stream=True, messages=[{"role": "user", "content": "What is the capital of Peru?"}]):
            pass
    assert caught.value.status_code == 502 and caught.value.code == "upstream_error"
    r = row(caught.value.response.headers["x-request-id"])
    assert r.status == "error" and r.stream and "HTTP 500" in r.error
    assert [a["outcome"] for a in r.attempt_log if a["role"] == "executor"] == ["error"] * 6  # 3 + 3 (fallback)


def test_a_429_whose_retry_after_outlasts_the_deadline_fails_within_the_deadline(gw, api_key, emu, runtime):
    deadline_ms(runtime, 2000)
    emu.set_faults({"fault": "429", "kind": "executor", "retry_after": 30, "times": -1})
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        ask(sdk(gw, api_key), "What is the capital of Chile?")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, "the retry-after was not waited for"
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "30"
    assert caught.value.code == "upstream_rate_limited"
    r = row(caught.value.response.headers["x-request-id"])
    assert r.status == "error" and r.cost == r.sentinel_cost
    assert [(a["model"], a["status"]) for a in r.attempt_log if a["role"] == "executor"] == [
        (HAIKU, 429), (FALLBACK, 429)]


def test_a_hanging_provider_is_cut_at_the_deadline_and_does_not_slow_other_providers(gw, api_key, emu, runtime):
    deadline_ms(runtime, 1500)
    emu.set_faults({"fault": "hang", "kind": "executor", "provider": "anthropic", "times": -1})
    client = sdk(gw, api_key)
    outcome: dict[str, object] = {}

    def hanging() -> None:
        started = time.monotonic()
        try:
            ask(client, "What is the capital of Kenya?")
        except openai.APIStatusError as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=hanging)
    thread.start()
    while emu.stats()["in_flight"] == 0 and thread.is_alive():  # the hanging call has reached the provider
        time.sleep(0.01)
    # Meanwhile another provider answers at once (an explicit model: openai, no sentinel).
    headers, completion = ask(client, "What is the capital of Norway?", model="gpt-5.4-nano")
    assert completion.choices[0].message.content
    assert thread.is_alive(), "the other provider answered while the hanging request was still waiting"
    thread.join(30)
    assert outcome["elapsed"] < 1.5 + 1.0, "bounded by the 1.5 s deadline (plus generous slack)"
    error = outcome["error"]
    assert error.status_code == 504 and error.code == "deadline_exceeded"
    r = row(error.response.headers["x-request-id"])
    assert r.status == "error" and r.total_ms < 2500
    assert [a["outcome"] for a in r.attempt_log if a["role"] == "executor"] == ["timeout"]


def test_malformed_sentinel_output_never_takes_the_cheap_route(gw, api_key, emu):
    emu.set_faults({"fault": "malformed", "kind": "sentinel", "times": -1})
    client = sdk(gw, api_key)
    stats_before = emu.stats()
    ids, cheap = [], 0
    for i in range(20):
        headers, _ = ask(client, f"What is the capital of {CAPITALS[i % 10]}? ({i})")
        ids.append(headers["x-request-id"])
        cheap += headers["x-route"] == "simple_qa"
    assert cheap == 0
    flush_log()
    assert set(Decision.objects.filter(request_id__in=ids).values_list("route", flat=True)) == {"complex_reasoning"}
    # The malformed answers were billed, and so are the rows.
    assert_ledger(ids, stats_before, emu.stats())


def test_a_stream_cut_midway_ends_with_an_error_event_and_a_partial_row_that_matches_the_bill(gw, api_key, emu):
    emu.set_faults({"fault": "cut", "kind": "executor", "model": HAIKU})
    client = sdk(gw, api_key)
    stats_before = emu.stats()
    got = ""
    raw = client.chat.completions.with_raw_response.create(
        model="auto", stream=True, messages=[{"role": "user", "content": "What is the capital of Ghana?"}])
    with pytest.raises(openai.APIError, match="upstream provider failed"):
        for chunk in raw.parse():
            got += "".join(c.delta.content or "" for c in chunk.choices)
    assert got, "text reached the client before the cut"
    r = row(raw.headers["x-request-id"])
    assert r.status == "partial" and r.executor_model == "claude-haiku-4-5"
    assert r.executor_output_tokens == (len(got) + 3) // 4 and r.executor_input_tokens > 0
    assert [a["outcome"] for a in r.attempt_log if a["role"] == "executor"] == ["partial"]
    assert_ledger([raw.headers["x-request-id"]], stats_before, emu.stats())


def test_a_client_that_disconnects_mid_stream_still_gets_its_row_with_the_tokens_consumed(gw, api_key, emu):
    emu.configure(stream_chunk_delay_ms=100)

    async def read_two_chunks_and_leave() -> str:
        async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as http:
            body = {"model": "gpt-5.1", "stream": True,
                    "messages": [{"role": "user", "content": "Explain the CAP theorem in detail with examples."}]}
            async with http.stream("POST", "/v1/chat/completions", json=body,
                                   headers={"Authorization": f"Bearer {api_key}"}) as response:
                seen = 0
                async for _ in response.aiter_lines():
                    seen += 1
                    if seen >= 6:
                        return response.headers["x-request-id"]
        raise AssertionError("the stream ended early")

    request_id = asyncio.run(read_two_chunks_and_leave())
    deadline = time.monotonic() + 15
    while not Decision.objects.filter(request_id=request_id).exists():
        assert time.monotonic() < deadline, "no row for the disconnected request"
        flush_log()
        time.sleep(0.05)
    r = Decision.objects.get(request_id=request_id)
    assert r.status == "partial" and r.error == "client disconnected"
    assert r.executor_output_tokens > 0 and r.executor_input_tokens > 0 and r.cost > 0
    assert [a["outcome"] for a in r.attempt_log] == ["cancelled"]


def give_up_after(gw, api_key, message: str, seconds: float) -> None:
    """One /api/v1/complete request whose client stops waiting after `seconds`."""
    with pytest.raises(httpx2.TimeoutException):
        httpx2.post(f"{gw.url}/api/v1/complete", json={"message": message},
                    headers={"Authorization": f"Bearer {api_key}"}, timeout=seconds)


def abandoned_row(before: set) -> Decision:
    deadline = time.monotonic() + 15
    while not Decision.objects.filter(endpoint="complete").exclude(request_id__in=before).exists():
        assert time.monotonic() < deadline, "no row for the abandoned request"
        flush_log()
        time.sleep(0.05)
    return Decision.objects.filter(endpoint="complete").exclude(request_id__in=before).get()


def warm_up(gw, api_key) -> set:
    """One request first, so that the runtime's first build is not inside the client's 0.5 s."""
    warm = httpx2.post(f"{gw.url}/api/v1/complete", json={"message": "What is the capital of Peru?"},
                       headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    assert warm.status_code == 200, warm.text
    return {warm.headers["x-request-id"]}


def test_a_client_that_gives_up_before_the_answer_still_gets_its_row(gw, api_key, emu):
    before = warm_up(gw, api_key)
    emu.configure(model_latency_ms={"claude-opus-4-7": 2000})
    give_up_after(gw, api_key, "Prove that sqrt(2) is irrational.", 0.5)
    r = abandoned_row(before)
    assert r.status == "error" and r.error == "client disconnected", (r.status, r.error, r.policy_reason)
    assert r.executor_input_tokens > 0, "the prompt sent counts as consumed"
    assert r.attempt_log[-1]["outcome"] == "cancelled" and r.attempt_log[-1]["role"] == "executor"


def test_a_client_that_gives_up_while_the_sentinel_decides_gets_an_error_row(gw, api_key, emu):
    before = warm_up(gw, api_key)
    emu.configure(model_latency_ms={HAIKU: 2000})  # the sentinel asks for the dated version
    # A prompt no other test sends: a decision cached from an earlier request would skip the sentinel.
    give_up_after(gw, api_key, "Prove that there are infinitely many primes of the form 4k+3.", 0.5)
    r = abandoned_row(before)
    assert r.status == "error" and r.error == "client disconnected", (r.status, r.error, r.policy_reason)
    assert r.policy_reason == "client disconnected while routing" and r.executor_model == ""
    assert r.executor_cost == 0 and r.attempts == 0
    assert [(a["role"], a["outcome"]) for a in r.attempt_log] == [("sentinel", "cancelled")]


def test_the_circuit_opens_then_lets_one_probe_through_after_the_cool_down(gw, api_key, emu, runtime, settings):
    settings.GATEWAY_BREAKER_FAILURES = 2
    settings.GATEWAY_BREAKER_COOLDOWN_MS = 800
    runtime.invalidate()
    emu.set_faults({"fault": "503", "kind": "executor", "model": HAIKU, "times": -1})
    client = sdk(gw, api_key)

    first, completion = ask(client, "What is the capital of Nepal?")
    assert completion.model == FALLBACK and circuit("anthropic", HAIKU) == 2
    assert [a["outcome"] for a in row(first["x-request-id"]).attempt_log if a["role"] == "executor"] == [
        "error", "error", "ok"]
    second, completion = ask(client, "What is the capital of Nepal?")  # the same decision (cached)
    assert completion.model == FALLBACK
    assert [a["outcome"] for a in row(second["x-request-id"]).attempt_log if a["role"] == "executor"] == [
        "circuit_open", "ok"]
    assert emu.stats()["faults_fired"]["503"] == 2, "the open circuit kept haiku out of the second request"

    emu.set_faults()  # the provider recovers
    time.sleep(0.9)  # past the cool-down
    third, completion = ask(client, "What is the capital of Nepal?")
    assert completion.model == HAIKU, "the half-open probe went to haiku and succeeded"
    assert circuit("anthropic", HAIKU) == 0
    assert REGISTRY.get_sample_value("gateway_circuit_transitions_total",
                                     {"provider": "anthropic", "model": HAIKU, "state": "half_open"}) >= 1


def test_the_anthropic_dialect_gets_the_same_statuses_as_its_own_error_type(gw, api_key, emu, runtime):
    deadline_ms(runtime, 1000)
    emu.set_faults({"fault": "hang", "kind": "executor", "times": -1})
    client = anthropic.Anthropic(api_key=api_key, base_url=gw.url, max_retries=0, timeout=30)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="auto", max_tokens=256,
                               messages=[{"role": "user", "content": "What is the capital of Peru?"}])
    assert caught.value.status_code == 504
    assert caught.value.body["error"]["type"] == "api_error"
    assert "deadline" in caught.value.body["error"]["message"]


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_requests_on_keep_alive_connections_the_provider_closed_are_retried_at_once_and_leave_the_circuit_closed(
        gw, api_key, emu, runtime, settings, backend):
    """A burst of requests meets pooled connections the provider closed as the requests came (the
    keep-alive race): each is retried on a fresh connection, none opens the circuit or falls back."""
    n = 8
    settings.GATEWAY_BREAKER_FAILURES = 3  # fewer than the burst: counted as failures, they would open it
    settings.PROVIDER_HTTP_BACKEND = backend
    with FaultProxy("127.0.0.1", int(emu.url.rsplit(":", 1)[1])) as proxy:
        settings.EMULATOR_URL = f"http://{proxy.address}"  # the gateway's providers are built on first use
        runtime.invalidate()
        client = openai.AsyncOpenAI(api_key=api_key, base_url=gw.url + "/v1", max_retries=0, timeout=60)

        async def burst(tag: str) -> list[tuple[str, str]]:
            async def one(i: int) -> tuple[str, str]:
                raw = await client.chat.completions.with_raw_response.create(
                    model=HAIKU, messages=[{"role": "user", "content": f"Capital of {CAPITALS[i]}? ({tag})"}])
                return raw.headers["x-request-id"], raw.parse().model
            return list(await asyncio.gather(*(one(i) for i in range(n))))

        async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
            warm = await burst("warm-up")  # n pooled connections to the provider, kept alive
            proxy.close_on_request(n)
            return warm, await burst("after the close")

        stats_before = emu.stats()
        warm, served = asyncio.run(scenario())
        assert proxy.closed_on_request == n and proxy.accepted >= n

    assert [model for _, model in warm + served] == [HAIKU] * (2 * n), "no fallback, no error"
    assert circuit("anthropic", HAIKU) == 0
    rows = [row(request_id) for request_id, _ in served]
    dropped = [a for r in rows for a in r.attempt_log if a["error"] == "disconnected"]
    assert len(dropped) == n and all(Decimal(a["cost"]) == 0 for a in dropped)
    assert [(r.status, r.attempt_log[-1]["model"], r.attempt_log[-1]["outcome"]) for r in rows] == [
        ("ok", HAIKU, "ok")] * n
    assert sum(r.retries for r in rows) == n
    assert_ledger([request_id for request_id, _ in warm + served], stats_before, emu.stats())
