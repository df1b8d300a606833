"""Every metric formula against hand-computed cases."""

from decimal import Decimal

import pytest

from dashboard import metrics as m


def test_savings_and_savings_percent():
    assert m.savings(Decimal("8.00"), Decimal("3.00")) == Decimal("5.00")
    assert m.savings_percent(Decimal("8.00"), Decimal("3.00")) == Decimal("62.50")
    assert m.savings_percent(Decimal(3), Decimal(1)) == Decimal("66.67")  # 66.666… half up
    assert m.savings_percent(Decimal(0), Decimal(0)) is None


def test_routing_efficiency_is_routed_over_baseline():
    assert m.efficiency_ratio(Decimal("3.00"), Decimal("8.00")) == Decimal("0.375000")
    assert m.efficiency_ratio(Decimal(1), Decimal(3)) == Decimal("0.333333")
    assert m.efficiency_ratio(Decimal(1), Decimal(0)) is None


def test_cost_per_successful_interaction():
    assert m.cost_per_success(Decimal("10.00"), 4) == Decimal("2.500000")
    assert m.cost_per_success(Decimal(1), 3) == Decimal("0.333333")
    assert m.cost_per_success(Decimal(1), 0) is None


def test_positive_quality_signal_is_four_or_five():
    assert [m.is_positive(s) for s in (None, 1, 3, 4, 5)] == [False, False, False, True, True]


def test_cost_per_million_requests():
    assert m.cost_per_million_requests(Decimal("0.25"), 1000) == Decimal("250.00")
    assert m.cost_per_million_requests(Decimal(1), 3) == Decimal("333333.33")
    assert m.cost_per_million_requests(Decimal(1), 0) is None


def test_shares_in_percent_round_half_up():
    assert m.percent(1, 8) == Decimal("12.50")
    assert m.percent(1, 3) == Decimal("33.33")
    assert m.percent(2, 3) == Decimal("66.67")
    assert m.percent(1, 0) is None


def test_confidence_buckets_are_left_closed():
    cases = {None: -1, 0.0: 0, 0.4999: 0, 0.5: 1, 0.59: 1, 0.6: 2, 0.7: 3, 0.8: 4, 0.9: 5, 1.0: 5, 1.2: 5, -0.1: 0}
    assert {c: m.confidence_bucket(c) for c in cases} == cases


def test_latency_buckets_are_left_closed():
    assert m.latency_bucket(0) == 0
    assert m.latency_bucket(0.999) == 0
    assert m.latency_bucket(1) == 1
    assert m.latency_bucket(100) == 7  # [100, 200)
    assert m.latency_bucket(59_999) == 20
    assert m.latency_bucket(60_000) == 21 == m.LATENCY_BUCKETS - 1


def test_percentiles_interpolate_inside_the_bucket():
    counts = [0] * m.LATENCY_BUCKETS
    counts[7] = 3  # [100, 200)
    counts[9] = 1  # [300, 500)
    assert m.percentile_from_histogram(counts, 50) == pytest.approx(100 + 100 * 2 / 3)
    assert m.percentile_from_histogram(counts, 75) == pytest.approx(200)
    assert m.percentile_from_histogram(counts, 100) == pytest.approx(500)
    assert m.percentile_from_histogram([0] * m.LATENCY_BUCKETS, 50) is None


def test_percentiles_in_the_open_last_bucket_report_its_floor():
    counts = [0] * m.LATENCY_BUCKETS
    counts[-1] = 2
    assert m.percentile_from_histogram(counts, 99) == 60_000
    counts[0] = 2  # [0, 1): the first two of four
    assert m.percentile_from_histogram(counts, 25) == pytest.approx(0.5)


def test_expected_calibration_error():
    # 10 answers at mean confidence 0.95 with 8 acceptable; 30 at 0.55 with 21 acceptable
    buckets = [(10, 0.95, 0.8), (30, 0.55, 0.7)]
    assert m.calibration_error(buckets) == pytest.approx(10 / 40 * 0.15 + 30 / 40 * 0.15)
    assert m.calibration_error([(5, 0.7, 0.7)]) == 0
    assert m.calibration_error([]) is None


def test_largest_remainder_sums_exactly():
    shares = m.largest_remainder([1, 1, 1], Decimal(100))
    assert shares == [Decimal("33.34"), Decimal("33.33"), Decimal("33.33")]
    assert sum(m.largest_remainder([7, 13, 5, 0], Decimal(100))) == Decimal(100)
    assert m.largest_remainder([0, 0], Decimal(100)) == [0, 0]
