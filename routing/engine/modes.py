"""How a request gets its decision: guard, decision cache, local/tiered/LLM sentinel, and the
speculative and chained execution modes. `Gateway.route` calls `decide`.

Sentinel kinds recorded on the decision row: `llm`, `local`, `tiered-local` (the local
classifier was confident enough), `tiered-llm` (it was not; the LLM decided and both
answers are recorded), `cache`. `served_path` says how the answer was obtained:
`plain`, `speculative` (the cheap executor started beside the sentinel and its answer
was used), `speculative_cancelled` (the decision went elsewhere: the cheap call was
cancelled and its cost recorded as waste), `speculative_failed`, `chained` (one cheap
call emitted the decision and answered), `chained_fallback` (it emitted the decision
only; the routed executor answered).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from routing.providers.base import Completion, Message, ProviderError

from .cache import CachedDecision, DecisionCache, SharedDecisionCache
from .catalog import RouteSpec
from .guard import guard_text
from .policy import apply_policy
from .pricing import Usage, cost_of
from .resilience import Calls, CircuitBreaker, outcome_of
from .sentinel import (
    CHAINED_TAG,
    LLMSentinel,
    SentinelResult,
    build_chained_system_prompt,
    chained_user_turn,
    local_result,
    local_text,
    parse_chained,
)
from .tokens import estimate_tokens

if TYPE_CHECKING:
    from .dispatch import Gateway, GatewayRequest, Routed
    from .local_sentinel.model import Analysis, LocalSentinel

SENTINEL_CALLS = {"llm": 1, "local": 1, "tiered-local": 1, "tiered-llm": 2}


def cheap_route(gateway: Gateway) -> RouteSpec | None:
    """The route speculation and chaining bet on: the first cheap-tier route that calls a model."""
    for spec in gateway.catalog.routes.values():
        if spec.cheap_tier and spec.provider != "guardrail":
            return spec
    return None


def _executes(request: GatewayRequest) -> bool:
    return request.endpoint != "route"  # /api/v1/route only decides: nothing may be generated


class Speculation:
    """The cheap route's executor, started while the sentinel is still deciding.

    One call, no retries (if it fails, the normal path with its retries and fallback runs),
    bounded by the request's deadline, and skipped while the cheap model's circuit is open.
    Its attempt is logged as `executor` when its answer is served, else as `speculative`
    (the waste: what a finished call cost, or the prompt of a call cancelled in flight).
    """

    def __init__(self, gateway: Gateway, spec: RouteSpec, request: GatewayRequest, calls: Calls,
                 breaker: CircuitBreaker | None, timeout: float) -> None:
        self.gateway = gateway
        self.spec = spec
        self.calls = calls
        self.breaker = breaker
        self.started = time.perf_counter()
        self.estimated_input = estimate_tokens(request.all_text())
        self.price = gateway.catalog.prices.get(spec.model)
        provider = gateway.providers[spec.provider]
        max_tokens = min(request.max_tokens or spec.max_output_tokens, spec.max_output_tokens)

        async def run() -> Completion:
            async with asyncio.timeout(timeout):
                return await provider.complete(model=spec.model_version, system=request.system,
                                               messages=request.messages, max_tokens=max_tokens, timeout=timeout)

        self.task: asyncio.Task[Completion] = asyncio.create_task(run())
        # A cancelled or failed speculation must not log "exception was never retrieved".
        self.task.add_done_callback(lambda t: t.cancelled() or t.exception())

    @classmethod
    def start(cls, gateway: Gateway, spec: RouteSpec, request: GatewayRequest, calls: Calls) -> Speculation | None:
        """A speculation, unless the cheap model's circuit is open or the deadline leaves no time."""
        provider = gateway.providers[spec.provider]
        timeout = calls.deadline.timeout_for(provider.config.timeout_s)
        breaker = calls.breaker(spec.provider, spec.model_version)
        if timeout <= 0 or (breaker is not None and not breaker.allow()):
            return None
        return cls(gateway, spec, request, calls, breaker, timeout)

    def _log(self, role: str, outcome: str, *, error: BaseException | None = None, usage: Usage | None = None) -> None:
        self.calls.log(role, self.spec.provider, self.spec.model_version, started=self.started, outcome=outcome,
                       error=error, usage=usage, price=self.price)

    async def settle(self, routed: Routed) -> None:
        """The decision landed on the cheap route: wait for the answer already on its way."""
        routed.speculation = None
        try:
            completion = await self.task
        except (ProviderError, TimeoutError) as exc:
            self._log("speculative", outcome_of(exc), error=exc)
            Calls.judge(self.breaker, exc)
            routed.served_path = "speculative_failed"  # the normal path (with fallbacks) runs instead
            return
        self._log("executor", "ok", usage=completion.usage)
        Calls.judge(self.breaker, None)
        routed.prefetched, routed.prefetched_spec = completion, self.spec
        routed.prefetched_ms = (time.perf_counter() - self.started) * 1000
        routed.served_path = "speculative"

    def cancel(self, routed: Routed) -> None:
        """The decision went elsewhere: abort the call and count what it cost.

        A finished call was billed in full (its reported usage). An unfinished one is
        cancelled, which closes the HTTP connection; the provider may already have
        read the prompt, so the prompt counts as consumed (no output was received).
        """
        routed.speculation = None
        routed.served_path = "speculative_cancelled"
        if self.task.done() and not self.task.cancelled() and self.task.exception() is None:
            usage = self.task.result().usage
            self._log("speculative", "ok", usage=usage)
            Calls.judge(self.breaker, None)
        elif self.task.done():
            usage = Usage()  # it failed before we cancelled: an error is not billed
            error = None if self.task.cancelled() else self.task.exception()
            self._log("speculative", outcome_of(error) if error else "cancelled", error=error)
            Calls.judge(self.breaker, error if error is not None else asyncio.CancelledError())
        else:
            usage = Usage(input_tokens=self.estimated_input)
            self.task.cancel()
            self._log("speculative", "cancelled", usage=usage)
            Calls.judge(self.breaker, asyncio.CancelledError())
        routed.waste_usage = usage
        routed.waste_cost = cost_of(usage, self.price)

    abandon = cancel


async def _local(gateway: Gateway) -> LocalSentinel:
    return await gateway.local_model.aget()


async def _cache_lookup(
    gateway: Gateway, cache: DecisionCache, app: object, text: str, analysis: Analysis | None, model: LocalSentinel
) -> Any:
    threshold = gateway.modes.cache_similarity_threshold
    vector = analysis.embedding if analysis is not None else None

    def verify(entry: CachedDecision) -> bool:
        # A near neighbour can read differently ("bake a cake" / "make a bomb"): reuse its
        # decision only when the local classifier agrees on the route for this text.
        return analysis is not None and model.top_route(analysis) == entry.decision.route

    if isinstance(cache, SharedDecisionCache):
        await cache.aensure_policy(gateway.policy.version_id)
        return await cache.alookup(app, text, vector, threshold=threshold, routes=gateway.catalog.route_names(),
                                   verify=verify)
    cache.ensure_policy(gateway.policy.version_id)
    return cache.lookup(app, text, vector, threshold=threshold, verify=verify)


async def _cache_store(cache: DecisionCache, app: object, text: str, analysis: Analysis | None,
                       entry: CachedDecision) -> None:
    vector = analysis.embedding if analysis is not None else None
    if isinstance(cache, SharedDecisionCache):
        await cache.astore(app, text, vector, entry)
    else:
        cache.store(app, text, vector, entry)


async def _chained(gateway: Gateway, request: GatewayRequest, text: str, spec: RouteSpec, calls: Calls) -> tuple[
    SentinelResult, str | None, Completion | None
]:
    """One cheap call that emits the decision and, for a confident simple_qa, the answer."""
    policy = gateway.policy
    started = time.perf_counter()
    result = SentinelResult(kind="llm", model=spec.model_version, decision=None, price_model=spec.model)
    provider = gateway.providers.get(spec.provider)
    if provider is None:
        result.failure = f"chained provider {spec.provider!r} unavailable"
        return result, None, None
    system = build_chained_system_prompt(gateway.catalog, policy.confidence_threshold)
    if request.system:
        system += ("\n\nWhen you answer, follow the application's own instructions:\n<application_instructions>\n"
                   + request.system + "\n</application_instructions>")
    answer_tokens = min(request.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
    limit = min(policy.request_deadline_s, policy.sentinel_timeout_s + 30.0)
    messages = [Message(role="user", content=chained_user_turn(text, policy.confidence_threshold))]

    def call(timeout: float) -> Awaitable[Completion]:
        return provider.complete(model=spec.model_version, system=system, messages=messages,
                                 max_tokens=policy.sentinel_max_tokens + answer_tokens, timeout=timeout)

    completion: Completion | None = None
    try:
        completion = await calls.call(
            call, role="sentinel", provider=spec.provider, model=spec.model_version,
            limit=min(limit, provider.config.timeout_s), price=gateway.catalog.prices.get(spec.model),
            budget=calls.deadline.sub(limit),
        )
    except ProviderError as exc:
        if exc.kind in ("timeout", "deadline"):
            result.failure = f"chained call timeout after {limit:.1f}s"
        else:
            result.failure = f"chained call provider error: {exc}"
    answer = None
    if completion is not None:
        parsed = parse_chained(completion.text, routes=gateway.catalog.route_names(), tools=gateway.catalog.tools)
        result.decision, result.failure, answer = parsed.decision, parsed.failure, parsed.answer
        result.raw = parsed.decision.to_dict() if parsed.decision else completion.text[:2000]
        result.usage, result.model_version = completion.usage, completion.model_version
    result.latency_ms = (time.perf_counter() - started) * 1000
    return result, answer, completion


async def _ask_llm(
    gateway: Gateway, request: GatewayRequest, routed: Routed, messages: list[Message], text: str
) -> SentinelResult:
    """The LLM sentinel (or the chained call), with speculation beside it when the policy says so."""
    policy, modes = gateway.policy, gateway.modes
    spec = cheap_route(gateway)
    if modes.chained and _executes(request) and spec is not None:
        result, answer, completion = await _chained(gateway, request, text, spec, routed.calls)
        routed.served_path = "chained_fallback"
        if answer and completion is not None:
            routed.prefetched = Completion(answer, completion.usage, completion.model_version,
                                           completion.finish_reason)
            routed.prefetched_spec = spec
            routed.prefetched_ms = result.latency_ms
        return result
    if modes.speculative and _executes(request) and spec is not None and spec.provider in gateway.providers:
        routed.speculation = Speculation.start(gateway, spec, request, routed.calls)
    provider = gateway.providers.get(policy.sentinel_provider)
    if provider is None:
        return SentinelResult(kind="llm", model=policy.sentinel_model_version, decision=None,
                              failure=f"sentinel provider {policy.sentinel_provider!r} unavailable")
    return await LLMSentinel(provider).decide(messages, catalog=gateway.catalog, policy=policy, calls=routed.calls)


async def decide(gateway: Gateway, request: GatewayRequest, routed: Routed) -> None:
    """Fill `routed` with the sentinel result, the policy outcome and the route.

    1. Guard every message (normalise, cap); user turns are scanned for routing attacks.
    2. Featurise once with the local classifier when anything needs it (local/tiered mode,
       or the decision cache): the same analysis gives the cache vector and the local decision.
    3. Decision cache (not for flagged requests): a hit is the decision; calls saved recorded.
    4. Otherwise the sentinel the policy's mode names: local; tiered (local when its
       confidence >= local_threshold, else the LLM, both recorded); llm. The LLM step may be
       the chained call, or run beside a speculative cheap executor.
    5. A guard flag forces `route_override_attempted` on the decision (the policy escalates).
    6. A fresh, valid, unflagged decision is stored in the cache.
    7. Policy. Speculation is kept only when the route is the cheap route, else cancelled;
       a chained answer is kept only when the policy accepted the chained route as decided.
    """
    policy, modes = gateway.policy, gateway.modes
    # 1. guard
    messages: list[Message] = []
    flags: list[str] = []
    for m in request.messages:
        guarded = guard_text(m.content)
        messages.append(Message(role=m.role, content=guarded.text))
        if m.role == "user":
            flags.extend(f for f in guarded.flags if f not in flags)
    routed.guard_flags = tuple(flags)
    text = local_text(messages)
    app = request.application_id

    # 2. local analysis
    mode = policy.sentinel_mode
    cache = gateway.cache if modes.cache_enabled else None
    model: LocalSentinel | None = None
    analysis: Analysis | None = None
    if mode in ("local", "tiered") or cache is not None:
        model = await _local(gateway)
        analysis = model.analyse(text)

    # 3. cache
    sentinel: SentinelResult | None = None
    if cache is not None and not flags and model is not None:
        started = time.perf_counter()
        hit = await _cache_lookup(gateway, cache, app, text, analysis, model)
        if hit is not None:
            entry = hit.entry
            sentinel = SentinelResult(kind="cache", model=entry.model, decision=entry.decision,
                                      raw=entry.decision.to_dict(), model_version=entry.kind)
            sentinel.latency_ms = (time.perf_counter() - started) * 1000
            routed.cache_hit = hit.match
            routed.sentinel_calls_saved = entry.calls

    # 4. sentinel
    if sentinel is None:
        if mode in ("local", "tiered"):
            assert model is not None and analysis is not None
            local = local_result(model, text, analysis)
            routed.local_decision = local.info
            if mode == "local":
                sentinel = local
            elif local.decision is not None and local.decision.confidence >= policy.local_threshold:
                sentinel = dataclasses.replace(local, kind="tiered-local")
            else:
                sentinel = await _ask_llm(gateway, request, routed, messages, text)
                sentinel.kind = "tiered-llm"
                sentinel.latency_ms += local.latency_ms
        else:
            sentinel = await _ask_llm(gateway, request, routed, messages, text)
        # 6. cache store (a chained call's decision is as good as the LLM sentinel's)
        if cache is not None and not flags and sentinel.decision is not None:
            entry = CachedDecision(sentinel.decision, sentinel.kind, SENTINEL_CALLS.get(sentinel.kind, 1),
                                   cache.clock(), sentinel.model)
            await _cache_store(cache, app, text, analysis, entry)

    # 5. guard flags
    if flags and sentinel.decision is not None and not sentinel.decision.route_override_attempted:
        sentinel.decision = dataclasses.replace(sentinel.decision, route_override_attempted=True)

    # 7. policy and the execution modes
    outcome = apply_policy(sentinel.decision, policy=policy, catalog=gateway.catalog, failure=sentinel.failure)
    routed.sentinel, routed.outcome = sentinel, outcome
    routed.route = gateway._route_spec(outcome.route)
    if routed.speculation is not None and routed.route.name != routed.speculation.spec.name:
        routed.speculation.cancel(routed)
    if routed.served_path.startswith("chained"):
        if routed.prefetched is not None and routed.route.name == routed.prefetched_spec.name and not outcome.escalated:
            routed.served_path = "chained"
            # The one call was the executor: its whole usage is the executor's, none the sentinel's.
            sentinel.usage = Usage()
            served = next((a for a in reversed(routed.calls.attempts) if a.role == "sentinel" and a.outcome == "ok"),
                          None)
            if served is not None:
                served.role = "executor"
        else:
            routed.prefetched = routed.prefetched_spec = None  # escalated or re-routed: the normal path answers


__all__ = ["CHAINED_TAG", "Speculation", "cheap_route", "decide"]
