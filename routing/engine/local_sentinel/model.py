"""The local learned sentinel: a RouteDecision in-process, in about a millisecond.

The artefact (a zip of .npy arrays, see `save_artefact`) holds:
- the WordPiece tokenizer of all-MiniLM-L6-v2 (`tokenizer.json`);
- a static token-embedding table distilled from all-MiniLM-L6-v2 (each vocabulary
  token run through the transformer once, PCA-reduced, int8-quantised) and per-token
  SIF weights;
- a multinomial logistic regression over [mean token embedding, length features,
  token-unigram presence, hashed token-bigram presence], with a temperature for
  calibrated confidence.

Loading needs numpy and `tokenizers` only. Deciding:
1. tokenize (tokens.py: exact count, or head/tail windows plus an estimate for huge input);
2. a prompt at or over `long_context_tokens` is `long_context_research` outright;
3. otherwise features -> logits -> softmax(logits / T); the arg-max is the route and its
   probability the confidence;
4. reasoning depth and output tokens follow from the route and the input length
   (`ROUTE_PROFILES`); the override detector only sets a flag and never changes the route.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routing.engine.decision import RouteDecision
from routing.engine.local_sentinel.tokens import TokenCounter, load_tokenizer

ARTEFACT_DIR = Path(__file__).resolve().parent / "artefacts"
ARTEFACT_VERSION = "v1"
DEFAULT_ARTEFACT = ARTEFACT_DIR / f"local-sentinel-{ARTEFACT_VERSION}.npz"

DEFAULT_ROUTES = (
    "simple_qa",
    "complex_reasoning",
    "code_generation",
    "long_context_research",
    "agentic_task",
    "refusal_required",
    "fallback",
)
LONG_CONTEXT_ROUTE = "long_context_research"
LONG_CONTEXT_TOKENS = 20_000
LENGTH_RULE_CONFIDENCE = 0.99
# Features look at the first HEAD and last TAIL tokens; the count still covers all of it.
HEAD_TOKENS = 1536
TAIL_TOKENS = 512
BIGRAM_BUCKETS = 1 << 16
BIGRAM_MULTIPLIER = 1_000_003


@dataclass(frozen=True)
class RouteProfile:
    """How much thinking and output a route usually needs (documented in docs/SENTINEL.md)."""

    depth: str
    output_tokens: int
    # Added output per input token, for routes whose answer grows with the input.
    output_per_input_token: float = 0.0
    max_output_tokens: int = 8_000
    # Input tokens from which depth goes one step deeper ("none" -> "shallow" -> "deep").
    deeper_from_tokens: int | None = None


ROUTE_PROFILES: dict[str, RouteProfile] = {
    "simple_qa": RouteProfile("none", 150, deeper_from_tokens=1_000),
    "complex_reasoning": RouteProfile("deep", 1_200, output_per_input_token=0.5, max_output_tokens=6_000),
    "code_generation": RouteProfile("shallow", 800, output_per_input_token=0.5, deeper_from_tokens=1_500),
    "long_context_research": RouteProfile("deep", 1_500, output_per_input_token=0.02, max_output_tokens=8_000),
    "agentic_task": RouteProfile("deep", 2_000, output_per_input_token=0.2),
    "refusal_required": RouteProfile("none", 80, max_output_tokens=80),
    "fallback": RouteProfile("shallow", 500, output_per_input_token=0.2, deeper_from_tokens=2_000),
}
_DEPTHS = ("none", "shallow", "deep")

# Phrasing that tries to steer the router or the model's instructions. Deliberately small:
# the input guard does the thorough job; this only raises a flag for the policy.
OVERRIDE_PATTERNS = re.compile(
    r"""(
      \b(ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|your|system)\b[^.\n]{0,20}\b(instructions?|rules|prompts?|guidelines|directives)\b
    | \b(route|send|classify|label|mark|forward)\b[^.\n]{0,30}\b(this|me|it|request|prompt|query)\b[^.\n]{0,30}\b(to|as)\b[^.\n]{0,20}\b(simple_qa|simple|cheap(est)?|small(est)?|fast(est)?|haiku|nano|flash|lite|mini|opus|gpt|gemini|claude)\b
    | \b(simple_qa|complex_reasoning|code_generation|long_context_research|agentic_task|refusal_required)\b[^.\n]{0,20}\broute\b
    | \broute\b[^.\n]{0,15}\b(simple_qa|complex_reasoning|code_generation|long_context_research|agentic_task|refusal_required|fallback)\b
    | \b(use|switch\s+to)\b[^.\n]{0,15}\b(the\s+)?(cheapest|smallest|fastest|cheaper|frontier|best|strongest)\s+model\b
    | \bset\b[^.\n]{0,20}\bconfidence\b
    | \byou\s+are\s+now\b | \bdeveloper\s+mode\b | \bjailbr[eo]a?k | \bdo\s+anything\s+now\b
    | \b(reveal|print|show|repeat)\b[^.\n]{0,20}\b(system|hidden|initial)\s+(prompt|instructions?)\b
    | \bnew\s+(system\s+)?instructions?\s*: | \bsystem\s*(override|prompt)\s*:
    )""",
    re.VERBOSE,  # matched against the lower-cased text: case-insensitive matching is much slower
)
DAN_PATTERN = re.compile(r"\bDAN\b")  # the "Do Anything Now" persona: case matters here


# Every pattern above contains one of these; the regex only runs near them (speed).
OVERRIDE_ANCHORS = (
    "ignore", "disregard", "forget", "override", "bypass", "route", "classify", "label",
    "forward", "send", "mark", "model", "confidence", "you are now", "developer mode", "dan",
    "jailbr", "anything now", "prompt", "instruction",
)
OVERRIDE_REACH = 200  # characters either side of an anchor that a pattern can span


def override_attempted(text: str) -> bool:
    """True when the text tries to steer routing or replace instructions.

    1. find anchor words with plain substring search (fast C code);
    2. merge the windows around them; 3. run the patterns on those windows only.
    """
    lowered = text.lower()
    spans: list[tuple[int, int]] = []
    for anchor in OVERRIDE_ANCHORS:
        at = lowered.find(anchor)
        while at != -1:
            spans.append((max(0, at - OVERRIDE_REACH), at + len(anchor) + OVERRIDE_REACH))
            at = lowered.find(anchor, at + len(anchor) + OVERRIDE_REACH)
    if not spans:
        return False
    spans.sort()
    merged = [spans[0]]
    for start, end in spans[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    if any(OVERRIDE_PATTERNS.search(lowered, start, end) for start, end in merged):
        return True
    return "dan" in lowered and DAN_PATTERN.search(text) is not None


def save_artefact(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write arrays as an .npz-compatible zip with fixed timestamps, so equal inputs give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    members = dict(arrays)
    members["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(members):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(members[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def load_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    return arrays, meta


@dataclass(frozen=True)
class Features:
    embedding: np.ndarray  # (d,) L2-normalised SIF-weighted mean of token vectors
    length: np.ndarray  # (L,)
    unigrams: np.ndarray  # unique token ids
    bigrams: np.ndarray  # unique hashed bigram buckets


def length_features(count: int) -> np.ndarray:
    """Input length as features: log-scaled size plus two steps (long prompts read differently)."""
    return np.array(
        [min(1.0, np.log1p(count) / np.log(32_768)), float(count > 1_000), float(count > 4_000)],
        dtype=np.float32,
    )


def window(ids: np.ndarray) -> np.ndarray:
    if len(ids) <= HEAD_TOKENS + TAIL_TOKENS:
        return ids
    return np.concatenate([ids[:HEAD_TOKENS], ids[-TAIL_TOKENS:]])


def bigram_buckets(ids: np.ndarray) -> np.ndarray:
    if len(ids) < 2:
        return np.zeros(0, dtype=np.int64)
    return np.unique((ids[:-1] * BIGRAM_MULTIPLIER + ids[1:]) % BIGRAM_BUCKETS)


def featurise(ids: np.ndarray, count: int, table: np.ndarray, weights: np.ndarray) -> Features:
    ids = window(ids)
    if len(ids):
        # Weighted sum over distinct ids (fewer rows to gather than one per token).
        distinct, counts = np.unique(ids, return_counts=True)
        w = weights[distinct] * counts
        vec = (w @ table[distinct]) / max(float(w.sum()), 1e-6)
        norm = float(np.linalg.norm(vec))
        vec = vec / norm if norm > 0 else vec
        return Features(vec.astype(np.float32), length_features(count), distinct, bigram_buckets(ids))
    empty = np.zeros(0, dtype=np.int64)
    return Features(np.zeros(table.shape[1], dtype=np.float32), length_features(count), empty, empty)


@dataclass(frozen=True)
class Analysis:
    features: Features
    probabilities: np.ndarray  # over `LocalSentinel.classes`
    token_count: int
    token_count_exact: bool

    @property
    def embedding(self) -> np.ndarray:
        """The L2-normalised static sentence embedding (what the decision cache compares)."""
        return self.features.embedding


class LocalSentinel:
    """Loads a trained artefact and turns a prompt into a RouteDecision."""

    def __init__(self, path: Path | str = DEFAULT_ARTEFACT, *, long_context_tokens: int | None = None) -> None:
        arrays, meta = load_arrays(Path(path))
        self.path = Path(path)
        self.meta = meta
        self.version: str = meta["version"]
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.routes: tuple[str, ...] = tuple(meta.get("routes", DEFAULT_ROUTES))
        self.long_context_tokens = long_context_tokens or int(meta.get("long_context_tokens", LONG_CONTEXT_TOKENS))
        tokenizer = load_tokenizer(arrays["tokenizer_json"].tobytes().decode())
        self.counter = TokenCounter(tokenizer)
        # int8 rows with a per-row scale -> float32 once, at load.
        self.table = arrays["table_q"].astype(np.float32) * arrays["table_scale"][:, None]
        self.weights = arrays["token_weight"].astype(np.float32)
        self.w_embedding = arrays["w_embedding"].astype(np.float32)
        self.w_length = arrays["w_length"].astype(np.float32)
        self.w_unigram = arrays["w_unigram"].astype(np.float32)
        self.w_bigram = arrays["w_bigram"].astype(np.float32)
        self.bias = arrays["bias"].astype(np.float32)
        self.temperature = float(meta["temperature"])

    def logits(self, f: Features) -> np.ndarray:
        z = f.embedding @ self.w_embedding + f.length @ self.w_length + self.bias
        if len(f.unigrams):
            z = z + self.w_unigram[f.unigrams].sum(axis=0) / np.sqrt(len(f.unigrams))
        if len(f.bigrams):
            z = z + self.w_bigram[f.bigrams].sum(axis=0) / np.sqrt(len(f.bigrams))
        return z

    def analyse(self, text: str) -> Analysis:
        """Tokens, features and route probabilities: everything `decide` and the decision cache need."""
        tokens = self.counter.tokens(text)
        f = featurise(tokens.ids, tokens.count, self.table, self.weights)
        z = self.logits(f) / self.temperature
        z = np.exp(z - z.max())
        return Analysis(f, z / z.sum(), tokens.count, tokens.exact)

    def probabilities(self, text: str) -> tuple[np.ndarray, int, bool]:
        a = self.analyse(text)
        return a.probabilities, a.token_count, a.token_count_exact

    def top_route(self, analysis: Analysis) -> str:
        """The route `decide` would pick for this analysis (the length rule included)."""
        if analysis.token_count >= self.long_context_tokens:
            return LONG_CONTEXT_ROUTE
        return self.classes[int(np.argmax(analysis.probabilities))]

    def decide(self, text: str, analysis: Analysis | None = None) -> tuple[RouteDecision, dict[str, Any]]:
        started = time.perf_counter()
        if analysis is None:
            analysis = self.analyse(text)
        probs, count, exact = analysis.probabilities, analysis.token_count, analysis.token_count_exact
        classified = time.perf_counter()
        best = int(np.argmax(probs))
        route, confidence, rule = self.classes[best], float(probs[best]), "model"
        if count >= self.long_context_tokens:
            route, confidence, rule = LONG_CONTEXT_ROUTE, LENGTH_RULE_CONFIDENCE, "length"
        profile = ROUTE_PROFILES.get(route, ROUTE_PROFILES["fallback"])
        depth = profile.depth
        if profile.deeper_from_tokens is not None and count >= profile.deeper_from_tokens:
            depth = _DEPTHS[min(len(_DEPTHS) - 1, _DEPTHS.index(depth) + 1)]
        estimated = min(profile.max_output_tokens, profile.output_tokens + int(profile.output_per_input_token * count))
        decision = RouteDecision(
            route=route,
            confidence=min(1.0, max(0.0, confidence)),
            reasoning_depth_needed=depth,
            tools_required=(),
            estimated_output_tokens=estimated,
            # Only a flag: the policy escalates on it. The route is never lowered for it.
            route_override_attempted=override_attempted(text),
        )
        probabilities = {name: 0.0 for name in self.routes}
        probabilities.update({name: float(p) for name, p in zip(self.classes, probs)})
        info = {
            "probabilities": probabilities,
            "token_count": count,
            "token_count_exact": exact,
            "decided_by": rule,
            "model_version": self.version,
            "timings_ms": {
                "classify": (classified - started) * 1000,
                "total": (time.perf_counter() - started) * 1000,
            },
        }
        return decision, info
