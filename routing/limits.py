"""Per-key rate limits and spend budgets, and the agentic caps (issue 7).

Every limit is a counter that a request reserves against *before* anything is spent. One
reservation checks and increments all the counters it touches at once, atomically: in Redis
(one Lua script, so every web process shares the counters) when `GATEWAY_LIMITS_REDIS_URL`
(default `REDIS_URL`) is set, else in this process under one lock. Concurrent requests therefore
never overshoot a limit: the last one that does not fit is refused.

A request goes through up to three reservations, then one settlement:
1. After authentication: one request against `requests_per_minute` (never given back).
2. Before routing: the worst-case cost of deciding (the LLM sentinel, the chained call, a
   speculative cheap executor) against the daily and monthly budgets. The sentinel is paid for
   even when the request is refused later, so it has to fit first.
3. After routing, before the executor: the executor's worst case - estimated input tokens plus
   `GATEWAY_LIMITS_INPUT_HEADROOM_PCT`, plus the most output the route allows, priced at the
   dearer of the route's executor and its fallback - against `tokens_per_minute`, the task's token
   budget (`x-task-id`) and both budgets. `/api/v1/route` (decide only) skips this step.
4. Settle, once, with the decision row: its executor tokens and its cost replace what was
   reserved (the unused part is given back). A request that never reached the executor gives its
   step-3 reservation back; one cut off while the executor ran keeps it (the provider may bill it).

Minute limits are sliding windows (a request or token counts for 60 s from its reservation, so no
burst at a minute boundary); budgets are per UTC day and UTC month. Money is counted in integer
nanodollars - reservations and costs rounded up, budgets down - so the counters never undercount a
Decimal cost. Tokens count the executor's input and output (what the client sends and receives).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from django.conf import settings

from routing.engine.decision import decision_json_schema
from routing.engine.modes import cheap_route
from routing.engine.pricing import Usage, cost_of
from routing.engine.sentinel import build_chained_system_prompt, build_system_prompt, sentinel_view
from routing.engine.tokens import estimate_tokens

if TYPE_CHECKING:
    from routing.engine.catalog import RouteSpec
    from routing.engine.dispatch import Gateway, GatewayRequest, Routed
    from routing.runtime import KeyInfo

log = logging.getLogger("routing.limits")

NANO = Decimal(1_000_000_000)
MINUTE_MS = 60_000
# Budgets are counted in nanodollars, and Lua compares numbers as doubles: exact below 2**53.
MAX_BUDGET = Decimal(1_000_000)
# A calendar counter outlives its period a little, so a settlement that lands after midnight
# still corrects the day it was reserved in (the next day has its own key).
CALENDAR_GRACE_MS = 3_600_000


def to_nanos(amount: Decimal) -> int:
    """A cost in whole nanodollars, rounded up (a reservation never undercounts)."""
    return int((amount * NANO).to_integral_value(rounding=ROUND_CEILING))


def budget_nanos(amount: Decimal) -> int:
    """A budget in whole nanodollars, rounded down (a budget is never exceeded by rounding)."""
    return int((amount * NANO).to_integral_value(rounding=ROUND_FLOOR))


# ---- counters and refusals -----------------------------------------------------------------------


@dataclass(frozen=True)
class Counter:
    """One limit as the backends see it.

    kind: `window` (sliding, `span_ms` long), `calendar` (a UTC day or month ending at
    `ends_at_ms`; the period is in the key), or `ttl` (a total that expires `span_ms` after
    its first reservation: the task budget).
    """

    name: str
    key: str
    kind: str
    limit: int
    span_ms: int = 0
    ends_at_ms: int = 0


@dataclass(frozen=True)
class Refusal:
    counter: Counter
    amount: int
    retry_after_ms: int | None  # None: this amount can never fit under the limit


class LimitExceeded(Exception):
    """A request refused by a limit: HTTP 429 in every dialect, with `retry-after` (seconds)."""

    status = 429

    def __init__(self, code: str, message: str, *, retry_after_s: int, retryable: bool = True,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = max(1, retry_after_s)
        self.retryable = retryable  # False: the same request will never pass (x-should-retry: false)
        self.field = field
        self.headers: dict[str, str] = {}


class LimitsUnavailable(LimitExceeded):
    """The shared counters cannot be reached: a key with limits is refused (503), never let through."""

    status = 503

    def __init__(self, detail: str) -> None:
        super().__init__("limits_unavailable", f"the rate-limit store is unavailable ({detail}); retry shortly",
                         retry_after_s=1)


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


def _money(nanos: int) -> str:
    return f"${(Decimal(nanos) / NANO).normalize():f}"


def refusal_error(refusal: Refusal, now_ms: int, *, task_id: str | None = None) -> LimitExceeded:
    """The 429 for a refusal: which limit, how much was asked, and when to retry.

    `retry-after` is when enough of the window frees, or when the day or month resets. A request
    that can never fit (more than the whole limit) or a spent task budget says not to retry
    (`x-should-retry: false`, which the OpenAI and Anthropic SDKs honour).
    """
    counter, amount = refusal.counter, refusal.amount
    never = refusal.retry_after_ms is None
    if counter.kind == "calendar":
        retry_ms = counter.ends_at_ms - now_ms
    elif never:
        retry_ms = counter.span_ms
    else:
        retry_ms = refusal.retry_after_ms or 0
    retry = _seconds(retry_ms)
    name = counter.name
    if name == "requests_per_minute":
        message = f"this key allows {counter.limit} requests per minute; retry in {retry} s"
    elif name == "tokens_per_minute":
        message = (f"this key allows {counter.limit} tokens per minute and this request may use up to {amount} "
                   "(estimated input plus max output tokens); "
                   + ("lower max_tokens or shorten the input" if never else f"retry in {retry} s"))
    elif name in ("daily_budget", "monthly_budget"):
        period = "UTC day" if name == "daily_budget" else "UTC month"
        message = (f"this key's {name.replace('_', ' ')} of {_money(counter.limit)} per {period} is spent or "
                   f"reserved by requests in flight (this request may cost up to {_money(amount)}); "
                   f"it resets in {retry} s")
    else:  # task_token_budget
        message = (f"task {task_id!r} has used its budget of {counter.limit} tokens "
                   f"(this request may use up to {amount}); start a new task")
        never = True  # the same task will not get more tokens by retrying
    return LimitExceeded(f"{name}_exceeded", message, retry_after_s=retry, retryable=not never)


def tool_rounds_error(rounds: int, limit: int) -> LimitExceeded:
    return LimitExceeded(
        "tool_rounds_exceeded",
        f"the conversation holds {rounds} tool-call rounds; at most {limit} are allowed per task "
        "(GATEWAY_MAX_TOOL_ROUNDS): finish the task or start a new one",
        retry_after_s=60, retryable=False, field="messages",
    )


# ---- backends ------------------------------------------------------------------------------------

Items = Sequence[tuple[Counter, int]]


class _Window:
    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, list[int]] = OrderedDict()  # rid -> [reserved at ms, amount]
        self.total = 0

    def trim(self, now_ms: int, span_ms: int) -> None:
        cutoff = now_ms - span_ms
        while self.entries:
            rid, (at, amount) = next(iter(self.entries.items()))
            if at > cutoff:
                break
            del self.entries[rid]
            self.total -= amount

    def retry_ms(self, now_ms: int, span_ms: int, need: int) -> int:
        freed = 0
        for at, amount in self.entries.values():
            freed += amount
            if freed >= need:
                return min(at + span_ms - now_ms, span_ms)  # another thread's clock may be a bit ahead
        return span_ms


class MemoryBackend:
    """Counters in this process, behind one lock: safe from any thread or event loop.

    The embedded default (one web process). Every operation is a few dictionary updates, so
    the lock is held for microseconds and never across an await.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._totals: dict[str, list[int]] = {}  # key -> [value, expires at ms]
        self._ops = 0

    def _total(self, counter: Counter, now_ms: int) -> list[int] | None:
        slot = self._totals.get(counter.key)
        if slot is not None and slot[1] <= now_ms:
            del self._totals[counter.key]
            return None
        return slot

    def _used(self, counter: Counter, now_ms: int) -> int:
        if counter.kind == "window":
            window = self._windows.get(counter.key)
            if window is None:
                return 0
            window.trim(now_ms, counter.span_ms)
            return window.total
        slot = self._total(counter, now_ms)
        return slot[0] if slot else 0

    def _retry_ms(self, counter: Counter, used: int, amount: int, now_ms: int) -> int | None:
        if amount > counter.limit:
            return None
        if counter.kind == "calendar":
            return counter.ends_at_ms - now_ms
        if counter.kind == "ttl":
            slot = self._total(counter, now_ms)
            return slot[1] - now_ms if slot else counter.span_ms
        return self._windows[counter.key].retry_ms(now_ms, counter.span_ms, used + amount - counter.limit)

    def reserve_sync(self, now_ms: int, rid: str, items: Items) -> Refusal | None:
        with self._lock:
            for counter, amount in items:
                used = self._used(counter, now_ms)
                if used + amount > counter.limit:
                    return Refusal(counter, amount, self._retry_ms(counter, used, amount, now_ms))
            for counter, amount in items:
                if counter.kind == "window":
                    if amount:
                        window = self._windows.setdefault(counter.key, _Window())
                        entry = window.entries.setdefault(rid, [now_ms, 0])
                        entry[1] += amount
                        window.total += amount
                    continue
                slot = self._total(counter, now_ms)
                if slot is None:
                    expires = (counter.ends_at_ms + CALENDAR_GRACE_MS if counter.kind == "calendar"
                               else now_ms + counter.span_ms)
                    slot = self._totals[counter.key] = [0, expires]
                slot[0] += amount
            self._sweep(now_ms)
        return None

    def adjust_sync(self, now_ms: int, rid: str, items: Items) -> None:
        with self._lock:
            for counter, delta in items:
                if counter.kind == "window":
                    window = self._windows.get(counter.key)
                    entry = window.entries.get(rid) if window else None
                    if window is not None and entry is not None:  # else it has left the window already
                        entry[1] += delta
                        window.total += delta
                    continue
                slot = self._total(counter, now_ms)
                if slot is not None:
                    slot[0] += delta

    def _sweep(self, now_ms: int) -> None:
        """Now and then, drop expired totals and empty windows (idle keys and finished tasks)."""
        self._ops += 1
        if self._ops % 1024:
            return
        for key in [k for k, slot in self._totals.items() if slot[1] <= now_ms]:
            del self._totals[key]
        for key in [k for k, w in self._windows.items() if not w.entries]:
            del self._windows[key]

    async def reserve(self, now_ms: int, rid: str, items: Items) -> Refusal | None:
        return self.reserve_sync(now_ms, rid, items)

    async def read(self, now_ms: int, counters: Sequence[Counter]) -> list[int]:
        with self._lock:
            return [self._used(counter, now_ms) for counter in counters]

    async def adjust(self, now_ms: int, rid: str, items: Items) -> None:
        self.adjust_sync(now_ms, rid, items)


# KEYS: per counter, two keys for a window (a sorted set of reservation ids by time, and a hash of
# their amounts with the running total in field "~total"), one for a calendar or ttl total.
# ARGV: now_ms, rid, then per counter: kind (w/c/t), amount, limit, span_ms, ends_at_ms, expiry
# (w: PEXPIRE ms; c and t: PXAT ms, on the caller's clock). `used(c)` drops what has left a window and
# returns its count. Needs Redis >= 7.0 (PEXPIRETIME).
_LUA_COUNTERS = """
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local counters = {}
local k, a = 1, 3
while a <= #ARGV do
  local c = {kind = ARGV[a], amount_s = ARGV[a + 1], amount = tonumber(ARGV[a + 1]), limit = tonumber(ARGV[a + 2]),
             span = tonumber(ARGV[a + 3]), ends = tonumber(ARGV[a + 4]), expiry = ARGV[a + 5], key = KEYS[k]}
  if c.kind == 'w' then c.hash = KEYS[k + 1]; k = k + 2 else k = k + 1 end
  a = a + 6
  counters[#counters + 1] = c
end

local function used(c)
  if c.kind ~= 'w' then return tonumber(redis.call('GET', c.key) or '0') end
  local cutoff = string.format('%d', now - c.span)
  while true do
    local old = redis.call('ZRANGEBYSCORE', c.key, '-inf', cutoff, 'LIMIT', 0, 256)
    if #old == 0 then break end
    local amounts = redis.call('HMGET', c.hash, unpack(old))
    local freed = 0
    for _, v in ipairs(amounts) do freed = freed + (tonumber(v) or 0) end
    redis.call('ZREM', c.key, unpack(old))
    redis.call('HDEL', c.hash, unpack(old))
    redis.call('HINCRBY', c.hash, '~total', string.format('%d', -freed))
  end
  return tonumber(redis.call('HGET', c.hash, '~total') or '0')
end
"""

# Returns {1}, or {0, counter index, retry ms (-1: never fits)}.
RESERVE_LUA = _LUA_COUNTERS + """
local function retry_ms(c, current)
  if c.amount > c.limit then return -1 end
  if c.kind == 'c' then return c.ends - now end
  if c.kind == 't' then
    local expires = redis.call('PEXPIRETIME', c.key)
    if expires < 0 then return c.span end
    return expires - now
  end
  local need = current + c.amount - c.limit
  local entries = redis.call('ZRANGE', c.key, 0, -1, 'WITHSCORES')
  local freed = 0
  for i = 1, #entries, 2 do
    freed = freed + (tonumber(redis.call('HGET', c.hash, entries[i])) or 0)
    -- (a process may reserve with a clock a little ahead of ours: never more than the window)
    if freed >= need then return math.min(tonumber(entries[i + 1]) + c.span - now, c.span) end
  end
  return c.span
end

for i, c in ipairs(counters) do
  local current = used(c)
  if current + c.amount > c.limit then return {0, i, retry_ms(c, current)} end
end
for _, c in ipairs(counters) do
  if c.kind == 'w' then
    if c.amount > 0 then
      redis.call('ZADD', c.key, 'NX', ARGV[1], rid)
      redis.call('HINCRBY', c.hash, rid, c.amount_s)
      redis.call('HINCRBY', c.hash, '~total', c.amount_s)
      redis.call('PEXPIRE', c.key, c.expiry)
      redis.call('PEXPIRE', c.hash, c.expiry)
    end
  else
    redis.call('SET', c.key, '0', 'NX', 'PXAT', c.expiry)
    redis.call('INCRBY', c.key, c.amount_s)
  end
end
return {1}
"""

# Returns what each counter holds now.
READ_LUA = _LUA_COUNTERS + """
local out = {}
for i, c in ipairs(counters) do out[i] = used(c) end
return out
"""

# KEYS as for RESERVE_LUA; ARGV: rid, then per counter: kind, delta. A window reservation that has
# already left its window, or a total whose period has expired, is left alone.
ADJUST_LUA = """
local rid = ARGV[1]
local k, a = 1, 2
while a <= #ARGV do
  local kind, delta = ARGV[a], ARGV[a + 1]
  if kind == 'w' then
    local hash = KEYS[k + 1]
    if redis.call('HEXISTS', hash, rid) == 1 then
      redis.call('HINCRBY', hash, rid, delta)
      redis.call('HINCRBY', hash, '~total', delta)
    end
    k = k + 2
  else
    if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('INCRBY', KEYS[k], delta) end
    k = k + 1
  end
  a = a + 2
end
return 1
"""

_KIND = {"window": "w", "calendar": "c", "ttl": "t"}


def _keys(counter: Counter) -> list[str]:
    return [counter.key + ":z", counter.key + ":h"] if counter.kind == "window" else [counter.key]


class RedisBackend:
    """Counters in Redis, shared by every web process; each call is one atomic Lua script.

    A redis.asyncio client (and its registered scripts) per event loop, as the decision cache does.
    """

    def __init__(self, url: str, *, timeout_s: float = 1.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, ...]] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> tuple[Any, ...]:
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            client = aioredis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                             socket_connect_timeout=self.timeout_s)
            entry = (client, client.register_script(RESERVE_LUA), client.register_script(ADJUST_LUA),
                     client.register_script(READ_LUA))
            self._clients[loop] = entry
        return entry

    @staticmethod
    def _reserve_args(now_ms: int, rid: str, items: Items) -> tuple[list[str], list[Any]]:
        keys: list[str] = []
        args: list[Any] = [now_ms, rid]
        for counter, amount in items:
            keys += _keys(counter)
            if counter.kind == "window":
                expiry = counter.span_ms + MINUTE_MS
            elif counter.kind == "calendar":
                expiry = counter.ends_at_ms + CALENDAR_GRACE_MS
            else:
                expiry = now_ms + counter.span_ms  # only set when the task's count is created
            args += [_KIND[counter.kind], amount, counter.limit, counter.span_ms, counter.ends_at_ms, expiry]
        return keys, args

    async def _run(self, which: int, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import RedisError

        script = self._client()[which]
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise LimitsUnavailable(type(exc).__name__) from exc

    async def reserve(self, now_ms: int, rid: str, items: Items) -> Refusal | None:
        result = await self._run(1, *self._reserve_args(now_ms, rid, items))
        if int(result[0]) == 1:
            return None
        counter, amount = items[int(result[1]) - 1]
        retry = int(result[2])
        return Refusal(counter, amount, None if retry < 0 else retry)

    async def adjust(self, now_ms: int, rid: str, items: Items) -> None:
        keys: list[str] = []
        args: list[Any] = [rid]
        for counter, delta in items:
            keys += _keys(counter)
            args += [_KIND[counter.kind], delta]
        await self._run(2, keys, args)

    async def read(self, now_ms: int, counters: Sequence[Counter]) -> list[int]:
        result = await self._run(3, *self._reserve_args(now_ms, "", [(c, 0) for c in counters]))
        return [int(value) for value in result]


Backend = MemoryBackend | RedisBackend


# ---- worst cases ---------------------------------------------------------------------------------


def input_allowance(estimated: int, messages: int, headroom_pct: int) -> int:
    """Input tokens to reserve for an estimate: the headroom, plus per-message framing."""
    return math.ceil(estimated * (100 + headroom_pct) / 100) + 8 * messages + 16


def _max_output(spec: RouteSpec, greq: GatewayRequest) -> int:
    return min(greq.max_tokens or spec.max_output_tokens, spec.max_output_tokens)


def _executor_cost(gateway: Gateway, spec: RouteSpec, input_tokens: int, greq: GatewayRequest) -> Decimal:
    if spec.provider == "guardrail":
        return Decimal(0)
    return cost_of(Usage(input_tokens=input_tokens, output_tokens=_max_output(spec, greq)),
                   gateway.catalog.prices.get(spec.model))


def routing_worst_case(gateway: Gateway, greq: GatewayRequest, headroom_pct: int) -> Decimal:
    """The most that deciding this request can cost: the calls `modes.decide` may make.

    An explicit model or the local classifier costs nothing; otherwise the LLM sentinel (its
    system prompt, schema and the request text; `sentinel_max_tokens` out), or instead the
    chained call on the cheap route, plus the speculative cheap executor when the policy runs one.
    A decision-cache hit costs less than this; the settlement gives the difference back.
    """
    policy, modes, catalog = gateway.policy, gateway.modes, gateway.catalog
    if greq.explicit_model or policy.sentinel_mode == "local" or not greq.messages:
        return Decimal(0)
    view = estimate_tokens(sentinel_view(greq.messages)[0].content)
    executes = greq.endpoint != "route"
    cheap = cheap_route(gateway)
    if modes.chained and executes and cheap is not None:
        prompt = build_chained_system_prompt(catalog, policy.confidence_threshold) + (greq.system or "")
        tokens = input_allowance(view + estimate_tokens(prompt), 2, headroom_pct)
        usage = Usage(input_tokens=tokens, output_tokens=policy.sentinel_max_tokens + _max_output(cheap, greq))
        return cost_of(usage, catalog.prices.get(cheap.model))
    prompt = build_system_prompt(catalog, policy.sentinel_prompt_version)
    schema = json.dumps(decision_json_schema(catalog.route_names(), catalog.tools))
    tokens = input_allowance(view + estimate_tokens(prompt) + estimate_tokens(schema), 2, headroom_pct)
    total = cost_of(Usage(input_tokens=tokens, output_tokens=policy.sentinel_max_tokens),
                    catalog.prices.get(policy.sentinel_model))
    if modes.speculative and executes and cheap is not None:
        estimated = input_allowance(estimate_tokens(greq.all_text()), len(greq.messages), headroom_pct)
        total += _executor_cost(gateway, cheap, estimated, greq)
    return total


def execution_worst_case(gateway: Gateway, routed: Routed, greq: GatewayRequest,
                         headroom_pct: int) -> tuple[int, Decimal]:
    """(tokens, cost) the executor can use at most: estimated input plus headroom and the most
    output the route allows, on the route's executor or its fallback, whichever is dearer.

    A chained answer already in hand costs nothing more (step 2 reserved it); its tokens are known.
    """
    if routed.served_path == "chained" and routed.prefetched is not None:
        usage = routed.prefetched.usage
        return usage.input_tokens + usage.output_tokens, Decimal(0)
    estimated = input_allowance(routed.estimated_input_tokens, len(greq.messages), headroom_pct)
    chain = [routed.route]
    fallback = routed.route.fallback
    if fallback and fallback != routed.route.name and fallback in gateway.catalog.routes:
        chain.append(gateway.catalog.routes[fallback])
    tokens = max(estimated + _max_output(spec, greq) for spec in chain)
    cost = max(_executor_cost(gateway, spec, estimated, greq) for spec in chain)
    if greq.stream:
        # A streamed attempt that fails after the provider reported the prompt (before any text
        # reached the client) bills the prompt and is retried: every other attempt may bill it.
        attempts = getattr(getattr(gateway, "retry", None), "max_attempts", 1) * len(chain)
        prompt = max((cost_of(Usage(input_tokens=estimated), gateway.catalog.prices.get(spec.model))
                      for spec in chain if spec.provider != "guardrail"), default=Decimal(0))
        cost += prompt * (attempts - 1)
    return tokens, cost


# ---- the limiter and one request's admission -----------------------------------------------------


def _period_ends(now: datetime) -> tuple[str, int, str, int]:
    """(day key, end of the UTC day in ms, month key, end of the UTC month in ms)."""
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = day_start + timedelta(days=1)
    month_start = day_start.replace(day=1)
    month_end = (month_start + timedelta(days=32)).replace(day=1)
    return (day_start.strftime("%Y%m%d"), int(day_end.timestamp() * 1000),
            month_start.strftime("%Y%m"), int(month_end.timestamp() * 1000))


class Limiter:
    """Builds each request's counters from its key's limits and talks to one backend."""

    def __init__(self, backend: Backend, *, prefix: str = "gw:limits", clock: Callable[[], float] = time.time,
                 headroom_pct: int = 25, max_tool_rounds: int = 12, task_token_budget: int = 0,
                 task_ttl_s: int = 86_400) -> None:
        self.backend = backend
        self.prefix = prefix
        self.clock = clock
        self.headroom_pct = headroom_pct
        self.max_tool_rounds = max_tool_rounds
        self.task_token_budget = task_token_budget
        self.task_ttl_s = task_ttl_s

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def base(self, key: KeyInfo) -> str:
        # The braces are a Redis Cluster hash tag: all of a key's counters live in one slot,
        # as one script's keys must. The public prefix is unique and never reused.
        return f"{self.prefix}:{{k:{key.prefix}}}"

    def counters(self, key: KeyInfo, *, task_id: str | None = None) -> dict[str, Counter]:
        """The counters of the key's limits (and of the task's budget), by limit name, for now."""
        counters: dict[str, Counter] = {}
        budgets = key.daily_budget is not None or key.monthly_budget is not None
        if key.requests_per_minute is None and key.tokens_per_minute is None and not budgets and (
                task_id is None or self.task_token_budget <= 0):
            return counters  # an unlimited key: nothing to count (the common case, kept cheap)
        base = self.base(key)
        if budgets:
            day, day_end, month, month_end = _period_ends(datetime.fromtimestamp(self.clock(), tz=UTC))
        if key.requests_per_minute is not None:
            counters["requests_per_minute"] = Counter("requests_per_minute", base + ":rpm", "window",
                                                      key.requests_per_minute, span_ms=MINUTE_MS)
        if key.tokens_per_minute is not None:
            counters["tokens_per_minute"] = Counter("tokens_per_minute", base + ":tpm", "window",
                                                    key.tokens_per_minute, span_ms=MINUTE_MS)
        if key.daily_budget is not None:
            counters["daily_budget"] = Counter("daily_budget", f"{base}:day:{day}", "calendar",
                                               budget_nanos(key.daily_budget), ends_at_ms=day_end)
        if key.monthly_budget is not None:
            counters["monthly_budget"] = Counter("monthly_budget", f"{base}:month:{month}", "calendar",
                                                 budget_nanos(key.monthly_budget), ends_at_ms=month_end)
        if task_id is not None and self.task_token_budget > 0:
            task = blake2b(task_id.encode(), digest_size=12).hexdigest()
            counters["task_token_budget"] = Counter("task_token_budget", f"{base}:task:{task}", "ttl",
                                                    self.task_token_budget, span_ms=self.task_ttl_s * 1000)
        return counters

    async def count_request(self, key: KeyInfo) -> None:
        """Step 1: one request against `requests_per_minute` (raises LimitExceeded)."""
        counter = self.counters(key).get("requests_per_minute")
        if counter is None:
            return
        now_ms = self.now_ms()
        refusal = await self.backend.reserve(now_ms, uuid.uuid4().hex, [(counter, 1)])
        if refusal is not None:
            raise refusal_error(refusal, now_ms)

    async def usage(self, key: KeyInfo, *, task_id: str | None = None) -> dict[str, int | Decimal]:
        """What each of the key's counters holds now (reserved and spent): requests and tokens
        in the last minute, USD spent today and this month, the task's tokens."""
        counters = self.counters(key, task_id=task_id)
        values = await self.backend.read(self.now_ms(), list(counters.values()))
        return {name: (Decimal(value) / NANO if counter.kind == "calendar" else value)
                for (name, counter), value in zip(counters.items(), values, strict=True)}

    def check_tool_rounds(self, rounds: int) -> None:
        """The agentic cap: a conversation may carry at most `max_tool_rounds` tool-call rounds."""
        if rounds > self.max_tool_rounds:
            raise tool_rounds_error(rounds, self.max_tool_rounds)

    def admission(self, key: KeyInfo, *, task_id: str | None = None) -> Admission:
        return Admission(self, key, task_id=task_id)


@dataclass
class Admission:
    """One request's reservations (steps 2 and 3) and their settlement (step 4).

    Use it as `async with`: leaving the block settles whatever is still open (see `finish`),
    unless a stream took it over (`hand_over`), which then settles it when it ends.
    """

    limiter: Limiter
    key: KeyInfo
    task_id: str | None = None
    rid: str = field(default_factory=lambda: uuid.uuid4().hex)
    reserved: dict[Counter, int] = field(default_factory=dict)
    execution: dict[Counter, int] = field(default_factory=dict)
    state: str = "open"  # open, executing, settled
    handed_over: bool = False
    spend: list[Counter] = field(init=False)  # the budgets, in nanodollars
    tokens: list[Counter] = field(init=False)  # tokens per minute and the task's budget

    def __post_init__(self) -> None:
        # The periods are fixed when the request arrives: one straddling midnight settles the day
        # it reserved in.
        counters = self.limiter.counters(self.key, task_id=self.task_id)
        self.spend = [c for name, c in counters.items() if name in ("daily_budget", "monthly_budget")]
        self.tokens = [c for name, c in counters.items() if name in ("tokens_per_minute", "task_token_budget")]

    # -- steps 2 and 3 --------------------------------------------------------------------------
    async def _reserve(self, items: list[tuple[Counter, int]]) -> None:
        if not items:
            return
        now_ms = self.limiter.now_ms()
        refusal = await self.limiter.backend.reserve(now_ms, self.rid, items)
        if refusal is not None:
            raise refusal_error(refusal, now_ms, task_id=self.task_id)
        for counter, amount in items:
            self.reserved[counter] = self.reserved.get(counter, 0) + amount

    async def reserve_routing(self, cost: Decimal) -> None:
        """Step 2: the worst-case cost of deciding, against the budgets."""
        await self._reserve([(counter, to_nanos(cost)) for counter in self.spend])

    async def reserve_execution(self, tokens: int, cost: Decimal) -> None:
        """Step 3: the executor's worst-case tokens and cost, all counters at once."""
        items = [(counter, tokens) for counter in self.tokens] + [(c, to_nanos(cost)) for c in self.spend]
        await self._reserve(items)
        for counter, amount in items:
            self.execution[counter] = self.execution.get(counter, 0) + amount

    async def reserve_for(self, gateway: Gateway, greq: GatewayRequest) -> None:
        if self.spend:
            await self.reserve_routing(routing_worst_case(gateway, greq, self.limiter.headroom_pct))

    async def reserve_execution_for(self, gateway: Gateway, routed: Routed, greq: GatewayRequest) -> None:
        if self.spend or self.tokens:
            await self.reserve_execution(*execution_worst_case(gateway, routed, greq, self.limiter.headroom_pct))

    def executing(self) -> None:
        """The executor is about to be called: from now on an unsettled end keeps the reservation."""
        if self.state == "open":
            self.state = "executing"

    # -- step 4 ---------------------------------------------------------------------------------
    async def _adjust(self, deltas: list[tuple[Counter, int]]) -> None:
        deltas = [(counter, delta) for counter, delta in deltas if delta]
        if not deltas:
            return
        try:
            await self.limiter.backend.adjust(self.limiter.now_ms(), self.rid, deltas)
        except LimitsUnavailable:
            # The reservation stays counted: conservative, and a minute window frees itself.
            log.warning("could not settle limit reservation %s for key %s", self.rid, self.key.prefix)

    async def settle(self, *, tokens: int, cost: Decimal) -> None:
        """Replace what was reserved by what was spent (executor tokens, the row's cost). Once."""
        if self.state == "settled":
            return
        self.state = "settled"
        spent = to_nanos(cost)
        deltas = [(counter, (spent if counter in self.spend else tokens) - amount)
                  for counter, amount in self.reserved.items()]
        await self._adjust(deltas)

    async def finish(self) -> None:
        """Settle a request that ended without a decision row.

        Before the executor was called, step 3 is given back (the decision's cost may have been
        paid, so step 2 stays). Once it was called, everything stays: the provider may bill it.
        """
        if self.state == "settled":
            return
        state, self.state = self.state, "settled"
        if state == "open":
            await self._adjust([(counter, -amount) for counter, amount in self.execution.items()])

    def hand_over(self, owner: object) -> None:
        """A stream now owns the settlement. If it is dropped unstarted, `finish` still runs."""
        self.handed_over = True
        loop = asyncio.get_running_loop()

        def abandoned(admission: Admission = self) -> None:
            if admission.state != "settled" and not loop.is_closed():
                loop.call_soon_threadsafe(lambda: loop.create_task(admission.finish()))

        weakref.finalize(owner, abandoned)

    async def __aenter__(self) -> Admission:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.handed_over:
            await self.finish()


_backends: dict[str | None, Backend] = {}
_limiters: dict[tuple[Any, ...], Limiter] = {}
_limiters_lock = threading.Lock()


def get_limiter() -> Limiter:
    """The process's limiter for the current settings; one backend (one set of counters) per store."""
    url = settings.GATEWAY_LIMITS_REDIS_URL
    config = (url, settings.GATEWAY_LIMITS_KEY_PREFIX, settings.GATEWAY_LIMITS_INPUT_HEADROOM_PCT,
              settings.GATEWAY_MAX_TOOL_ROUNDS, settings.GATEWAY_TASK_TOKEN_BUDGET, settings.GATEWAY_TASK_TTL_S)
    limiter = _limiters.get(config)
    if limiter is None:
        with _limiters_lock:
            backend = _backends.get(url)
            if backend is None:
                backend = _backends[url] = (
                    RedisBackend(url, timeout_s=settings.GATEWAY_LIMITS_REDIS_TIMEOUT_MS / 1000) if url
                    else MemoryBackend()
                )
            limiter = _limiters[config] = Limiter(
                backend, prefix=config[1], headroom_pct=config[2], max_tool_rounds=config[3],
                task_token_budget=config[4], task_ttl_s=config[5],
            )
    return limiter
