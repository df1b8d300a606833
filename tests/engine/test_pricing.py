from decimal import Decimal
from types import SimpleNamespace

import pytest

from routing.engine.catalog import Price
from routing.engine.pricing import Usage, cost_of
from routing.providers.anthropic import usage_from_anthropic
from routing.providers.gemini import usage_from_gemini
from routing.providers.openai import usage_from_openai

HAIKU = Price("claude-haiku-4-5", Decimal("1"), Decimal("5"), Decimal("0.10"), Decimal("1.25"))


def test_cost_is_exact_decimal_per_million_tokens():
    # 1,000 uncached in at $1/M + 500 out at $5/M = 0.001 + 0.0025
    assert cost_of(Usage(input_tokens=1000, output_tokens=500), HAIKU) == Decimal("0.0035000000")


def test_cached_reads_and_cache_writes_are_priced_separately():
    usage = Usage(input_tokens=10_000, output_tokens=0, cached_tokens=6_000, cache_write_tokens=2_000)
    # 2,000 uncached × 1 + 6,000 × 0.10 + 2,000 × 1.25 = 2000 + 600 + 2500 = 5,100 micro-dollars
    assert cost_of(usage, HAIKU) == Decimal("0.0051000000")


def test_a_free_step_costs_zero():
    assert cost_of(Usage(input_tokens=100, output_tokens=100), None) == Decimal("0")


def test_usage_rejects_impossible_counts():
    with pytest.raises(ValueError):
        Usage(input_tokens=10, cached_tokens=11)
    with pytest.raises(ValueError):
        Usage(input_tokens=-1)
    with pytest.raises(ValueError):
        Usage(input_tokens=1.5)  # type: ignore[arg-type]


def test_anthropic_input_tokens_exclude_cache_reads_and_writes():
    raw = SimpleNamespace(input_tokens=100, output_tokens=20, cache_read_input_tokens=900,
                          cache_creation_input_tokens=50)
    usage = usage_from_anthropic(raw)
    assert usage == Usage(input_tokens=1050, output_tokens=20, cached_tokens=900, cache_write_tokens=50)
    assert usage.uncached_input_tokens == 100


def test_openai_prompt_tokens_include_cached_tokens():
    raw = SimpleNamespace(prompt_tokens=1000, completion_tokens=10,
                          prompt_tokens_details=SimpleNamespace(cached_tokens=800))
    assert usage_from_openai(raw) == Usage(input_tokens=1000, output_tokens=10, cached_tokens=800)


def test_gemini_prompt_count_includes_cached_tokens():
    raw = SimpleNamespace(prompt_token_count=1000, candidates_token_count=30, cached_content_token_count=400,
                          thoughts_token_count=5)
    assert usage_from_gemini(raw) == Usage(input_tokens=1000, output_tokens=35, cached_tokens=400)
