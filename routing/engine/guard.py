"""The input guard: normalise the text the sentinel sees, cap it, and flag routing attacks.

It runs before the decision cache and the sentinel. It never rewrites what the
executor receives (the user's messages go to the executor unchanged); it produces
the normalised text that is classified and cached, and a list of flags. A flagged
request has `route_override_attempted` forced on its decision, and the policy then
escalates it, so an attack can never buy a cheaper route than the plain request.

1. Normalise: NFKC (full-width letters, ligatures and mathematical alphabets become
   plain letters), then drop zero-width, bidi-control, variation-selector, tag and
   other control characters (newline and tab stay).
2. Cap: text over `MAX_GUARD_CHARS` keeps its head and tail (the sentinel view caps
   again, tighter; the cap here bounds the guard's own work).
3. Build views of the text to scan: the normalised text; homoglyphs folded to Latin;
   leetspeak decoded; spaced-out letters ("i g n o r e") joined; base64 runs decoded.
4. Scan every view with the patterns in `PATTERNS` (override instructions, role-play
   that redefines the task, cheap framing of a hard request, a pasted route decision,
   model steering, fake system/authority turns). Each match adds a named flag.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_GUARD_CHARS = 200_000
_HEAD_CHARS = MAX_GUARD_CHARS // 4
_SCAN_CHARS = 40_000  # attacks are short: scan the head and tail of huge inputs only

# Zero-width and invisible formatting characters, bidi controls, variation selectors, tags.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)
# C0/C1 controls except tab and newline (carriage returns become newlines first).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

# Cyrillic and Greek letters that look like Latin ones (NFKC leaves them alone).
_HOMOGLYPHS = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "һ": "h",
    "ӏ": "l", "ԛ": "q", "ԝ": "w", "ᴀ": "a", "ʀ": "r", "ɪ": "i", "ɴ": "n", "ᴏ": "o", "ᴜ": "u", "ꜱ": "s",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "α": "a", "ο": "o", "ρ": "p", "ν": "v", "τ": "t", "ι": "i",
    "κ": "k", "ε": "e", "υ": "u", "χ": "x", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I",
    "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
})  # fmt: skip
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "|": "l",
                       "!": "i", "+": "t"})
# A run of at least four single letters/digits separated by one separator character.
_SPACED = re.compile(r"(?<![\w])(?:[^\W_][ .\-_*·,/]){3,}[^\W_](?![\w])")
_SPACED_WORD_BREAK = re.compile(r"(?<=[^\W_])[ .\-_*·,/]{2,}(?=[^\W_])")
_LEET_MIXED = re.compile(r"[A-Za-z][0-9@$|!+][A-Za-z0-9@$|!+]*[A-Za-z]|[0-9@$|+][A-Za-z]{2}")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")

ROUTE_NAMES = r"(simple[_ ]?qa|complex[_ ]reasoning|code[_ ]generation|long[_ ]context[_ ]research|agentic[_ ]task|" \
              r"refusal[_ ]required|fallback)"
_CHEAP_WORDS = r"(simple[_ ]?qa|simple|cheap(er|est)?|small(er|est)?|fast(er|est)?|easy|trivial|light(er|est)?|" \
               r"weak(er|est)?|basic|haiku|nano|flash|lite|mini|low[- ]?(tier|cost)|budget|free)"
_HARD_REQUEST = (
    r"(explain|prove|proof|derive|analy[sz]e|design|architect|implement|refactor|write (a|an|the|me)|"
    r"step[- ]by[- ]step|in (detail|depth)|thorough|comprehensive|rigorous|theorem|quantum|chromodynamics|"
    r"relativity|thermodynamics|cryptograph|compiler|distributed|consensus|optimi[sz]|differential|integral|"
    r"eigen|topolog|protein|genom|macroeconom|legal (analysis|opinion)|dissertation|essay|"
    r"compare and contrast|trade-?offs?|full (report|analysis|implementation)|entire|all of)"
)

PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.IGNORECASE | re.VERBOSE | re.DOTALL)
    for name, pattern in {
        "instruction_override": r"""
            \b(ignore|disregard|forget|override|bypass|skip|drop|abandon)\b[^.\n]{0,40}?
            \b(previous|prior|above|earlier|all|any|your|the|system|routing|router|classifier|these|those|safety)\b
            [^.\n]{0,30}?\b(instructions?|rules|prompts?|guidelines|directives|routing|classification|policy|
                            policies|guardrails?|constraints|programming|training)\b
            | \bnew\s+(system\s+)?(instructions?|rules)\s*:
            | \b(system|developer|admin)\s*(override|prompt|message|instructions?)\s*:
            | <\s*/?\s*(system|instructions?|sys|admin)\s*>
            | \[\s*(system|system\s+prompt|instructions?)\s*\]
            | \b(reveal|print|show|repeat|leak|output)\b[^.\n]{0,20}\b(system|hidden|initial|routing)\s+
              (prompt|instructions?)
        """,
        "route_steering": rf"""
            \b(route|send|classify|label|mark|forward|treat|categori[sz]e|tag|handle|process|direct|assign|
               flag)\b[^.\n]{{0,30}}?\b(this|me|it|request|prompt|query|message|question|task|the\s+following)\b
               [^.\n]{{0,30}}?\b(to|as|under|into|with|via|using|on)\b[^.\n]{{0,25}}?\b{_CHEAP_WORDS}\b
            | \b{ROUTE_NAMES}\b[^.\n]{{0,20}}\b(route|routing|path|tier|lane)\b
            | \b(route|routing|tier|lane|category|class)\b\s*(is|=|:|should\s+be|must\s+be)\s*["']?{ROUTE_NAMES}\b
            | \b(use|switch\s+to|pick|choose|select|give\s+me|want|prefer)\b[^.\n]{{0,20}}?\b(the\s+)?
              (cheapest|smallest|fastest|cheaper|smaller|weakest|lightest|free|budget|tiny|small|cheap)\s+
              (model|tier|llm|engine|routing|lane)\b
            | \b(small|cheap|tiny|weak|basic|budget)\s+(model|llm)\s+(can|could|should|will)\s+(handle|do|answer)\b
            | \b(no\s+need\s+(for|to\s+use)|don'?t\s+(use|waste))\b[^.\n]{{0,20}}\b(expensive|big|large|frontier|
              premium|smart(er)?|opus|gpt-?5|pro)\b
            | \b(set|make|put|force|raise)\s+(your|the|its|routing|classifier)?\s*confidence\s+(to|at|=)\s*
              (1|0?\.9|9\d|100|high|max)
            | \bconfidence\s*(=|:|to)\s*(1(\.0+)?|0?\.9\d*|100\s*%)
        """,
        "decision_injection": rf"""
            ["']?route["']?\s*[:=]\s*["']?{ROUTE_NAMES}
            | ["']?route_override_attempted["']?\s*[:=]
            | ["']?(confidence|reasoning_depth_needed|estimated_output_tokens)["']?\s*:\s*["']?[\w.]+["']?\s*,
              [^}}]{{0,200}}\broute\b
            | \b(respond|reply|answer|output|return|emit|print|write)\b[^.\n]{{0,30}}\b(routing|route)\s+
              (decision|json|label|as|with)\b
        """,
        "role_play": r"""
            \b(pretend|imagine|act\s+as|role-?\s?play|roleplay|play\s+the\s+role|simulate|you\s+are\s+no\s+longer|
               from\s+now\s+on,?\s+you|let'?s\s+play\s+a\s+game|you\s+are\s+now|you're\s+now|stay\s+in\s+character)
            \b[^\n]{0,80}?\b(router|routing|classifier|sentinel|gateway|unrestricted|unfiltered|uncensored|
               no\s+(rules|restrictions|filters|limits|guidelines)|developer\s+mode|dan|jailbr\w*|evil|
               without\s+(any\s+)?(rules|restrictions|limits|filters)|different\s+(ai|assistant|model)|
               (an?\s+)?ai\s+(that|who|with)|free\s+from|anything\s+now|admin|root|god\s+mode|opposite)\b
            | \bdeveloper\s+mode\b | \bjailbr(eak|oken|eaking)\b | \bdo\s+anything\s+now\b | \bgod\s+mode\b
            | (?-i:\bDAN\b)
            | \bdual\s+(mode|response|persona)\b
        """,
        "authority_claim": r"""
            \b(i\s+am|i'm|this\s+is|as)\s+(the|an|your|a)\s+(admin|administrator|developer|operator|owner|
               engineer|creator|sysadmin|openai|anthropic|system)\b[^.\n]{0,60}\b(instruct|order|authori[sz]e|
               command|tell|permit|allow|approve|require|want|need)\w*\b
            | \b(the\s+)?(operator|admin|administrator|developer|gateway\s+owner)s?\s+(has|have)\s+
              (approved|authori[sz]ed|allowed|permitted|enabled)\b
        """,
        "cheap_framing": rf"""
            \b(just|only|simply|merely|real|super|very)\s+(a\s+)?(quick|simple|small|short|easy|tiny|trivial|
               basic|fast|little|one-?line)\s+(question|one|q|thing|ask|query|request|favou?r|task)\b
              [^\n]{{0,200}}?\b{_HARD_REQUEST}
            | \b(quick|simple|easy|trivial|tiny|basic)\s+(question|one|q|ask)\b\s*[:\-—–,]+[^\n]{{0,200}}?
              \b{_HARD_REQUEST}
            | \b(this\s+is|it'?s)\s+(an?\s+)?(easy|simple|trivial|quick|basic)\s+(one|question|task|request)
              [^.\n]{{0,40}}\b(for|so|,)\b[^.\n]{{0,40}}\b{_CHEAP_WORDS}\b
        """,
    }.items()
}
# Every alternative of a pattern contains one of its anchors (lower case); the pattern only
# runs near them. Plain substring search is C code: a 2,000-token prompt scans in well under a
# millisecond, where running every pattern over the whole text took ~10 ms.
ANCHORS: dict[str, tuple[str, ...]] = {
    "instruction_override": ("ignore", "disregard", "forget", "override", "bypass", "skip", "drop", "abandon",
                             "instruction", "prompt", "message", "rules", "<system", "</system", "< system", "<sys",
                             "<admin", "[system", "[ system", "<instruction", "</instruction", "[instruction"),
    "route_steering": ("simple", "cheap", "small", "fast", "easy", "trivial", "light", "weak", "basic", "haiku",
                       "nano", "flash", "lite", "mini", "low-", "low tier", "low cost", "budget", "tiny", "free",
                       "complex", "code_gen", "code gen", "long_context", "long context", "agentic", "refusal",
                       "fallback", "confidence", "no need", "don't", "dont"),
    "decision_injection": ("route", "routing", "confidence", "reasoning_depth", "estimated_output"),
    "role_play": ("pretend", "imagine", "act as", "acting as", "role", "simulat", "no longer", "from now on",
                  "play a game", "are now", "'re now", "re now", "character", "developer mode", "jailbr",
                  "anything now", "god mode", "dual "),
    "authority_claim": ("admin", "developer", "operator", "owner", "engineer", "creator", "openai", "anthropic",
                        "this is the system"),
    "cheap_framing": ("quick", "simple", "small", "short", "easy", "tiny", "trivial", "basic", "fast", "little",
                      "one-line", "oneline"),
}
# Case-sensitive anchors, searched in the original text.
CASED_ANCHORS: dict[str, tuple[str, ...]] = {"role_play": ("DAN",)}
ANCHOR_REACH = 300  # characters either side of an anchor that a pattern can span

# Letters-only phrases for spaced-out and separator-stuffed variants ("i.g.n.o.r.e a-l-l ...").
_SQUASHED = re.compile(
    r"ignore(all|your|the|any)?(previous|prior|above)?(routing)?(instructions|rules|prompts?)"
    r"|disregard(all|your|the)?(previous|prior)?(instructions|rules|routing)"
    r"|routethis(request)?(to|as)(simpleqa|simple|cheap|thecheapest|haiku|nano)"
    r"|classifythis(as|to)(simpleqa|simple)|usethecheapestmodel|developermode|jailbreak|doanythingnow"
    r"|youarenow(an?)?(unrestricted|unfiltered|router|dan)|routeoverride|setconfidence"
)


@dataclass(frozen=True)
class GuardResult:
    text: str  # normalised and capped: what the sentinel and the decision cache see
    flags: tuple[str, ...] = ()
    truncated: bool = False

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


def normalise(text: str) -> str:
    """NFKC, newlines unified, invisible and control characters removed."""
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL.sub("", _INVISIBLE.sub("", text))


def cap(text: str, limit: int = MAX_GUARD_CHARS) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    head = limit // 4
    return text[:head] + "\n[...]\n" + text[-(limit - head) :], True


def _join_spaced(text: str) -> str:
    """ "i g n o r e  a l l" -> "ignore all": runs of single characters lose their separators."""

    def join(match: re.Match[str]) -> str:
        run = _SPACED_WORD_BREAK.sub("\x00", match.group(0))
        return re.sub(r"[ .\-_*·,/]", "", run).replace("\x00", " ")

    return _SPACED.sub(join, text)


def _decoded_base64(text: str) -> Iterable[str]:
    for match in _BASE64.finditer(text):
        blob = match.group(0)
        if not re.search(r"[a-z]", blob) or not re.search(r"[A-Z0-9]", blob):
            continue  # plain words and hex digests are not worth decoding
        padded = blob + "=" * (-len(blob) % 4)
        try:
            raw = base64.urlsafe_b64decode(padded) if ("-" in blob or "_" in blob) else base64.b64decode(padded)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        printable = sum(ch.isprintable() or ch in "\n\t" for ch in decoded)
        if decoded and printable / len(decoded) > 0.9:
            yield decoded


def views(text: str) -> list[str]:
    """The text as an attacker might have disguised it, undisguised several ways."""
    if len(text) > 2 * _SCAN_CHARS:
        text = text[:_SCAN_CHARS] + "\n" + text[-_SCAN_CHARS:]
    folded = text.translate(_HOMOGLYPHS)
    out = [folded]
    if _LEET_MIXED.search(folded):
        out.append(folded.translate(_LEET))
    joined = _join_spaced(folded)
    if joined != folded:
        out.append(joined)
        out.append(joined.translate(_LEET))
    for decoded in _decoded_base64(text):
        decoded = normalise(decoded).translate(_HOMOGLYPHS)
        out.extend([decoded, decoded.translate(_LEET)])
    return out


def _windows(texts: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for text, anchors in texts:
        for anchor in anchors:
            at = text.find(anchor)
            while at != -1:
                spans.append((max(0, at - ANCHOR_REACH), at + len(anchor) + ANCHOR_REACH))
                at = text.find(anchor, at + len(anchor) + ANCHOR_REACH)
    if not spans:
        return []
    spans.sort()
    merged = [spans[0]]
    for start, end in spans[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _matches(name: str, view: str, lowered: str) -> bool:
    pattern = PATTERNS[name]
    if len(lowered) != len(view):  # lower() changed the length (rare scripts): scan all of it
        return pattern.search(view) is not None
    windows = _windows([(lowered, ANCHORS[name]), (view, CASED_ANCHORS.get(name, ()))])
    return any(pattern.search(view, start, end) for start, end in windows)


def scan(text: str) -> tuple[str, ...]:
    """Names of the attack patterns found in any view of `text` (normalised already)."""
    found: list[str] = []
    all_views = views(text)
    lowered = [view.lower() for view in all_views]
    for name in PATTERNS:
        if any(_matches(name, view, low) for view, low in zip(all_views, lowered)):
            found.append(name)
    if "instruction_override" not in found and len(all_views) > 1:
        squashed = re.sub(r"[^a-z]", "", " ".join(lowered[1:]))
        if _SQUASHED.search(squashed):
            found.append("obfuscated_override")
    if len(all_views) > 1 and found and not any(
        _matches(name, all_views[0], lowered[0]) for name in found if name in PATTERNS
    ):
        found.append("encoded")  # only a disguised form matched
    return tuple(found)


def guard_text(text: str) -> GuardResult:
    normalised = normalise(text)
    capped, truncated = cap(normalised)
    return GuardResult(text=capped, flags=scan(capped), truncated=truncated)


def guard_messages(contents: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """Guard each message: (normalised contents, flags over all of them, truncated)."""
    texts: list[str] = []
    flags: list[str] = []
    truncated = False
    for content in contents:
        result = guard_text(content)
        texts.append(result.text)
        truncated = truncated or result.truncated
        flags.extend(f for f in result.flags if f not in flags)
    return tuple(texts), tuple(flags), truncated
