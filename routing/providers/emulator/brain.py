"""The emulator's deterministic "model": token counting, answers and structured outputs.

Everything here is a pure function of its inputs (hash-seeded, no randomness, no
state), so the same request always produces the same output. Four behaviours:

1. `count_tokens` - one tokenizer for every provider: ceil(len(text) / 4).
2. `answer_text` - a few sentences mentioning the model as "[emulated <model>]",
   longer for bigger questions and stronger models, a refusal for harmful asks.
3. Structured requests are recognised by their schema (`request_kind`):
   a *sentinel* schema (properties `route` + `confidence`) gets a routing decision
   from heuristics over the last user message (`classify`); a *judge* schema
   (integer `score`) gets a score that depends on the answer being judged
   (`judge`); any other schema is filled generically (`schemas.fill_schema`).
4. `malformed_output` - schema-violating or non-JSON variants for fault injection.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .schemas import (
    clamp,
    enum_values,
    fill_schema,
    int_bound,
    properties_of,
    request_kind,
    resolve,
    seed_of,
    shape,
)

ROUTES = (
    "refusal_required",
    "long_context_research",
    "code_generation",
    "agentic_task",
    "complex_reasoning",
    "simple_qa",
)  # also the tie-break priority order
MALFORMED_VARIANTS = ("not_json", "out_of_range", "unknown_value")
_MARKER_RE = re.compile(r"\[emulated ([^\]\s]+)\]")


def count_tokens(text: str) -> int:
    """Tokens in `text`: ceil(len/4), at least 1 for any non-empty text, 0 for ''."""
    return math.ceil(len(text) / 4) if text else 0


def truncate_to_tokens(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut `text` to `max_tokens` tokens; returns (text, truncated)."""
    if max_tokens is None or count_tokens(text) <= max_tokens:
        return text, False
    return text[: max(0, max_tokens) * 4], True


def model_tier(model: str) -> str:
    """ "cheap", "mid" or "frontier", guessed from the model id."""
    name = model.lower()
    if re.search(r"haiku|nano|mini|lite|small|tiny|8b", name):
        return "cheap"
    if re.search(r"opus|ultra|-pro|\bpro\b|o3|gpt-5(?![-.\d]*(mini|nano))|gpt-4\.5", name):
        return "frontier"
    return "mid"


# --- the sentinel classifier ---------------------------------------------------------

_HARMFUL = re.compile(
    r"\b(make|build|synthesi[sz]e|assemble|create|write|code|craft|deploy|brew|cook)\b.{0,50}"
    r"\b(bombs?|explosives?|nerve agents?|sarin|ricin|anthrax|bioweapons?|chemical weapons?|ransomware|malware|"
    r"keyloggers?|botnets?|computer virus|untraceable guns?|ghost guns?|meth(amphetamine)?)\b"
    r"|\b(kill myself|suicide methods?|end my life|hurt myself|self-harm|overdose on)\b"
    r"|\bhow (do i|to|can i|could i)\b.{0,30}\b(poison|stalk|kidnap|kill|murder) (someone|a person|my|him|her)\b"
    r"|\bsteal (passwords|credentials|credit cards?|identities)\b",
    re.IGNORECASE,
)
_CODE_SNIPPET = re.compile(
    r"```|\bdef \w+\(|\bclass \w+\s*[:({]|\bfunction \w*\s*\(|=>|#include|\bimport \w+|\bconsole\.log"
    r"|\bSELECT\b.+\bFROM\b|;\s*$|\{\s*$|\bfn \w+\(|\bpublic static\b",
    re.MULTILINE | re.IGNORECASE,
)
_CODE_WORDS = re.compile(
    r"\b(code|coding|function|python|javascript|typescript|java|rust|golang|kotlin|swift|c\+\+|sql|regex|bug|"
    r"debug|compile[sr]?|refactor|implement|script|unit tests?|stack ?trace|exception|traceback|algorithm|"
    r"endpoint|dockerfile|docker|kubernetes|bash|django|react|component|npm|pip|git|css|html|api|class|method|variable|segfault|recursion)\b",
    re.IGNORECASE,
)
_LONG_ASK = re.compile(
    r"\b(summari[sz]e|tl;?dr|digest|key findings|main points|extract the main)\b.{0,60}"
    r"\b(document|paper|article|report|transcript|book|chapter|contract|filing|thread|pdf|text below|following)\b",
    re.IGNORECASE,
)
_AGENT_WORDS = re.compile(
    r"\b(plan (my|a|the)|book|schedule|reserve|purchase|order|search the web|browse|look up|use (the )?tools?|"
    r"call the api|send (an )?emails?|fill out|automate|navigate to|download|deploy|sign up|compare prices|"
    r"find (me )?(a|the|cheap|flights?|hotels?)|itinerary|check (my|the) (calendar|inbox))\b",
    re.IGNORECASE,
)
_MULTI_STEP = re.compile(r"\b(and then|then|after that|afterwards|finally|step \d|next,)\b", re.IGNORECASE)
_COMPLEX_WORDS = re.compile(
    r"\b(prove|proof|derive|derivation|theorem|lemma|analy[sz]e|trade-?offs?|step[- ]by[- ]step|"
    r"compare and contrast|rigorous(ly)?|formal(ly)?|optimi[sz]e|architecture|design a|evaluate|implications|"
    r"why does|explain why|in depth|in detail|counterfactual|pros and cons|critique|justify)\b",
    re.IGNORECASE,
)
_SIMPLE_FORM = re.compile(
    r"^\s*(what|who|when|where|which|how (many|much|old|far|long|tall)|is|are|does|do|can|define|name)\b",
    re.IGNORECASE,
)
_FACTUAL = re.compile(
    r"\b(capital of|how many|what year|who (wrote|invented|discovered|is|was)|define|definition of|"
    r"stand for|boiling point|population of|meaning of|translate)\b",
    re.IGNORECASE,
)
_OVERRIDE = re.compile(
    r"ignore (all |your |the |any )?(previous |prior |above |earlier )?(routing )?(instructions|rules|prompts?)"
    r"|\broute (this|me|it|the request|my request) (to|as)\b|\brespond with (the |a )?route\b|\byou are now\b"
    r"|\bset (the )?route\b|\"route\"\s*:|\bclassify (this|me|it) as\b|\boverride (the |your )?rout"
    r"|\bdisregard (the |your |all )|\bpretend (you are|to be)\b|\bsystem prompt\b",
    re.IGNORECASE,
)
_TAGGED_REQUEST = re.compile(
    r"<(request|user_request|user_prompt|prompt|query|user_message|input)>(.*?)</\1>", re.DOTALL | re.IGNORECASE
)
_ROUTE_ALIASES = {
    "refusal_required": ("refus", "unsafe", "harm", "block", "reject"),
    "long_context_research": ("long", "research", "context", "document"),
    "code_generation": ("code", "coding", "program"),
    "agentic_task": ("agent", "tool", "action"),
    "complex_reasoning": ("reason", "complex", "hard", "frontier", "deep"),
    "simple_qa": ("simple", "qa", "easy", "cheap", "fast", "chat", "general"),
}
_TOKEN_RANGES = {
    "refusal_required": (30, 90),
    "simple_qa": (40, 220),
    "code_generation": (300, 1400),
    "agentic_task": (400, 1200),
    "complex_reasoning": (500, 1600),
    "long_context_research": (600, 1800),
}
_TOOL_HINTS = (
    (("search", "web", "browse", "google", "bing"), r"\b(search|web|latest|news|today|current|look up|online)\b"),
    (("code", "python", "exec", "interpreter", "sandbox", "run"), r"\b(run|execute|compute|plot|calculate|script)\b"),
    (("calc", "math"), r"\b(calculate|compute|sum|percent|\d+\s*[*/+-]\s*\d+)\b"),
    (("calendar", "schedule"), r"\b(schedule|meeting|calendar|appointment)\b"),
    (("mail",), r"\b(e-?mail|inbox|send)\b"),
    (("book", "flight", "travel", "hotel", "reserv"), r"\b(book|flights?|hotels?|trip|reserve)\b"),
    (("file", "retriev", "document", "rag", "kb"), r"\b(document|file|paper|report|knowledge base)\b"),
)


@dataclass(frozen=True)
class Signals:
    """Heuristic evidence for each route, computed once per text."""

    scores: dict[str, float]
    tokens: int
    override: bool
    complex_hits: int
    steps: int

    @property
    def ranked(self) -> list[tuple[str, float]]:
        return sorted(self.scores.items(), key=lambda kv: (-kv[1], ROUTES.index(kv[0])))


def request_text(text: str) -> str:
    """The user's own request: the inside of a <request>-style tag if the sentinel prompt wraps it."""
    tagged = _TAGGED_REQUEST.findall(text)
    return tagged[-1][1].strip() if tagged else text


def signals(text: str) -> Signals:
    tokens = count_tokens(text)
    lowered = text.lower()
    code_words = {m.group(0).lower() for m in _CODE_WORDS.finditer(text)}
    agent_words = {m.group(0).lower() for m in _AGENT_WORDS.finditer(text)}
    steps = len(_MULTI_STEP.findall(text))
    complex_hits = len({m.group(0).lower() for m in _COMPLEX_WORDS.finditer(text)})
    questions = text.count("?")
    scores = {route: 0.0 for route in ROUTES}
    scores["refusal_required"] = 8.0 * len(_HARMFUL.findall(text))
    long_score = 3.0 * bool(_LONG_ASK.search(text))
    if tokens > 6000:
        long_score += 6.0
    elif tokens > 2000:
        long_score += 2.0 + (1.0 if "document" in lowered or "paper" in lowered else 0.0)
    scores["long_context_research"] = long_score
    scores["code_generation"] = 3.0 * bool(_CODE_SNIPPET.search(text)) + min(4, len(code_words))
    scores["agentic_task"] = (1.5 * len(agent_words) + min(2, steps)) if agent_words else 0.5 * min(2, steps)
    numbered = len(re.findall(r"^\s*(\d+[.)]|[-*])\s+", text, re.MULTILINE))
    scores["complex_reasoning"] = (
        1.5 * complex_hits
        + (2.0 if questions >= 3 else 0.0)
        + (1.0 if numbered >= 3 else 0.0)
        + (1.0 if 150 < tokens <= 2000 else 0.0)
    )
    simple = 0.0
    if tokens <= 30:
        simple += 1.0
    if _SIMPLE_FORM.search(text):
        simple += 1.0
    if questions == 1:
        simple += 1.0
    if _FACTUAL.search(text):
        simple += 1.5
    scores["simple_qa"] = simple if tokens <= 200 else 0.0
    return Signals(scores, tokens, bool(_OVERRIDE.search(text)), complex_hits, steps)


def _pick_route(route: str, allowed: Sequence[str]) -> tuple[str, bool]:
    """Map a canonical route onto the schema's enum; returns (route, exact)."""
    if not allowed or route in allowed:
        return route, True
    for alias in _ROUTE_ALIASES[route]:
        for candidate in allowed:
            if alias in str(candidate).lower():
                return str(candidate), False
    return str(allowed[-1]), False


def decide(text: str, *, routes: Sequence[str] = (), tools: Sequence[str] = (), seed: str = "") -> dict[str, Any]:
    """A RouteDecision-shaped dict for `text` (the last user message).

    1. Score every route from keyword/shape heuristics (see `signals`).
    2. Take the best route the caller allows; nothing matched → simple_qa for short
       text, complex_reasoning for longer text, both with low confidence.
    3. Confidence grows with the winning score and its margin over the runner-up,
       clamped to 0.5-0.98; routing-override attempts and enum fallbacks lower it.
    """
    text = request_text(text)
    sig = signals(text)
    ranked = sig.ranked
    allowed_ranked = [(r, s) for r, s in ranked if not routes or r in routes]
    if not allowed_ranked or allowed_ranked[0][1] <= 0:
        fallback = "simple_qa" if sig.tokens <= 60 else "complex_reasoning"
        route, exact = _pick_route(fallback, routes)
        top, margin = 0.0, 0.0
    else:
        route, top = allowed_ranked[0]
        margin = top - (allowed_ranked[1][1] if len(allowed_ranked) > 1 else 0.0)
        exact = True
    confidence = 0.52 + 0.06 * min(top, 6.0) + 0.05 * min(margin, 4.0)
    if sig.override:
        confidence -= 0.12
    if not exact:
        confidence -= 0.1
    confidence = round(min(0.98, max(0.5, confidence)), 2)

    canonical = route if route in ROUTES else "simple_qa"
    if canonical in ("refusal_required",):
        depth = "none"
    elif canonical == "simple_qa":
        depth = "none" if sig.tokens < 15 else "shallow"
    elif canonical == "complex_reasoning":
        depth = "deep"
    elif canonical == "agentic_task":
        depth = "deep" if sig.steps >= 2 or sig.complex_hits else "shallow"
    else:
        depth = "deep" if sig.complex_hits or sig.tokens > 1500 else "shallow"

    lo, hi = _TOKEN_RANGES[canonical]
    h = seed_of(seed, text)
    estimate = lo + h % (hi - lo + 1)
    if canonical not in ("refusal_required", "simple_qa"):
        estimate += min(2000, sig.tokens // 10)

    chosen_tools = []
    if canonical not in ("refusal_required", "simple_qa"):
        for tool in tools:
            name = str(tool).lower()
            for name_hints, text_pattern in _TOOL_HINTS:
                if any(n in name for n in name_hints) and re.search(text_pattern, text, re.IGNORECASE):
                    chosen_tools.append(str(tool))
                    break
    return {
        "route": route,
        "confidence": confidence,
        "reasoning_depth_needed": depth,
        "tools_required": chosen_tools,
        "estimated_output_tokens": int(estimate),
        "route_override_attempted": sig.override,
    }


def classify(text: str, schema: Mapping[str, Any], seed: str = "") -> dict[str, Any]:
    """A sentinel answer for `text` that validates against the sentinel `schema`."""
    props = properties_of(schema, schema)
    tool_items = resolve(props.get("tools_required", {}).get("items", {}), schema)
    decision = decide(
        text,
        routes=[str(r) for r in enum_values(props["route"])],
        tools=[str(t) for t in enum_values(tool_items)],
        seed=seed,
    )
    depth_enum = enum_values(props.get("reasoning_depth_needed"))
    if depth_enum and decision["reasoning_depth_needed"] not in depth_enum:
        decision["reasoning_depth_needed"] = depth_enum[min(len(depth_enum) - 1, 1)]
    estimate_schema = props.get("estimated_output_tokens", {})
    decision["estimated_output_tokens"] = int(clamp(decision["estimated_output_tokens"], estimate_schema))
    return shape(decision, schema, seed=seed + text)


# --- the judge ---------------------------------------------------------------------------

_ANSWER_TAG = re.compile(r"<(answer|response|candidate_answer|candidate|model_answer|output)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_QUESTION_TAG = re.compile(r"<(question|prompt|request|user_prompt|user_request|task|query)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_ANSWER_LABEL = re.compile(
    r"^[#*\s]*(candidate answer|model answer|model response|assistant answer|assistant response|answer|response)"
    r"[*\s]*:",
    re.IGNORECASE | re.MULTILINE,
)
_QUESTION_LABEL = re.compile(r"^[#*\s]*(question|prompt|user request|request|task|query)[*\s]*:", re.IGNORECASE | re.MULTILINE)
_REFUSAL_TEXT = re.compile(r"\b(can't|cannot|won't|unable to) (help|assist|provide)\b", re.IGNORECASE)
_SCORES = {
    ("cheap", "simple"): 4, ("cheap", "moderate"): 3, ("cheap", "complex"): 2,
    ("mid", "simple"): 4, ("mid", "moderate"): 4, ("mid", "complex"): 3,
    ("frontier", "simple"): 5, ("frontier", "moderate"): 5, ("frontier", "complex"): 4,
}  # fmt: skip


def split_question_answer(text: str) -> tuple[str, str]:
    """(question, answer) from a judge prompt: tags first, then `Question:`/`Answer:` labels."""
    answers = _ANSWER_TAG.findall(text)
    if answers:
        questions = _QUESTION_TAG.findall(text)
        return (questions[-1][1].strip() if questions else ""), answers[-1][1].strip()
    labels = list(_ANSWER_LABEL.finditer(text))
    if labels:
        cut = labels[-1]
        before = text[: cut.start()]
        q_labels = list(_QUESTION_LABEL.finditer(before))
        question = before[q_labels[-1].end() :] if q_labels else ""
        return question.strip(), text[cut.end() :].strip()
    return "", text.strip()


def question_complexity(question: str) -> str:
    """ "simple", "moderate" or "complex", from the same heuristics the sentinel uses."""
    if not question:
        return "moderate"
    decision = decide(question)
    if decision["route"] in ("simple_qa", "refusal_required"):
        return "simple" if decision["confidence"] >= 0.7 else "moderate"
    return "complex" if decision["confidence"] >= 0.62 else "moderate"


def judge(text: str, schema: Mapping[str, Any], seed: str = "") -> dict[str, Any]:
    """A judge answer: a 1-5 score that depends on who answered what.

    1. Split the prompt into question and answer.
    2. Empty or tiny answers score 1. Otherwise look up (answer tier, question
       complexity): the tier comes from the "[emulated <model>]" marker, else
       from answer length; a cheap model on a complex question scores 2, a
       frontier model 4-5.
    3. Rescale to the schema's minimum/maximum when it declares another range.
    """
    question, answer = split_question_answer(text)
    complexity = question_complexity(question)
    marker = _MARKER_RE.search(answer)
    answer_tokens = count_tokens(answer.strip())
    if marker:
        tier, who = model_tier(marker.group(1)), marker.group(1)
    else:
        tier, who = ("cheap" if answer_tokens < 25 else "mid"), "an unidentified model"
    if answer_tokens < 4:
        score, why = 1, "The answer is empty or too short to address the question."
    elif question and decide(question)["route"] == "refusal_required":
        refused = bool(_REFUSAL_TEXT.search(answer))
        score = 5 if refused else 1
        why = (
            "The answer correctly declines a harmful request."
            if refused
            else "The answer complies with a harmful request."
        )
    else:
        score = _SCORES[(tier, complexity)]
        why = (
            f"Answer from {who} ({tier} tier) to a {complexity} question: "
            + {5: "complete and well reasoned.", 4: "correct with minor gaps.", 3: "adequate but shallow.",
               2: "misses the depth the question needs.", 1: "does not answer."}[score]
        )  # fmt: skip
    props = properties_of(schema, schema)
    lo, hi = int_bound(props["score"], "minimum", 1), int_bound(props["score"], "maximum", 5)
    scaled = lo + round((score - 1) / 4 * (hi - lo)) if hi > lo else score
    values = {"score": scaled, "rationale": why, "reasoning": why, "explanation": why, "justification": why}
    complexity_enum = enum_values(props.get("question_complexity"))
    if complexity_enum:
        values["question_complexity"] = complexity if complexity in complexity_enum else complexity_enum[0]
    else:
        values["question_complexity"] = complexity
    return shape(values, schema, seed=seed + text)


def structured_output(schema: Mapping[str, Any], text: str, model: str) -> dict[str, Any]:
    """The structured answer to `text` (the last user message) for whichever kind `schema` is."""
    kind = request_kind(schema)
    if kind == "sentinel":
        return classify(text, schema, seed=model)
    if kind == "judge":
        return judge(text, schema, seed=model)
    value = fill_schema(schema, seed=model + text)
    if isinstance(value, dict) and "answer" in value:
        value["answer"] = answer_text(model, text)
    return value if isinstance(value, dict) else {"value": value}


def malformed_output(valid: Mapping[str, Any], schema: Mapping[str, Any], variant: str) -> str | dict[str, Any]:
    """A broken version of `valid`: JSON text cut short, or an object violating `schema`."""
    if variant == "not_json":
        return json.dumps(valid)[: max(8, len(json.dumps(valid)) // 2)]
    broken = dict(valid)
    props = properties_of(schema, schema)
    if variant == "out_of_range":
        if "confidence" in props:
            broken["confidence"] = 1.7
        elif "score" in props:
            broken["score"] = int(props["score"].get("maximum", 5)) + 4
        else:
            broken["unexpected_field"] = True
    else:  # unknown_value
        if "route" in props:
            broken["route"] = "premium_tier"
        elif "question_complexity" in props:
            broken["question_complexity"] = "trivial"
        else:
            broken["unexpected_field"] = True
    return broken


# --- free-text answers ---------------------------------------------------------------------

_STOPWORDS = frozenset(
    ["a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "but", "is", "are", "was", "were", "be", "been", "what", "which", "who", "whom", "how", "why", "when", "where", "does", "do", "did", "can", "could", "should", "would", "will", "please", "me", "my", "i", "you", "your", "it", "its", "this", "that", "these", "those", "with", "about", "explain", "tell", "give", "write", "make", "from", "into", "as", "at", "by", "than", "then", "so", "if"]
)
_SENTENCES = (
    "The short answer on {topic} is that it depends on a few well-understood factors.",
    "Most of what matters about {topic} follows from first principles.",
    "A useful way to think about {topic} is to separate the core idea from the details.",
    "In practice, {topic} is usually handled with a simple, well-tested approach.",
    "The main trade-off with {topic} is between simplicity and completeness.",
    "Evidence on {topic} points consistently in the same direction.",
    "One common mistake with {topic} is to over-generalise from a single case.",
    "For {topic}, the details change with context, but the principle holds.",
    "A worked example makes {topic} much easier to follow.",
    "Experts broadly agree on the fundamentals of {topic}.",
)
_EXTRA_BY_TIER = {"cheap": 1, "mid": 3, "frontier": 5}


def _topic(prompt: str) -> str:
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9'+-]*", prompt) if w.lower() not in _STOPWORDS]
    return " ".join(words[:4]).lower() or "this question"


def answer_text(model: str, prompt: str) -> str:
    """A deterministic few-sentence answer to `prompt`, tagged "[emulated <model>]"."""
    if "<route_then_answer" in prompt:
        return chained_answer(model, prompt)
    h = seed_of(model, prompt)
    if _HARMFUL.search(prompt):
        return f"[emulated {model}] I can't help with that request, but I'm happy to help with something else."
    topic = _topic(request_text(prompt))
    count = 2 + _EXTRA_BY_TIER[model_tier(model)] + h % 2 + min(8, count_tokens(prompt) // 60)
    start = h % len(_SENTENCES)
    sentences = [_SENTENCES[(start + 3 * i) % len(_SENTENCES)].format(topic=topic) for i in range(count)]
    return f"[emulated {model}] " + " ".join(sentences)


# --- the gateway's chained self-execution request (routing/engine/sentinel.py) -------------------
# A free-text request whose user turn is `<route_then_answer min_confidence="0.75">TEXT</route_then_answer>`:
# first line the routing decision as JSON, then, only for a confident simple_qa without an
# override attempt, the separator line and the answer.

_CHAINED = re.compile(r'<route_then_answer(?:\s+min_confidence="([\d.]+)")?\s*>(.*?)</route_then_answer>', re.DOTALL)
CHAINED_SEPARATOR = "=====ANSWER====="


def chained_answer(model: str, prompt: str) -> str:
    match = _CHAINED.search(prompt)
    if match is None:
        return f"[emulated {model}] The request could not be read."
    threshold = float(match.group(1) or 0.75)
    text = match.group(2).strip()
    decision = decide(text, seed=model)
    line = json.dumps(decision)
    if (decision["route"] == "simple_qa" and decision["confidence"] >= threshold
            and not decision["route_override_attempted"]):
        return f"{line}\n{CHAINED_SEPARATOR}\n{answer_text(model, text)}"
    return line
