"""Each provider's structured-output sentinel path and executor, through the official SDKs
pointed at the loopback emulator."""

from __future__ import annotations

import pytest

from routing.engine.catalog import Catalog, PolicySettings, RouteSpec
from routing.engine.sentinel import LLMSentinel, build_system_prompt
from routing.providers.base import Message, ProviderConfig, ProviderError
from routing.providers.registry import build_provider

ROUTES = {
    "simple_qa": "Short factual questions with a single clear answer.",
    "complex_reasoning": "Multi-step reasoning, math, proofs and analysis.",
    "code_generation": "Writing or fixing source code.",
    "long_context_research": "Work over long documents.",
    "agentic_task": "Tasks that need tools or several actions.",
    "refusal_required": "Requests for clearly harmful help.",
    "fallback": "Anything else.",
}
CATALOG = Catalog(
    routes={n: RouteSpec(n, d, "anthropic", "m", "m", 100) for n, d in ROUTES.items()},
    prices={}, baseline_model="m", tools=("web_search",),
)
SENTINEL_MODELS = {"anthropic": "claude-haiku-4-5-20251001", "openai": "gpt-5.4-nano",
                   "gemini": "gemini-3.1-flash-lite-preview"}
PROVIDERS = list(SENTINEL_MODELS)


def provider(name: str, emu, timeout: float = 30.0):
    base = emu.url + ("/v1" if name == "openai" else "")
    return build_provider(name, ProviderConfig(api_key="test", base_url=base, simulated=True, timeout_s=timeout))


def policy(name: str, timeout_s: float = 5.0) -> PolicySettings:
    return PolicySettings(version_id=None, number=1, sentinel_provider=name, sentinel_model="m",
                          sentinel_model_version=SENTINEL_MODELS[name], sentinel_timeout_s=timeout_s)


def user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


@pytest.mark.parametrize("name", PROVIDERS)
async def test_the_sentinel_gets_a_valid_decision_through_native_structured_output(name, emu):
    sentinel = LLMSentinel(provider(name, emu))
    code = await sentinel.decide(user("Write a Python function that merges two sorted lists."),
                                 catalog=CATALOG, policy=policy(name))
    fact = await sentinel.decide(user("What is the capital of Japan?"), catalog=CATALOG, policy=policy(name))
    assert code.failure is None and fact.failure is None
    assert code.decision.route == "code_generation"
    assert fact.decision.route == "simple_qa"
    assert code.usage.input_tokens > 0 and code.usage.output_tokens > 0
    assert code.model_version == SENTINEL_MODELS[name]
    kinds = emu.stats()["by_kind"]
    assert kinds["sentinel"] == 2, "the emulator saw a structured-output (sentinel) request, not a chat one"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_malformed_sentinel_output_is_an_invalid_decision_with_the_reason(name, emu):
    emu.set_faults({"fault": "malformed", "provider": name, "times": -1})
    result = await LLMSentinel(provider(name, emu)).decide(user("What is 2+2?"), catalog=CATALOG,
                                                           policy=policy(name))
    assert result.decision is None
    assert result.failure.startswith("invalid sentinel output")


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_provider_error_is_recorded_as_the_failure(name, emu):
    emu.set_faults({"fault": "500", "provider": name, "times": -1})
    result = await LLMSentinel(provider(name, emu)).decide(user("hi"), catalog=CATALOG, policy=policy(name))
    assert result.decision is None and "HTTP 500" in result.failure
    assert emu.stats()["by_kind"]["sentinel"] == 3, "the default retry policy makes three attempts"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_single_server_error_is_retried_and_the_sentinel_decides(name, emu):
    emu.set_faults({"fault": "503", "provider": name})
    result = await LLMSentinel(provider(name, emu)).decide(user("What is the capital of Japan?"),
                                                           catalog=CATALOG, policy=policy(name))
    assert result.failure is None and result.decision.route == "simple_qa"
    assert emu.stats()["by_kind"]["sentinel"] == 2


async def test_a_hanging_sentinel_times_out_within_the_policy_limit(emu):
    emu.set_faults({"fault": "hang", "provider": "anthropic"})
    result = await LLMSentinel(provider("anthropic", emu)).decide(
        user("hi"), catalog=CATALOG, policy=policy("anthropic", timeout_s=0.5))
    assert result.decision is None
    assert "timeout" in result.failure
    assert result.latency_ms < 3000


def test_the_system_prompt_is_a_classifier_prompt_of_200_to_400_tokens():
    from routing.engine.catalog import Catalog as C
    from routing.catalog_io import DEFAULT_CATALOG
    import yaml

    doc = yaml.safe_load(DEFAULT_CATALOG.read_text())
    catalog = C(routes={r["name"]: RouteSpec(r["name"], r["description"], r["provider"], r["model"],
                                             r["model_version"], 1) for r in doc["routes"]},
                prices={}, baseline_model="m", tools=tuple(t["name"] for t in doc["tools"]))
    prompt = build_system_prompt(catalog, "v1")
    from routing.engine.tokens import estimate_tokens

    # About four characters a token for English prose in the providers' tokenizers.
    assert 200 <= estimate_tokens(prompt) <= 400, estimate_tokens(prompt)
    assert "do NOT answer" in prompt
    for name in ROUTES:
        assert name in prompt


@pytest.mark.parametrize("name", PROVIDERS)
async def test_the_executor_answers_plain_and_streamed_with_usage_and_version(name, emu):
    p = provider(name, emu)
    model = {"anthropic": "claude-opus-4-7", "openai": "gpt-5.1", "gemini": "gemini-3.1-pro-preview"}[name]
    plain = await p.complete(model=model, system="Be brief.", messages=user("Explain TCP slow start."),
                             max_tokens=200, timeout=10)
    assert plain.text and plain.usage.output_tokens > 0 and plain.model_version == model
    pieces, final = [], None
    async for delta in p.stream(model=model, system="Be brief.", messages=user("Explain TCP slow start."),
                                max_tokens=200, timeout=10):
        if delta.final is not None:
            final = delta.final
        else:
            pieces.append(delta.text)
    assert "".join(pieces) == plain.text
    assert final is not None and final.usage.output_tokens == plain.usage.output_tokens


async def test_anthropic_prompt_caching_reports_a_write_then_a_read(emu):
    p = provider("anthropic", emu)
    system = "You are a support assistant for ACME. " * 200
    first = await p.complete(model="claude-haiku-4-5", system=system, messages=user("hello"), max_tokens=50,
                             timeout=10)
    second = await p.complete(model="claude-haiku-4-5", system=system, messages=user("hello again"),
                              max_tokens=50, timeout=10)
    assert first.usage.cache_write_tokens > 0 and first.usage.cached_tokens == 0
    assert second.usage.cached_tokens > 0 and second.usage.cache_write_tokens == 0
    assert second.usage.input_tokens >= second.usage.cached_tokens


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_429_is_a_retryable_provider_error_with_retry_after(name, emu):
    emu.set_faults({"fault": "429", "provider": name, "retry_after": 7})
    with pytest.raises(ProviderError) as caught:
        await provider(name, emu).complete(model="m", system=None, messages=user("hi"), max_tokens=10, timeout=5)
    assert caught.value.status == 429 and caught.value.retryable
    if name != "gemini":
        assert caught.value.retry_after == 7


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_stream_cut_midway_raises_a_provider_error(name, emu):
    emu.set_faults({"fault": "cut", "provider": name})
    got = []
    with pytest.raises(ProviderError):
        async for delta in provider(name, emu).stream(model="m", system=None, messages=user("Explain DNS."),
                                                      max_tokens=300, timeout=5):
            got.append(delta)


async def test_an_openai_compatible_server_is_reached_by_base_url(emu):
    p = build_provider("openai_compatible", ProviderConfig(api_key="none", base_url=emu.url + "/v1"))
    completion = await p.complete(model="llama-3.3-70b-instruct", system=None, messages=user("Say hello."),
                                  max_tokens=50, timeout=10)
    assert completion.text and completion.model_version == "llama-3.3-70b-instruct"
    assert emu.stats()["by_provider"]["openai"] == 1


async def test_the_guardrail_answers_without_any_network_call(emu):
    p = build_provider("guardrail", ProviderConfig(api_key=""))
    completion = await p.complete(model="guardrail", system=None, messages=user("bad"), max_tokens=10, timeout=1)
    assert "can't help" in completion.text and completion.usage.output_tokens == 0
    assert emu.stats()["total"] == 0
