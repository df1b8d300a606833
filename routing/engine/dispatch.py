"""The request path in plain Python: guard → cache → sentinel → policy → executor → a decision record.

`Gateway.route` guards the input, looks the decision up in the decision cache, asks
the sentinel(s) the policy's `sentinel_mode` names, and applies the policy (see
`modes.py` for how the local, tiered, speculative and chained paths work);
`Gateway.execute` and `Gateway.stream` run the chosen executor (falling back to the
route's fallback executor when the primary fails before sending anything) or hand
over an answer that speculation or the chained call already produced;
`Gateway.record` turns what happened into one `DecisionRecord`, the row the
decision log stores.

Every provider call of a request goes through its `Calls` (routing/engine/resilience.py):
one deadline bounds guard, sentinel, executor, retries and backoff; retryable failures are
retried on the same model, then the route's fallback executor is tried; an open circuit
skips straight to the fallback. Each call is in the row's attempt log, and the row's cost
is the sum of what the providers billed for those calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
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
from .resilience import BreakerRegistry, Calls, CircuitOpen, Deadline, DeadlineExceeded, RetryPolicy, outcome_of
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
    # The request's deadline, retry policy, breakers and attempt log (set by Gateway.route).
    calls: Calls = field(default_factory=lambda: Calls(deadline=Deadline(120.0)))


@dataclass
class Executed:
    completion: Completion | None
    executor: RouteSpec | None
    latency_ms: float
    attempts: int
    status: str = "ok"
    error: str = ""
    delivered_text: str = ""
    # When no executor answered: what the client is told (see Calls.failure).
    http_status: int = 0
    error_code: str = ""
    retry_after: float | None = None
    # A stream cut midway: the prompt as the provider reported it (or estimated) plus what was delivered.
    partial_usage: Usage | None = None

    def fail(self, calls: Calls, error: ProviderError | None) -> None:
        failure = calls.failure(error)
        self.http_status, self.error_code, self.retry_after = failure.status, failure.code, failure.retry_after


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
        retry: RetryPolicy | None = None,
        breakers: BreakerRegistry | None = None,
        deadline_cap_s: float | None = None,
        abandoned: Callable[[DecisionRecord], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.policy = policy
        self.providers = providers
        self.now = now
        self.modes = modes or ModeSettings()
        self.cache = cache
        self.local_model = local_model or shared_local_model()
        self.retry = retry or RetryPolicy()
        self.breakers = breakers
        self.deadline_cap_s = deadline_cap_s
        # Where the row of a request whose client went away before the view could record it goes.
        self.abandoned = abandoned

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
        calls = Calls(deadline=Deadline(self.deadline_s()), policy=self.retry, breakers=self.breakers)
        if request.explicit_model:
            spec = self._direct_spec(request.explicit_model)
            outcome = PolicyOutcome(DIRECT_ROUTE, "explicit model requested: routing bypassed", False)
            routed = Routed(request_id, created_at, started, None, outcome, spec, 0, 0, Decimal(0), calls=calls)
        else:
            routed = Routed(request_id, created_at, started, None, PolicyOutcome("", "", False),
                            self._route_spec(self.policy.fallback_route), 0, 0, Decimal(0), calls=calls)
            try:
                await decide(self, request, routed)
            except asyncio.CancelledError:
                routed.outcome = PolicyOutcome(routed.route.name, "client disconnected while routing", False)
                self._abandon(routed, None, request)
                raise
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

    def deadline_s(self) -> float:
        """The request's deadline: the policy's, never more than the operator's cap."""
        if self.deadline_cap_s is None:
            return self.policy.request_deadline_s
        return min(self.policy.request_deadline_s, self.deadline_cap_s)

    def _abandon(self, routed: Routed, executed: Executed | None, request: GatewayRequest) -> None:
        """The client went away mid-request (the view is cancelled): still log its row."""
        if executed is not None and executed.completion is None:
            executed.status = "partial" if executed.partial_usage is not None else "error"
            executed.error = executed.error or "client disconnected"
        if self.abandoned is not None:
            record = self.record(routed, executed, request)
            if executed is None:  # gone while routing: nothing served, so never an "ok" row
                record.status, record.error = "error", "client disconnected"
            self.abandoned(record)

    # ---- execution -----------------------------------------------------------------------
    def _executors(self, spec: RouteSpec) -> list[RouteSpec]:
        """The route's executor, then its fallback: only ever an executor the route config lists."""
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
        """The route's executor with retries, then its fallback; an open circuit skips to the fallback."""
        prefetched = await self._take_prefetched(routed)
        if prefetched is not None:
            return prefetched
        calls = routed.calls
        started = time.perf_counter()
        executed = Executed(None, routed.route, 0.0, 0)
        last: ProviderError | None = None
        try:
            for spec in self._executors(routed.route):
                try:
                    provider = self._provider(spec)
                    executed.completion = await calls.call(
                        self._completer(provider, spec, request), role="executor", provider=spec.provider, model=spec.model_version,
                        limit=provider.config.timeout_s, price=self._executor_price(spec),
                        cancel_usage=Usage(input_tokens=routed.estimated_input_tokens),
                    )
                except DeadlineExceeded as exc:
                    last = exc
                    break  # no time left for a fallback either
                except ProviderError as exc:
                    last = exc
                    continue
                executed.executor = spec
                break
        except asyncio.CancelledError:
            executed.latency_ms = (time.perf_counter() - started) * 1000
            executed.attempts = calls.calls_made("executor")
            self._abandon(routed, executed, request)
            raise
        executed.latency_ms = (time.perf_counter() - started) * 1000
        executed.attempts = calls.calls_made("executor")
        if executed.completion is None:
            executed.status, executed.error = "error", str(last) if last else "no executor available"
            executed.fail(calls, last)
        return executed

    def _completer(self, provider: ChatProvider, spec: RouteSpec,
                   request: GatewayRequest) -> Callable[[float], Awaitable[Completion]]:
        def complete(timeout: float) -> Awaitable[Completion]:
            return provider.complete(model=spec.model_version, system=request.system, messages=request.messages,
                                     max_tokens=self._max_tokens(spec, request), timeout=timeout)

        return complete

    def _executor_price(self, spec: RouteSpec) -> Price | None:
        return None if spec.provider == "guardrail" else self._price(spec.model)

    async def stream(
        self, routed: Routed, request: GatewayRequest, sink: Executed
    ) -> AsyncIterator[str]:
        """Yield text deltas; `sink` is filled in as the stream progresses (even if cut short).

        1. Each executor (the route's, then its fallback) is admitted by its circuit breaker.
        2. Its stream is opened and read with every wait bounded by the deadline (and the
           provider's timeout); prompt usage is noted as soon as the provider reports it.
        3. A failure before the first delta reached the client is retried (backoff, retry-after,
           deadline permitting), then the fallback is tried; after the first delta it is final:
           the row says `partial`, with the prompt plus the tokens delivered, and the error is raised.
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
        calls = routed.calls
        started = time.perf_counter()
        sink.status = "error"
        last: ProviderError | None = None
        try:
            for spec in self._executors(routed.route):
                sink.executor = spec
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        # aclosing: if the client goes away, the attempt is closed (and logged) now, not at GC.
                        async with contextlib.aclosing(
                            self._stream_once(routed, request, spec, sink, retry=attempt > 1)
                        ) as deltas:
                            async for text in deltas:
                                yield text
                    except DeadlineExceeded as exc:
                        last = exc
                        if sink.delivered_text:
                            raise
                        sink.error = str(exc)
                        sink.fail(calls, exc)
                        raise
                    except CircuitOpen as exc:
                        if attempt == 1:
                            last = exc  # skipped: straight to the fallback
                        else:
                            calls.attempts.pop()  # our own failures opened it: the last error stands
                        break
                    except ProviderError as exc:
                        last = exc
                        sink.error = str(exc)
                        if sink.delivered_text:
                            raise  # something reached the client: no retry, no fallback
                        wait = calls.retry_delay(exc, attempt)
                        breaker = calls.breaker(spec.provider, spec.model_version)
                        if wait is None or (breaker is not None and breaker.state == "open"):
                            break
                        await calls.sleep(wait)
                        continue
                    sink.status, sink.error = "ok", ""
                    return
            sink.error = str(last) if last else "no executor available"
            sink.fail(calls, last)
            raise last or ProviderError(sink.error, provider=routed.route.provider)
        finally:
            sink.latency_ms = (time.perf_counter() - started) * 1000
            sink.attempts = calls.calls_made("executor")
            if sink.status != "ok" and sink.delivered_text:
                sink.status = "partial"

    async def _stream_once(
        self, routed: Routed, request: GatewayRequest, spec: RouteSpec, sink: Executed, *, retry: bool
    ) -> AsyncIterator[str]:
        """One streamed call to one executor, logged as one attempt."""
        calls = routed.calls
        provider = self._provider(spec)
        breaker = calls.admit("executor", spec.provider, spec.model_version)
        price = self._executor_price(spec)
        started = time.perf_counter()
        reported: Usage | None = None
        delivered_before = sink.delivered_text
        try:
            timeout = calls.timeout_for(provider.config.timeout_s)
        except DeadlineExceeded:
            if breaker is not None:
                breaker.release()
            raise
        stream = provider.stream(model=spec.model_version, system=request.system, messages=request.messages,
                                 max_tokens=self._max_tokens(spec, request), timeout=timeout)
        error: BaseException | None = None
        try:
            while True:
                wait = calls.timeout_for(provider.config.timeout_s)
                try:
                    async with asyncio.timeout(wait):
                        delta: StreamDelta = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    if calls.deadline.remaining() < 0.05:
                        raise DeadlineExceeded(f"{spec.provider}: no answer before the deadline",
                                               provider=spec.provider) from exc
                    raise ProviderError(f"{spec.provider}: timeout after {wait:.2f}s", provider=spec.provider,
                                        retryable=True, kind="timeout") from exc
                if delta.usage is not None:
                    reported = delta.usage
                if delta.final is not None:
                    final = delta.final
                    final.text = sink.delivered_text
                    sink.completion = final
                    continue
                if delta.text:
                    sink.delivered_text += delta.text
                    yield delta.text
        except (ProviderError, asyncio.CancelledError, GeneratorExit) as exc:
            error = exc
            raise
        finally:
            await stream.aclose()
            text = sink.delivered_text[len(delivered_before):]
            if error is None and sink.completion is not None:
                calls.log("executor", spec.provider, spec.model_version, started=started, outcome="ok",
                          usage=sink.completion.usage, price=price, retry=retry)
                Calls.judge(breaker, None)
            else:
                # Billed: the prompt (as the provider reported it, else our estimate) plus the tokens
                # delivered, once the provider started answering or when we walked away mid-call.
                # A call that failed before the provider reported anything bills nothing.
                failed = isinstance(error, ProviderError)
                usage = None
                if text or reported is not None or not failed:
                    prompt = reported or Usage(input_tokens=routed.estimated_input_tokens)
                    usage = Usage(prompt.input_tokens, estimate_tokens(text), prompt.cached_tokens,
                                  prompt.cache_write_tokens)
                if text or not failed:
                    sink.partial_usage = usage
                outcome = ("partial" if text else outcome_of(error)) if failed else "cancelled"
                calls.log("executor", spec.provider, spec.model_version, started=started, outcome=outcome,
                          error=error, usage=usage, price=price, retry=retry)
                Calls.judge(breaker, error if failed else asyncio.CancelledError())

    # ---- recording -----------------------------------------------------------------------
    def _price(self, model: str) -> Price | None:
        return self.catalog.prices.get(model)

    @staticmethod
    def _consumed(calls: Calls) -> Usage:
        """The executor usage of a request that got no answer: its last call's (empty unless billed)."""
        last = next((a for a in reversed(calls.attempts) if a.role == "executor" and a.called), None)
        return last.usage if last is not None else Usage()

    def record(self, routed: Routed, executed: Executed | None, request: GatewayRequest) -> DecisionRecord:
        sentinel = routed.sentinel
        if routed.speculation is not None:
            routed.speculation.abandon(routed)  # never executed (decide-only, or an error): count the waste
        calls = routed.calls
        s_usage = sentinel.usage if sentinel else Usage()
        executor = executed.executor if executed else None
        completion = executed.completion if executed else None
        e_usage = completion.usage if completion else Usage()
        if completion is None and executed is not None:
            # A cut stream or a client gone mid-call: the prompt and whatever was delivered.
            e_usage = executed.partial_usage or self._consumed(calls)
        is_guardrail = executor is not None and executor.provider == "guardrail"
        # Money is what the providers billed, call by call (failed calls bill nothing).
        s_cost, e_cost, waste_cost = calls.cost("sentinel"), calls.cost("executor"), calls.cost("speculative")
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
            cost=calls.cost(),
            baseline_cost=baseline,
            status=executed.status if executed else "ok",
            error=(executed.error if executed else "")[:500],
            stream=request.stream,
            attempts=executed.attempts if executed else 0,
            retries=calls.retries,
            attempt_log=[a.to_dict() for a in calls.attempts],
            simulated=simulated,
            metadata=dict(request.metadata),
            guard_flags=list(routed.guard_flags),
            cache_hit=bool(routed.cache_hit),
            sentinel_calls_saved=routed.sentinel_calls_saved,
            local_decision=routed.local_decision,
            served_path=routed.served_path,
            speculative_waste_tokens=routed.waste_usage.input_tokens + routed.waste_usage.output_tokens,
            speculative_waste_cost=waste_cost,
        )
