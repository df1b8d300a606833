"""Catalog as code: validate a YAML catalog document, apply it in one transaction, export it.

`catalog_apply` replaces the route and tool registries with the document's,
adds price rows that are new (same model and date: updated), sets the baseline,
and writes a `CatalogChange` row for every difference. Any error rolls back the whole
document; nothing is half-applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction
from django.forms.models import model_to_dict

from .models import CatalogChange, CatalogSettings, ModelPrice, Provider, Route, Tool

DEFAULT_CATALOG = Path(__file__).resolve().parent / "catalog" / "default.yaml"
PROVIDERS = {choice.value for choice in Provider}


class CatalogError(ValueError):
    """The catalog document is invalid; the message names the field."""


@dataclass
class CatalogDocument:
    baseline_model: str
    prices: list[dict[str, Any]]
    tools: list[dict[str, str]]
    routes: list[dict[str, Any]]


def _money(value: Any, where: str) -> Decimal:
    if isinstance(value, float):
        raise CatalogError(f"{where}: write prices as quoted strings (e.g. \"1.25\"), not floats")
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, TypeError):
        raise CatalogError(f"{where}: {value!r} is not a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise CatalogError(f"{where}: must be a non-negative amount")
    return amount


def _str(item: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = item.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}.{key}: required text")
    return value.strip()


def parse_catalog_document(doc: Any) -> CatalogDocument:
    if not isinstance(doc, dict):
        raise CatalogError("catalog: the document must be a mapping")
    unknown = set(doc) - {"baseline_model", "prices", "tools", "routes"}
    if unknown:
        raise CatalogError(f"catalog: unknown key(s) {', '.join(sorted(unknown))}")
    prices: list[dict[str, Any]] = []
    models: set[str] = set()
    for i, item in enumerate(doc.get("prices") or []):
        where = f"prices[{i}]"
        if not isinstance(item, dict):
            raise CatalogError(f"{where}: must be a mapping")
        provider = _str(item, "provider", where)
        if provider not in PROVIDERS:
            raise CatalogError(f"{where}.provider: {provider!r} is not one of {sorted(PROVIDERS)}")
        raw_date = item.get("effective_from")
        try:
            effective = raw_date if isinstance(raw_date, date) else date.fromisoformat(str(raw_date))
        except ValueError:
            raise CatalogError(f"{where}.effective_from: {raw_date!r} is not a YYYY-MM-DD date") from None
        prices.append({
            "model": _str(item, "model", where),
            "provider": provider,
            "input_per_mtok": _money(item.get("input"), f"{where}.input"),
            "output_per_mtok": _money(item.get("output"), f"{where}.output"),
            "cached_input_per_mtok": _money(item.get("cached_input"), f"{where}.cached_input"),
            "cache_write_per_mtok": _money(item.get("cache_write", item.get("input")), f"{where}.cache_write"),
            "effective_from": effective,
        })
        models.add(prices[-1]["model"])
    if not prices:
        raise CatalogError("prices: at least one price is required")
    tools = []
    for i, item in enumerate(doc.get("tools") or []):
        if not isinstance(item, dict):
            raise CatalogError(f"tools[{i}]: must be a mapping")
        tools.append({"name": _str(item, "name", f"tools[{i}]"),
                      "description": _str(item, "description", f"tools[{i}]", required=False)})
    routes = []
    names: set[str] = set()
    for i, item in enumerate(doc.get("routes") or []):
        where = f"routes[{i}]"
        if not isinstance(item, dict):
            raise CatalogError(f"{where}: must be a mapping")
        name = _str(item, "name", where)
        if name in names:
            raise CatalogError(f"{where}.name: duplicate route {name!r}")
        names.add(name)
        provider = _str(item, "provider", where)
        if provider not in PROVIDERS:
            raise CatalogError(f"{where}.provider: {provider!r} is not one of {sorted(PROVIDERS)}")
        model = _str(item, "model", where)
        if provider != "guardrail" and model not in models:
            raise CatalogError(f"{where}.model: {model!r} has no price in this catalog")
        max_out = item.get("max_output_tokens", 2048)
        if isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 1:
            raise CatalogError(f"{where}.max_output_tokens: must be a positive integer")
        for flag in ("tools_enabled", "cheap_tier", "enabled"):
            if not isinstance(item.get(flag, flag == "enabled"), bool):
                raise CatalogError(f"{where}.{flag}: must be true or false")
        routes.append({
            "name": name, "description": _str(item, "description", where, required=False),
            "provider": provider, "model": model, "model_version": _str(item, "model_version", where),
            "max_output_tokens": max_out, "tools_enabled": item.get("tools_enabled", False),
            "cheap_tier": item.get("cheap_tier", False), "enabled": item.get("enabled", True),
            "fallback": item.get("fallback"), "position": i,
        })
    for route in routes:
        if route["fallback"] is not None and route["fallback"] not in names:
            raise CatalogError(f"routes.{route['name']}.fallback: {route['fallback']!r} is not a route here")
    if not routes:
        raise CatalogError("routes: at least one route is required")
    baseline = doc.get("baseline_model")
    if not isinstance(baseline, str) or baseline not in models:
        raise CatalogError(f"baseline_model: {baseline!r} has no price in this catalog")
    return CatalogDocument(baseline_model=baseline, prices=prices, tools=tools, routes=routes)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, (Decimal, date)) else v) for k, v in values.items()}


def record_change(*, actor: str, source: str, entity: str, key: str, action: str,
                  old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    CatalogChange.objects.create(
        actor=actor, source=source, entity=entity, entity_key=key, action=action,
        old_value=_jsonable(old) if old else None, new_value=_jsonable(new) if new else None,
    )


def _route_values(route: Route) -> dict[str, Any]:
    values = model_to_dict(route, exclude=["id", "fallback"])
    values["fallback"] = route.fallback.name if route.fallback_id else None
    return values


@transaction.atomic
def catalog_apply(*, doc: CatalogDocument, actor: str, source: str = "load_catalog") -> dict[str, int]:
    """Make the database catalog equal to `doc`; return counts of changes."""
    changes = {"prices": 0, "routes": 0, "tools": 0, "baseline": 0}
    for price in doc.prices:
        existing = ModelPrice.objects.filter(model=price["model"], effective_from=price["effective_from"]).first()
        if existing is None:
            ModelPrice.objects.create(**price)
            record_change(actor=actor, source=source, entity="price", key=price["model"], action="create",
                          old=None, new=price)
            changes["prices"] += 1
        else:
            old = model_to_dict(existing, exclude=["id", "created_at"])
            if any(old[k] != v for k, v in price.items()):
                ModelPrice.objects.filter(pk=existing.pk).update(**price)
                record_change(actor=actor, source=source, entity="price", key=price["model"], action="update",
                              old=old, new=price)
                changes["prices"] += 1

    wanted_tools = {t["name"]: t for t in doc.tools}
    for tool in Tool.objects.exclude(name__in=wanted_tools):
        record_change(actor=actor, source=source, entity="tool", key=tool.name, action="delete",
                      old={"name": tool.name, "description": tool.description}, new=None)
        tool.delete()
        changes["tools"] += 1
    for name, tool in wanted_tools.items():
        obj, created = Tool.objects.get_or_create(name=name, defaults={"description": tool["description"]})
        if created or obj.description != tool["description"]:
            old = None if created else {"name": name, "description": obj.description}
            obj.description = tool["description"]
            obj.save()
            record_change(actor=actor, source=source, entity="tool", key=name,
                          action="create" if created else "update", old=old, new=tool)
            changes["tools"] += 1

    wanted_routes = {r["name"]: r for r in doc.routes}
    for route in Route.objects.exclude(name__in=wanted_routes):
        record_change(actor=actor, source=source, entity="route", key=route.name, action="delete",
                      old=_route_values(route), new=None)
        route.delete()
        changes["routes"] += 1
    before = {r.name: _route_values(r) for r in Route.objects.select_related("fallback")}
    objects: dict[str, Route] = {}
    for name, spec in wanted_routes.items():
        fields = {k: v for k, v in spec.items() if k != "fallback"}
        obj = Route.objects.filter(name=name).first()
        if obj is None:
            obj = Route.objects.create(**fields)
        else:
            for k, v in fields.items():
                setattr(obj, k, v)
            obj.save()
        objects[name] = obj
    for name, spec in wanted_routes.items():
        obj = objects[name]
        obj.fallback = objects.get(spec["fallback"]) if spec["fallback"] else None
        obj.save(update_fields=["fallback"])
        after = _route_values(obj)
        old = before.get(name)
        if old != after:
            record_change(actor=actor, source=source, entity="route", key=name,
                          action="update" if old else "create", old=old, new=after)
            changes["routes"] += 1
    settings_row, _ = CatalogSettings.objects.get_or_create(id=1)
    if settings_row.baseline_model != doc.baseline_model:
        record_change(actor=actor, source=source, entity="baseline", key="baseline_model", action="update",
                      old={"baseline_model": settings_row.baseline_model}, new={"baseline_model": doc.baseline_model})
        settings_row.baseline_model = doc.baseline_model
        settings_row.save()
        changes["baseline"] += 1
    return changes


def catalog_export() -> dict[str, Any]:
    """The whole catalog as a document `parse_catalog_document` accepts."""
    prices = [
        {
            "model": p.model, "provider": p.provider, "input": str(p.input_per_mtok),
            "output": str(p.output_per_mtok), "cached_input": str(p.cached_input_per_mtok),
            "cache_write": str(p.cache_write_per_mtok), "effective_from": p.effective_from.isoformat(),
        }
        for p in ModelPrice.objects.order_by("model", "effective_from")
    ]
    routes = []
    for r in Route.objects.select_related("fallback").order_by("position", "name"):
        routes.append({
            "name": r.name, "description": r.description, "provider": r.provider, "model": r.model,
            "model_version": r.model_version, "max_output_tokens": r.max_output_tokens,
            "tools_enabled": r.tools_enabled, "fallback": r.fallback.name if r.fallback_id else None,
            "cheap_tier": r.cheap_tier, "enabled": r.enabled,
        })
    settings_row = CatalogSettings.objects.filter(id=1).first()
    return {
        "baseline_model": settings_row.baseline_model if settings_row else "claude-opus-4-7",
        "prices": prices,
        "tools": [{"name": t.name, "description": t.description} for t in Tool.objects.order_by("name")],
        "routes": routes,
    }


def load_catalog_file(path: str | Path) -> CatalogDocument:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path} is not valid YAML: {exc}") from None
    return parse_catalog_document(doc)
