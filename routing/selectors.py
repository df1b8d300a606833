"""Reads: catalog and policy snapshots for the engine, API-key lookup."""

from __future__ import annotations

from datetime import date

from django.utils import timezone

from routing.engine.catalog import Catalog, PolicySettings, Price, RouteSpec

from .models import ApiKey, CatalogSettings, ModelPrice, PolicyStatus, PolicyVersion, Route, Tool


def prices_in_effect(on: date | None = None) -> dict[str, Price]:
    """The price of each model on `on` (today by default): its latest row not in the future."""
    on = on or timezone.now().date()
    prices: dict[str, Price] = {}
    for row in ModelPrice.objects.filter(effective_from__lte=on).order_by("model", "-effective_from"):
        if row.model in prices:
            continue
        prices[row.model] = Price(
            model=row.model,
            input_per_mtok=row.input_per_mtok,
            output_per_mtok=row.output_per_mtok,
            cached_input_per_mtok=row.cached_input_per_mtok,
            cache_write_per_mtok=row.cache_write_per_mtok,
        )
    return prices


def catalog_snapshot() -> Catalog:
    routes = {
        r.name: RouteSpec(
            name=r.name, description=r.description, provider=r.provider, model=r.model,
            model_version=r.model_version, max_output_tokens=r.max_output_tokens, tools_enabled=r.tools_enabled,
            fallback=r.fallback.name if r.fallback_id and r.fallback.enabled else None, cheap_tier=r.cheap_tier,
        )
        for r in Route.objects.filter(enabled=True).select_related("fallback").order_by("position", "name")
    }
    settings_row = CatalogSettings.objects.filter(id=1).first()
    models = {}
    for row in ModelPrice.objects.order_by("model", "effective_from"):
        models[row.model] = row.provider
    prices = prices_in_effect()
    stamp = f"{len(routes)}:{sum(hash(r) for r in routes.values())}:{len(prices)}"
    return Catalog(
        routes=routes,
        prices=prices,
        baseline_model=settings_row.baseline_model if settings_row else "claude-opus-4-7",
        tools=tuple(Tool.objects.order_by("name").values_list("name", flat=True)),
        stamp=stamp,
        models=models,
    )


def policy_to_settings(policy: PolicyVersion) -> PolicySettings:
    return PolicySettings(
        version_id=policy.pk,
        number=policy.number,
        confidence_threshold=float(policy.confidence_threshold),
        fallback_route=policy.fallback_route,
        sentinel_mode=policy.sentinel_mode,
        sentinel_provider=policy.sentinel_provider,
        sentinel_model=policy.sentinel_model,
        sentinel_model_version=policy.sentinel_model_version,
        sentinel_prompt_version=policy.sentinel_prompt_version,
        sentinel_max_tokens=policy.sentinel_max_tokens,
        sentinel_timeout_s=policy.sentinel_timeout_ms / 1000,
        local_threshold=float(policy.local_threshold),
        request_deadline_s=policy.request_deadline_ms / 1000,
    )


def active_policy() -> PolicySettings:
    policy = PolicyVersion.objects.filter(status=PolicyStatus.ACTIVE).first()
    if policy is None:
        # No policy yet (fresh database before `bootstrap`): the documented defaults.
        return PolicySettings(version_id=None, number=0)
    return policy_to_settings(policy)


def api_key_by_hash(key_hash: str) -> ApiKey | None:
    return ApiKey.objects.select_related("application").filter(key_hash=key_hash).first()
