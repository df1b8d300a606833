"""Catalog as code: export → load round-trips; a bad document changes nothing; history is kept."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from routing.models import CatalogChange, CatalogSettings, ModelPrice, Route
from routing.selectors import catalog_snapshot, prices_in_effect

pytestmark = pytest.mark.django_db


def test_the_default_catalog_has_the_documented_prices_and_routes(catalog):
    prices = prices_in_effect()
    assert prices["claude-haiku-4-5"].input_per_mtok == Decimal("1")
    assert prices["claude-opus-4-7"].output_per_mtok == Decimal("25")
    assert prices["gpt-5.4-nano"].input_per_mtok == Decimal("0.2")
    assert prices["claude-haiku-4-5"].cached_input_per_mtok == Decimal("0.1")  # 10% of input
    assert prices["claude-opus-4-7"].cache_write_per_mtok == Decimal("6.25")  # 125% of input
    snapshot = catalog_snapshot()
    assert snapshot.baseline_model == "claude-opus-4-7"
    assert snapshot.routes["simple_qa"].model_version == "claude-haiku-4-5-20251001"
    assert snapshot.routes["code_generation"].model == "gpt-5.1-codex"
    assert snapshot.routes["long_context_research"].provider == "gemini"
    assert snapshot.routes["agentic_task"].tools_enabled
    assert snapshot.routes["refusal_required"].provider == "guardrail"
    assert snapshot.routes["simple_qa"].fallback == "fallback"


def test_export_then_load_is_a_round_trip(catalog, tmp_path):
    path = tmp_path / "catalog.yaml"
    call_command("export_catalog", "--output", str(path))
    before = CatalogChange.objects.count()
    call_command("load_catalog", str(path))
    assert CatalogChange.objects.count() == before, "loading the same catalog changes nothing"


def test_loading_an_edited_catalog_applies_it_and_keeps_history(catalog, tmp_path):
    doc = yaml.safe_load(open(_export(tmp_path)))
    doc["baseline_model"] = "claude-sonnet-4-6"
    doc["prices"].append({"model": "claude-haiku-4-5", "provider": "anthropic", "input": "0.80", "output": "4.00",
                          "cached_input": "0.08", "cache_write": "1.00", "effective_from": "2026-06-01"})
    doc["routes"][0]["max_output_tokens"] = 512
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(doc))
    call_command("load_catalog", str(path), "--actor", "alice")
    assert CatalogSettings.objects.get().baseline_model == "claude-sonnet-4-6"
    assert Route.objects.get(name="simple_qa").max_output_tokens == 512
    assert prices_in_effect()["claude-haiku-4-5"].input_per_mtok == Decimal("0.8")
    assert ModelPrice.objects.filter(model="claude-haiku-4-5").count() == 2, "old price kept, effective-dated"
    change = CatalogChange.objects.get(entity="route", entity_key="simple_qa", action="update")
    assert change.actor == "alice" and change.old_value["max_output_tokens"] == 1024
    assert change.new_value["max_output_tokens"] == 512


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["routes"][0].update(model="no-such-model"), "has no price"),
        (lambda d: d["routes"][0].update(fallback="nowhere"), "is not a route"),
        (lambda d: d["prices"][0].update(input=1.5), "quoted strings"),
        (lambda d: d["prices"][0].update(input="-1"), "non-negative"),
        (lambda d: d["prices"][0].update(effective_from="yesterday"), "YYYY-MM-DD"),
        (lambda d: d.update(baseline_model="gpt-99"), "baseline_model"),
        (lambda d: d["routes"].append(dict(d["routes"][0])), "duplicate route"),
        (lambda d: d.update(colour="red"), "unknown key"),
    ],
)
def test_an_invalid_catalog_is_refused_whole(catalog, tmp_path, edit, message):
    doc = yaml.safe_load(open(_export(tmp_path)))
    doc["routes"][1]["max_output_tokens"] = 7  # a valid change that must NOT be applied
    edit(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CommandError, match=message):
        call_command("load_catalog", str(path))
    assert Route.objects.get(name=doc["routes"][1]["name"]).max_output_tokens != 7


def test_a_price_in_the_future_is_not_in_effect_yet(catalog):
    from datetime import date, timedelta

    ModelPrice.objects.create(model="claude-haiku-4-5", provider="anthropic", input_per_mtok="9",
                              output_per_mtok="9", cached_input_per_mtok="9", cache_write_per_mtok="9",
                              effective_from=date.today() + timedelta(days=3))
    assert prices_in_effect()["claude-haiku-4-5"].input_per_mtok == Decimal("1")


def _export(tmp_path):
    path = tmp_path / "export.yaml"
    call_command("export_catalog", "--output", str(path))
    return path
