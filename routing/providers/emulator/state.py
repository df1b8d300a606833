"""Runtime state of one emulator instance: configuration, fault rules, caches and stats.

One `EmulatorState` belongs to one app instance (never a module global), and is
only touched from the server's event loop, so it needs no locks. The control API
(`/_emulator/...`) reads and replaces it; `reset()` returns it to a fresh start.
"""

from __future__ import annotations

import copy
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .brain import MALFORMED_VARIANTS

FAULTS = ("500", "502", "503", "529", "429", "hang", "malformed", "cut")
STATUS_FAULTS = frozenset({"500", "502", "503", "529", "429"})
PROVIDERS = ("anthropic", "openai", "gemini")
KINDS = ("sentinel", "judge", "executor", "other")
# Remembered cache prefixes are bounded so a long benchmark of unique prompts
# cannot grow memory without limit; forgetting just turns a read into a write.
_MAX_CACHE_KEYS = 200_000
_MARKER_RE = re.compile(r"\[\[emulator:([^\]]*)\]\]")


class ConfigError(ValueError):
    """A control-API payload is invalid; answered with HTTP 400."""


@dataclass
class EmulatorConfig:
    latency_ms: float = 0.0  # slept before the first byte of every completion response
    model_latency_ms: dict[str, float] = field(default_factory=dict)  # per requested model, replaces latency_ms
    stream_chunk_delay_ms: float = 0.0  # slept between SSE frames of a streamed response
    model_versions: dict[str, str] = field(default_factory=dict)  # requested id -> reported model version

    def latency_for(self, model: str) -> float:
        return self.model_latency_ms.get(model, self.latency_ms) / 1000.0

    def update(self, payload: Mapping[str, Any]) -> None:
        unknown = set(payload) - set(asdict(self))
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        for key in ("latency_ms", "stream_chunk_delay_ms"):
            if key in payload:
                value = payload[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"{key} must be a non-negative number")
                setattr(self, key, float(value))
        for key in ("model_versions", "model_latency_ms"):
            if key in payload:
                value = payload[key]
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{key} must be an object")
                setattr(self, key, dict(value))


@dataclass
class FaultRule:
    fault: str
    times: int = 1  # -1: until reset
    provider: str | None = None
    model: str | None = None
    kind: str | None = None
    retry_after: float | None = None  # seconds, for 429
    variant: str | None = None  # malformed variant; None cycles through all of them
    fired: int = 0

    @classmethod
    def from_payload(cls, payload: Any) -> FaultRule:
        if not isinstance(payload, Mapping):
            raise ConfigError("a fault rule must be an object")
        unknown = set(payload) - {"fault", "times", "provider", "model", "kind", "retry_after", "variant"}
        if unknown:
            raise ConfigError(f"unknown fault key(s): {', '.join(sorted(unknown))}")
        rule = cls(
            fault=str(payload.get("fault", "")),
            times=int(payload.get("times", 1)),
            provider=payload.get("provider"),
            model=payload.get("model"),
            kind=payload.get("kind"),
            retry_after=payload.get("retry_after"),
            variant=payload.get("variant"),
        )
        if rule.fault not in FAULTS:
            raise ConfigError(f"fault must be one of {', '.join(FAULTS)}")
        if rule.provider is not None and rule.provider not in PROVIDERS:
            raise ConfigError(f"provider must be one of {', '.join(PROVIDERS)}")
        if rule.kind is not None and rule.kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}")
        if rule.retry_after is not None and (
            isinstance(rule.retry_after, bool) or not isinstance(rule.retry_after, (int, float)) or rule.retry_after < 0
        ):
            raise ConfigError("retry_after must be a non-negative number of seconds")
        if rule.variant is not None and rule.variant not in MALFORMED_VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(MALFORMED_VARIANTS)}")
        if rule.times == 0 or rule.times < -1:
            raise ConfigError("times must be a positive integer or -1")
        return rule

    def matches(self, provider: str, model: str, kind: str) -> bool:
        return (
            (self.provider is None or self.provider == provider)
            and (self.model is None or self.model == model)
            and (self.kind is None or self.kind == kind)
        )

    @property
    def exhausted(self) -> bool:
        return self.times != -1 and self.fired >= self.times

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def inline_fault(text: str) -> FaultRule | None:
    """A one-shot rule from an `[[emulator:fault=503 kind=executor]]` marker in the prompt."""
    for marker in _MARKER_RE.findall(text):
        fields = dict(part.split("=", 1) for part in re.split(r"[\s,;]+", marker.strip()) if "=" in part)
        if "fault" in fields:
            try:
                return FaultRule.from_payload(fields)
            except (ConfigError, ValueError):
                return None
    return None


@dataclass
class Billed:
    requests: int = 0
    input_tokens: int = 0  # every prompt token, cached or not
    uncached_input_tokens: int = 0  # input minus cache reads and writes
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0


class EmulatorState:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._initial = copy.deepcopy(config or EmulatorConfig())
        self.reset()

    def reset(self) -> None:
        self.config = copy.deepcopy(self._initial)
        self.faults: list[FaultRule] = []
        self.cache_keys: set[bytes] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.total = 0
        self.by_provider: Counter[str] = Counter()
        self.by_kind: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.models_seen: defaultdict[str, set[str]] = defaultdict(set)  # provider -> requested model ids
        self.faults_fired: Counter[str] = Counter()
        self.billed: defaultdict[str, Billed] = defaultdict(Billed)
        self._ids = 0

    # --- control API ---------------------------------------------------------------

    def set_faults(self, payload: Any, *, append: bool = False) -> list[FaultRule]:
        rules = [FaultRule.from_payload(p) for p in (payload if isinstance(payload, list) else [payload])]
        self.faults = [*self.faults, *rules] if append else rules
        return self.faults

    def snapshot(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "total": self.total,
            "by_provider": {p: self.by_provider[p] for p in PROVIDERS},
            "by_kind": {k: self.by_kind[k] for k in KINDS},
            "by_model": dict(self.by_model),
            "faults_fired": dict(self.faults_fired),
            "billed": {model: asdict(b) for model, b in sorted(self.billed.items())},
        }

    # --- per request ---------------------------------------------------------------

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def begin(self, provider: str, model: str, kind: str) -> None:
        self.total += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.by_provider[provider] += 1
        self.by_kind[kind] += 1
        self.by_model[model] += 1
        self.models_seen[provider].add(model)

    def end(self) -> None:
        self.in_flight -= 1

    def take_fault(self, provider: str, model: str, kind: str, prompt: str) -> tuple[FaultRule | None, int]:
        """The fault to inject, if any, and how many times that rule fired before.

        An inline prompt marker wins over configured rules; configured rules are
        tried in order and the first matching, unexhausted one fires.
        """
        rule = inline_fault(prompt) if "[[emulator:" in prompt else None
        if rule is not None and not rule.matches(provider, model, kind):
            rule = None
        if rule is None:
            rule = next((r for r in self.faults if not r.exhausted and r.matches(provider, model, kind)), None)
        if rule is None:
            return None, 0
        previous = rule.fired
        rule.fired += 1
        self.faults_fired[rule.fault] += 1
        return rule, previous

    def cache_lookup(self, key: bytes) -> bool:
        """Whether this cache prefix was seen before; remembers it either way."""
        if key in self.cache_keys:
            return True
        if len(self.cache_keys) >= _MAX_CACHE_KEYS:
            self.cache_keys.clear()
        self.cache_keys.add(key)
        return False

    def bill(self, model: str, *, input_tokens: int, cache_read: int, cache_write: int, output_tokens: int) -> None:
        entry = self.billed[model]
        entry.requests += 1
        entry.input_tokens += input_tokens
        entry.uncached_input_tokens += input_tokens - cache_read - cache_write
        entry.cache_read_tokens += cache_read
        entry.cache_write_tokens += cache_write
        entry.output_tokens += output_tokens
