"""Sampling: the observed rate matches the inclusion probability, weights are 1/p, strata oversample."""

from __future__ import annotations

import uuid

import pytest

from audits.sampling import (
    confidence_bucket,
    hash_unit,
    inclusion_probability,
    is_sampled,
    stratum,
)


def test_low_confidence_is_oversampled_three_times_and_capped_at_one():
    assert inclusion_probability(0.015, 0.9) == pytest.approx(0.015)
    assert inclusion_probability(0.015, 0.6) == pytest.approx(0.045)
    assert inclusion_probability(0.015, None) == pytest.approx(0.045)
    assert inclusion_probability(0.5, 0.1) == 1.0
    assert inclusion_probability(1, 0.99) == 1.0


def test_buckets_follow_the_documented_edges():
    assert [confidence_bucket(c) for c in (0.0, 0.49, 0.5, 0.75, 0.9, 1.0, None)] == [
        "0.0-0.5", "0.0-0.5", "0.5-0.6", "0.7-0.8", "0.9-1.0", "0.9-1.0", "none"]
    assert stratum("simple_qa", 0.95) == "simple_qa|0.9-1.0"


def test_the_decision_is_deterministic_per_request_id():
    rid = uuid.uuid4()
    assert hash_unit(rid) == hash_unit(str(rid))
    assert 0 <= hash_unit(rid) < 1


def test_20k_simulated_decisions_are_sampled_at_their_stratum_rates_and_weights_are_1_over_p():
    """20,000 decisions, half confident: observed rates within 4 standard errors of p, and the
    weighted count of sampled decisions estimates the population size per stratum."""
    import random

    rng = random.Random(5)
    rate = 0.05
    strata: dict[str, dict[str, float]] = {}
    for _ in range(20_000):
        confidence = rng.choice([0.95, 0.85, 0.6, 0.4])
        route = rng.choice(["simple_qa", "code_generation"])
        p = inclusion_probability(rate, confidence)
        s = strata.setdefault(stratum(route, confidence), {"n": 0, "hits": 0, "weighted": 0.0, "p": p})
        s["n"] += 1
        if is_sampled(uuid.UUID(int=rng.getrandbits(128)), p):
            s["hits"] += 1
            s["weighted"] += 1 / p
    assert len(strata) == 8
    for name, s in strata.items():
        p = s["p"]
        expected_p = 0.15 if name.split("|")[1] in ("0.6-0.7", "0.0-0.5") else 0.05
        assert p == pytest.approx(expected_p)
        se = (p * (1 - p) / s["n"]) ** 0.5
        assert abs(s["hits"] / s["n"] - p) < 4 * se, name
        # Horvitz-Thompson: Σ 1/p over the sample estimates the stratum's size
        assert s["weighted"] == pytest.approx(s["n"], rel=0.25), name
