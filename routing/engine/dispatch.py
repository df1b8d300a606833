"""The request path in plain Python: guard → cache → sentinel → policy → executor → a decision record.

`Gateway.route` guards the input, looks the decision up in the decision cache, asks
the sentinel(s) the policy's `sentinel_mode` names, and applies the policy (see
`modes.py` for how the local, tiered, speculative and chained paths work);
`Gateway.execute` and `Gateway.stream` run the chosen executor (falling back to the
route's fallback executor when the primary fails before sending anything) or hand
over an answer that speculation or the chained call already produced;
`Gateway.record` turns what happened into one `DecisionRecord`, the row the
decision log stores.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from routing.providers.base import (
    ChatProvider,
    Completion,
    Message,
    ProviderError,
    StreamDelta,
)

from .cache import DecisionCache
from .catalog import Catalog, PolicySettings, Price, RouteSpec
from .policy import ModeSettings, PolicyOutcome
from .pricing import Usage, baseline_cost_of, cost_of, quantize
from .sentinel import LocalModel, SentinelResult, shared_local_model
from .tokens import estimate_tokens

DIRECT_ROUTE = "direct"


@dataclass
class GatewayRequest:
    messages: list[Message]
    system: str | None = None
    endpoint: str = "complete"
    explicit_model: str | None = None
    max_tokens: int | None = None
    stream: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    application_id: int | None = None
    api_key_prefix: str = ""

    def all_text(self) -> str:
        return (self.system or "") + "\n".join(m.content for m in self.messages)


@dataclass
class Routed:
    request_id: uuid.UUID
    created_at: datetime
    started: float
    sentinel: SentinelResult | None
    outcome: PolicyOutcome
    route: RouteSpec
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimated_cost: Decimal
    guard_flags: tuple[str, ...] = ()
    cache_hit: str = ""  # "", exact, semantic
    sentinel_calls_saved: int = 0
    local_decision: dict[str, Any] | None = None
    served_path: str = "plain"  # plain, speculative, speculative_cancelled, chained, chained_fallback, cache
    # An answer already produced while routing (speculation that landed, or the chained call).
    prefetched: Completion | None = None
    prefetched_spec: RouteSpec | None = None
    prefetched_ms: float = 0.0
    speculation: Any = None  # modes.Speculation while the cheap executor may still be running
    waste_usage: Usage = field(default_factory=Usage)
    waste_cost: Decimal = Decimal(0)


@dataclass
class Executed:
    completion: Completion | None
    executor: RouteSpec | None
    latency_ms: float
    attempts: int
    status: str = "ok"
    error: str = ""
    delivered_text: str = ""


@dataclass
class DecisionRecord:
    """Plain mirror of `routing.models.Decision` (field names match)."""

    request_id: uuid.UUID
    created_at: datetime
    application_id: int | None
    api_key_prefix: str
    endpoint: str
    policy_version_id: int | None
    sentinel_kind: str
    sentinel_model: str
    sentinel_decision: Any
    sentinel_error: str
    route_decided: str
    confidence: float | None
    route: str
    policy_reason: str
    escalated: bool
    executor_provider: str
    executor_model: str
    executor_model_version: str
    sentinel_input_tokens: int
    sentinel_output_tokens: int
    sentinel_cached_tokens: int
    executor_input_tokens: int
    executor_output_tokens: int
    executor_cached_tokens: int
    executor_cache_write_tokens: int
    sentinel_ms: float
    executor_ms: float
    overhead_ms: float
    total_ms: float
    sentinel_cost: Decimal
    executor_cost: Decimal
    cost: Decimal
    baseline_cost: Decimal
    status: str
    error: str
    stream: bool
    attempts: int
    simulated: bool
    metadata: dict[str, Any]
    guard_flags: list[str] = field(default_factory=list)
    cache_hit: bool = False
    sentinel_calls_saved: int = 0
    local_decision: dict[str, Any] | None = None
    served_path: str = "plain"
    speculative_waste_tokens: int = 0
    speculative_waste_cost: Decimal = Decimal(0)
    retries: int = 0
    attempt_log: list[dict[str, Any]] = field(default_factory=list)


class NoExecutor(Exception):
    """The registry has no usable route for this request (a configuration error)."""


class Gateway:
    def __init__(
        self,
        *,
        catalog: Catalog,
        policy: PolicySettings,
        providers: Mapping[str, ChatProvider],
        now: Callable[[], datetime],
        modes: ModeSettings | None = None,
        cache: DecisionCache | None = None,
        local_model: LocalModel | None = None,
    ) -> None:
        self.catalog = catalog
        self.policy = policy
        self.providers = providers
        self.now = now
        self.modes = modes or ModeSettings()
        self.cache = cache
        self.local_model = local_model or shared_local_model()

    # ---- routing -------------------------------------------------------------------------
    def _route_spec(self, name: str) -> RouteSpec:
        spec = self.catalog.routes.get(name) or self.catalog.routes.get("fallback")
        if spec is None:
            raise NoExecutor(f"route {name!r} is not in the registry and there is no 'fallback' route")
        return spec

    def _direct_spec(self, model: str) -> RouteSpec:
        provider = self.catalog.models.get(model)
        if provider is None:
            raise NoExecutor(f"model {model!r} is not in the catalog")
        version = next((r.model_version for r in self.catalog.routes.values() if r.model == model), model)
        return RouteSpec(
            name=DIRECT_ROUTE, description="explicit model", provider=provider, model=model,
            model_version=version, max_output_tokens=4096,
        )

    async def route(self, request: GatewayRequest) -> Routed:
        """Guard, cache, sentinel(s) and policy; see `modes.decide` for the numbered steps."""
        from .modes import decide

        started = time.perf_counter()
        created_at = self.now()
        request_id = uuid.uuid4()
        if request.explicit_model:
            spec = self._direct_spec(request.explicit_model)
            outcome = PolicyOutcome(DIRECT_ROUTE, "explicit model requested: routing bypassed", False)
            routed = Routed(request_id, created_at, started, None, outcome, spec, 0, 0, Decimal(0))
        else:
            routed = Routed(request_id, created_at, started, None, PolicyOutcome("", "", False),
                            self._route_spec(self.policy.fallback_route), 0, 0, Decimal(0))
            await decide(self, request, routed)
            spec = routed.route
        sentinel = routed.sentinel
        est_in = estimate_tokens(request.all_text())
        est_out = min(
            request.max_tokens or spec.max_output_tokens,
            sentinel.decision.estimated_output_tokens if sentinel and sentinel.decision else spec.max_output_tokens // 4,
        )
        price = self.catalog.prices.get(spec.model) if spec.provider != "guardrail" else None
        estimated = cost_of(Usage(input_tokens=est_in, output_tokens=est_out), price)
        if sentinel is not None:
            estimated = quantize(estimated + cost_of(sentinel.usage, self._sentinel_price(sentinel)))
        routed.estimated_input_tokens, routed.estimated_output_tokens = est_in, est_out
        routed.estimated_cost = estimated
        return routed

    def _sentinel_price(self, sentinel: SentinelResult) -> Price | None:
        return self.catalog.prices.get(sentinel.price_model or self.policy.sentinel_model)

    # ---- execution -----------------------------------------------------------------------
    def _executors(self, spec: RouteSpec) -> list[RouteSpec]:
        chain = [spec]
        if spec.fallback and spec.fallback in self.catalog.routes and spec.fallback != spec.name:
            chain.append(self.catalog.routes[spec.fallback])
        return chain

    def _provider(self, spec: RouteSpec) -> ChatProvider:
        provider = self.providers.get(spec.provider)
        if provider is None:
            raise ProviderError(f"provider {spec.provider!r} is not configured", provider=spec.provider)
        return provider

    def _max_tokens(self, spec: RouteSpec, request: GatewayRequest) -> int:
        return min(request.max_tokens or spec.max_output_tokens, spec.max_output_tokens)

    async def _take_prefetched(self, routed: Routed) -> Executed | None:
        """The answer speculation or the chained call produced, if it is there to use."""
        if routed.speculation is not None:
            await routed.speculation.settle(routed)
        if routed.prefetched is None or routed.prefetched_spec is None:
            return None
        return Executed(routed.prefetched, routed.prefetched_spec, routed.prefetched_ms, 1)

    async def execute(self, routed: Routed, request: GatewayRequest) -> Executed:
        prefetched = await self._take_prefetched(routed)
        if prefetched is not None:
            return prefetched
        started = time.perf_counter()
        attempts = 0
        last_error = ""
        for spec in self._executors(routed.route):
            attempts += 1
            try:
                completion = await asyncio.wait_for(
                    self._provider(spec).complete(
                        model=spec.model_version, system=request.system, messages=request.messages,
                        max_tokens=self._max_tokens(spec, request), timeout=self.policy.request_deadline_s,
                    ),
                    timeout=self.policy.request_deadline_s,
                )
            except (ProviderError, TimeoutError) as exc:
                last_error = str(exc) or "executor timeout"
                continue
            return Executed(completion, spec, (time.perf_counter() - started) * 1000, attempts)
        return Executed(None, routed.route, (time.perf_counter() - started) * 1000, attempts, "error", last_error)

    async def stream(
        self, routed: Routed, request: GatewayRequest, sink: Executed
    ) -> AsyncIterator[str]:
        """Yield text deltas; `sink` is filled in as the stream progresses (even if cut short).

        Falls back to the next executor only while nothing has been sent to the client.
        """
        prefetched = await self._take_prefetched(routed)
        if prefetched is not None:
            sink.completion, sink.executor, sink.attempts = prefetched.completion, prefetched.executor, 1
            sink.latency_ms = prefetched.latency_ms
            sink.delivered_text = prefetched.completion.text if prefetched.completion else ""
            sink.status = "ok"
            if sink.delivered_text:
                yield sink.delivered_text
            return
        started = time.perf_counter()
        sink.status = "error"
        for spec in self._executors(routed.route):
            sink.attempts += 1
            sink.executor = spec
            sent_any = False
            try:
                stream = self._provider(spec).stream(
                    model=spec.model_version, system=request.system, messages=request.messages,
                    max_tokens=self._max_tokens(spec, request), timeout=self.policy.request_deadline_s,
                )
                async for delta in stream:
                    delta: StreamDelta
                    if delta.final is not None:
                        final = delta.final
                        final.text = sink.delivered_text
                        sink.completion = final
                        continue
                    if delta.text:
                        sent_any = True
                        sink.delivered_text += delta.text
                        yield delta.text
            except ProviderError as exc:
                sink.error = str(exc)
                if sent_any:
                    sink.status = "partial"
                    sink.latency_ms = (time.perf_counter() - started) * 1000
                    raise
                continue
            finally:
                sink.latency_ms = (time.perf_counter() - started) * 1000
            sink.status = "ok"
            sink.error = ""
            return
        raise ProviderError(sink.error or "no executor available", provider=routed.route.provider)

    # ---- recording -----------------------------------------------------------------------
    def _price(self, model: str) -> Price | None:
        return self.catalog.prices.get(model)

    def record(self, routed: Routed, executed: Executed | None, request: GatewayRequest) -> DecisionRecord:
        sentinel = routed.sentinel
        if routed.speculation is not None:
            routed.speculation.abandon(routed)  # never executed (decide-only, or an error): count the waste
        s_usage = sentinel.usage if sentinel else Usage()
        s_cost = cost_of(s_usage, self._sentinel_price(sentinel)) if sentinel else quantize(Decimal(0))
        executor = executed.executor if executed else None
        completion = executed.completion if executed else None
        e_usage = completion.usage if completion else Usage()
        if completion is None and executed is not None and executed.delivered_text:
            # A cut stream: count what was delivered, and the prompt we sent.
            e_usage = Usage(input_tokens=routed.estimated_input_tokens,
                            output_tokens=estimate_tokens(executed.delivered_text))
        is_guardrail = executor is not None and executor.provider == "guardrail"
        e_cost = cost_of(e_usage, None if is_guardrail or executor is None else self._price(executor.model))
        baseline_usage = e_usage
        if is_guardrail or (executor is None and routed.route.provider != "guardrail"):
            baseline_usage = Usage(input_tokens=routed.estimated_input_tokens,
                                   output_tokens=routed.estimated_output_tokens)
        if is_guardrail and completion is not None:
            baseline_usage = Usage(input_tokens=routed.estimated_input_tokens,
                                   output_tokens=estimate_tokens(completion.text))
        baseline = baseline_cost_of(baseline_usage, self._price(self.catalog.baseline_model))
        total_ms = (time.perf_counter() - routed.started) * 1000
        sentinel_ms = sentinel.latency_ms if sentinel else 0.0
        executor_ms = executed.latency_ms if executed else 0.0
        decision = sentinel.decision if sentinel else None
        simulated = bool(
            (executor is not None and self.providers.get(executor.provider) is not None
             and self.providers[executor.provider].simulated)
            or (sentinel is not None and self.providers.get(self.policy.sentinel_provider) is not None
                and self.providers[self.policy.sentinel_provider].simulated)
        )
        raw = sentinel.raw if sentinel else None
        if isinstance(raw, str):
            raw = {"unparsed": raw[:2000]}
        return DecisionRecord(
            request_id=routed.request_id,
            created_at=routed.created_at,
            application_id=request.application_id,
            api_key_prefix=request.api_key_prefix,
            endpoint=request.endpoint,
            policy_version_id=self.policy.version_id,
            sentinel_kind=sentinel.kind if sentinel else "bypass",
            sentinel_model=sentinel.model if sentinel else "",
            sentinel_decision=decision.to_dict() if decision else raw,
            sentinel_error=(sentinel.failure or "")[:300] if sentinel else "",
            route_decided=decision.route if decision else "",
            confidence=decision.confidence if decision else None,
            route=routed.outcome.route,
            policy_reason=routed.outcome.reason[:300],
            escalated=routed.outcome.escalated,
            executor_provider=executor.provider if executor else "",
            executor_model=executor.model if executor else "",
            executor_model_version=completion.model_version if completion else "",
            sentinel_input_tokens=s_usage.input_tokens,
            sentinel_output_tokens=s_usage.output_tokens,
            sentinel_cached_tokens=s_usage.cached_tokens,
            executor_input_tokens=e_usage.input_tokens,
            executor_output_tokens=e_usage.output_tokens,
            executor_cached_tokens=e_usage.cached_tokens,
            executor_cache_write_tokens=e_usage.cache_write_tokens,
            sentinel_ms=round(sentinel_ms, 3),
            executor_ms=round(executor_ms, 3),
            overhead_ms=round(max(0.0, total_ms - sentinel_ms - executor_ms), 3),
            total_ms=round(total_ms, 3),
            sentinel_cost=s_cost,
            executor_cost=e_cost,
            cost=quantize(s_cost + e_cost + routed.waste_cost),
            baseline_cost=baseline,
            status=executed.status if executed else "ok",
            error=(executed.error if executed else "")[:500],
            stream=request.stream,
            attempts=executed.attempts if executed else 0,
            simulated=simulated,
            metadata=dict(request.metadata),
            guard_flags=list(routed.guard_flags),
            cache_hit=bool(routed.cache_hit),
            sentinel_calls_saved=routed.sentinel_calls_saved,
            local_decision=routed.local_decision,
            served_path=routed.served_path,
            speculative_waste_tokens=routed.waste_usage.input_tokens + routed.waste_usage.output_tokens,
            speculative_waste_cost=quantize(routed.waste_cost),
        )
