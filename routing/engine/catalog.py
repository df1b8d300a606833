"""Immutable snapshots of the catalog and the active policy, as the engine sees them.

The Django side loads these from the database (routing/selectors.py) and caches them;
the engine never touches the ORM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Price:
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal
    cache_write_per_mtok: Decimal


@dataclass(frozen=True)
class RouteSpec:
    name: str
    description: str
    provider: str
    model: str
    model_version: str
    max_output_tokens: int
    tools_enabled: bool = False
    fallback: str | None = None
    cheap_tier: bool = False


@dataclass(frozen=True)
class PolicySettings:
    version_id: int | None
    number: int
    confidence_threshold: float = 0.75
    fallback_route: str = "complex_reasoning"
    sentinel_mode: str = "llm"
    sentinel_provider: str = "anthropic"
    sentinel_model: str = "claude-haiku-4-5"
    sentinel_model_version: str = "claude-haiku-4-5-20251001"
    sentinel_prompt_version: str = "v1"
    sentinel_max_tokens: int = 256
    sentinel_timeout_s: float = 5.0
    local_threshold: float = 0.9
    request_deadline_s: float = 120.0


@dataclass(frozen=True)
class Catalog:
    routes: dict[str, RouteSpec]
    prices: dict[str, Price]
    baseline_model: str
    tools: tuple[str, ...] = ()
    guardrail_route: str = "refusal_required"
    stamp: str = ""
    models: dict[str, str] = field(default_factory=dict)  # catalog model -> provider

    def route_names(self) -> list[str]:
        return list(self.routes)
