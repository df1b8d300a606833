"""A ledger check for fault tests: what the gateway recorded equals what the providers billed.

The emulator keeps `billed` stats per model id *as the SDK sent it* (a pinned version
such as `claude-haiku-4-5-20251001`), with the OpenAI token convention (`input_tokens`
is the whole prompt, cache reads and writes included). `emulator_billed_cost` prices
the difference between two stats snapshots with the catalog's prices in effect;
`assert_ledger` checks that every request id has exactly one Decision row and that the
rows' summed cost equals that bill, to the last decimal place.

Judge and shadow sampling call providers too (billed, but not on the request's row):
turn them off in these tests, or name their models in `exclude_models`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from routing.engine.catalog import Price
from routing.engine.pricing import MILLION, quantize

_TOKEN_KEYS = ("requests", "input_tokens", "uncached_input_tokens", "cache_read_tokens",
               "cache_write_tokens", "output_tokens")


def billed_delta(stats_before: Mapping[str, Any], stats_after: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per billed model id, what the emulator billed between the two snapshots (non-zero rows only)."""
    before = stats_before.get("billed", {})
    delta: dict[str, dict[str, int]] = {}
    for model, after in stats_after.get("billed", {}).items():
        prior = before.get(model, {})
        row = {key: int(after.get(key, 0)) - int(prior.get(key, 0)) for key in _TOKEN_KEYS}
        if any(row.values()):
            delta[model] = row
    return delta


def price_for(billed_model: str, prices: Mapping[str, Price]) -> Price:
    """The catalog price of a billed model id: exact name, else the longest catalog name it starts with.

    Pinned versions extend the catalog name (`claude-haiku-4-5-20251001`); the longest
    prefix keeps `gpt-5.1-codex` from being priced as `gpt-5.1`.
    """
    if billed_model in prices:
        return prices[billed_model]
    candidates = [name for name in prices if billed_model.startswith(name)]
    if not candidates:
        raise AssertionError(f"the emulator billed {billed_model!r}, which has no price in the catalog")
    return prices[max(candidates, key=len)]


def _cost(row: Mapping[str, int], price: Price) -> Decimal:
    return quantize(
        (
            Decimal(row["uncached_input_tokens"]) * price.input_per_mtok
            + Decimal(row["cache_read_tokens"]) * price.cached_input_per_mtok
            + Decimal(row["cache_write_tokens"]) * price.cache_write_per_mtok
            + Decimal(row["output_tokens"]) * price.output_per_mtok
        )
        / MILLION
    )


def emulator_billed_cost(
    stats_before: Mapping[str, Any],
    stats_after: Mapping[str, Any],
    *,
    exclude_models: Iterable[str] = (),
    prices: Mapping[str, Price] | None = None,
) -> Decimal:
    """What the emulator billed between two `stats()` snapshots, priced with the catalog (needs the db)."""
    if prices is None:
        from routing.selectors import prices_in_effect

        prices = prices_in_effect()
    excluded = set(exclude_models)
    total = Decimal(0)
    for model, row in billed_delta(stats_before, stats_after).items():
        if model in excluded or price_for(model, prices).model in excluded:
            continue
        total += _cost(row, price_for(model, prices))
    return quantize(total)


def assert_ledger(
    request_ids: Iterable[str],
    stats_before: Mapping[str, Any],
    stats_after: Mapping[str, Any],
    *,
    exclude_models: Iterable[str] = (),
) -> Decimal:
    """Every request id has exactly one Decision row, and their summed cost is what the emulator billed.

    Flush the decision log first (`tests.conftest.flush_log`). Returns the billed total.
    """
    from routing.models import Decision

    ids = [str(rid) for rid in request_ids]
    assert ids, "no request ids to check"
    assert len(set(ids)) == len(ids), "a request id was returned twice"
    rows = list(Decision.objects.filter(request_id__in=ids).values_list("request_id", "cost"))
    found = {str(rid) for rid, _ in rows}
    missing = sorted(set(ids) - found)
    assert not missing, f"{len(missing)} request(s) have no decision row: {missing[:5]}"
    assert len(rows) == len(ids), "a request id has more than one decision row"
    recorded = quantize(sum((cost for _, cost in rows), Decimal(0)))
    billed = emulator_billed_cost(stats_before, stats_after, exclude_models=exclude_models)
    assert recorded == billed, (
        f"decision rows cost {recorded} but the emulator billed {billed} "
        f"({billed_delta(stats_before, stats_after)})"
    )
    return billed
